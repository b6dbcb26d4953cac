"""Orchestration pieces that need no Locust process: presets, the Locust command line, run.json, paths."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ptu_verify.catalog import load_catalog
from ptu_verify.errors import InputError
from ptu_verify.run.orchestrate import (
    SIMULATOR_API_KEY,
    RunOptions,
    build_locust_command,
    default_run_dir,
    load_settings,
    locustfile_path,
    run_load_test,
)

SPEC = load_catalog(None).resolve("qwen-plus-2025-04-28").spec
REAL = {"base_url": "https://example.invalid/compatible-mode/v1", "deployment_code": "qwen-plus-d824b8ad"}


def command_for(options: RunOptions) -> list[str]:
    return build_locust_command(options, load_settings(options), host="http://127.0.0.1:1/compatible-mode/v1", deployment_code="qwen-plus-x", run_dir=Path("/tmp/run"))


def option_value(command: list[str], flag: str) -> str | None:
    return command[command.index(flag) + 1] if flag in command else None


def test_demo_preset_on_simulator() -> None:
    settings = load_settings(RunOptions(spec=SPEC, ptu=8))
    assert settings.plan == "step"
    assert settings.stages == (0.5, 0.75, 1.0, 1.25, 1.5)
    assert settings.arrival == "constant"
    assert settings.simulator_knobs == {"window_s": 12.0}
    # 5 stages of 30 s: the demo's load fits well within 3 minutes.
    assert settings.stage_duration_s is not None
    assert len(settings.stages) * settings.stage_duration_s <= 150


def test_real_deployment_gets_locust_defaults() -> None:
    command = command_for(RunOptions(spec=SPEC, ptu=8, **REAL))
    assert option_value(command, "--plan") == "step"
    for flag in ("--stages", "--stage-duration", "--warmup", "--arrival"):
        assert flag not in command


def test_acceptance_preset_on_either_target() -> None:
    for options in (RunOptions(spec=SPEC, ptu=8, plan="acceptance"), RunOptions(spec=SPEC, ptu=8, plan="acceptance", **REAL)):
        settings = load_settings(options)
        assert settings.plan == "acceptance"
        assert settings.simulator_knobs == {}
        command = command_for(options)
        assert option_value(command, "--plan") == "acceptance"
        assert "--stages" not in command


def test_user_values_override_preset() -> None:
    options = RunOptions(spec=SPEC, ptu=8, stages=(0.5, 1.0), stage_duration_s=12.0, warmup_s=2.0, simulator_settings={"window_s": 5, "ttft_factor": 1.3})
    settings = load_settings(options)
    assert settings.stages == (0.5, 1.0)
    assert settings.simulator_knobs == {"window_s": 5, "ttft_factor": 1.3}
    command = command_for(options)
    assert option_value(command, "--stages") == "0.5,1"
    assert option_value(command, "--stage-duration") == "12"
    assert option_value(command, "--warmup") == "2"


def test_locust_command_has_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-test-fake-0000")
    command = command_for(RunOptions(spec=SPEC, ptu=8, **REAL))
    assert option_value(command, "--api-key-env") == "DASHSCOPE_API_KEY"
    assert not any("sk-" in argument for argument in command)
    assert SIMULATOR_API_KEY not in command_for(RunOptions(spec=SPEC, ptu=8))


def test_locust_command_runs_installed_locustfile() -> None:
    command = command_for(RunOptions(spec=SPEC, ptu=8, extra_locust_args=("--arrival", "poisson")))
    assert command[1:3] == ["-m", "locust"]
    assert option_value(command, "-f") == str(locustfile_path())
    assert locustfile_path().name == "locustfile.py"
    assert command[-2:] == ["--arrival", "poisson"]
    assert "--processes" not in command


def test_processes_get_private_master_port() -> None:
    command = command_for(RunOptions(spec=SPEC, ptu=8, processes=3))
    assert option_value(command, "--processes") == "3"
    assert option_value(command, "--master-bind-host") == "127.0.0.1"
    assert option_value(command, "--master-bind-port") == option_value(command, "--master-port")
    assert option_value(command, "--master-bind-port") != "5557"


def test_default_run_dir_is_unique(tmp_path: Path) -> None:
    now = datetime(2026, 12, 4, 20, 5, 9, tzinfo=timezone.utc)
    first = default_run_dir("qwen-plus-d824b8ad", now, base=tmp_path)
    assert first == tmp_path / "reports" / "20261204T200509Z-qwen-plus-d824b8ad"
    first.mkdir(parents=True)
    assert default_run_dir("qwen-plus-d824b8ad", now, base=tmp_path).name == "20261204T200509Z-qwen-plus-d824b8ad-2"


def test_simulator_settings_rejected_with_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-test-fake-0000")
    with pytest.raises(InputError, match="--simulator settings apply to the built-in simulator only"):
        run_load_test(RunOptions(spec=SPEC, ptu=8, simulator_settings={"window_s": 5}, **REAL))


def test_run_command_rejects_bad_simulator_setting(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("run", "--model", "qwen-plus-2025-04-28", "--ptu", "8", "--simulator", "window_s", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "give KEY=VALUE" in result.stderr
    result = run_cli("run", "--model", "qwen-plus-2025-04-28", "--ptu", "8", "--stages", "0.5,x", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "comma-separated fractions" in result.stderr


def test_run_info_update_keeps_locust_fields(tmp_path: Path) -> None:
    from ptu_verify.run.orchestrate import _update_run_info

    (tmp_path / "run.json").write_text(json.dumps({"schema": "ptu-verify/run-v1", "run_id": "r1", "partial": False, "workload": "smoke"}))
    _update_run_info(tmp_path, RunOptions(spec=SPEC, ptu=8), simulated=True, partial=True)
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["run_id"] == "r1"
    assert info["workload"] == "smoke"
    assert info["simulated"] is True
    assert info["partial"] is True
    assert info["model"] == "qwen-plus-2025-04-28"
    assert info["ptu"] == 8

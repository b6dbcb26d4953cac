"""``ptu-verify run`` end to end: simulator, real Locust subprocess, analysis, report and exit code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from ptu_verify.run.orchestrate import SIMULATOR_API_KEY

CLI = [sys.executable, "-c", "import sys; from ptu_verify.cli import main; sys.exit(main())"]
START_TIMEOUT_S = 30.0
RUN_TIMEOUT_S = 120.0
FAKE_KEY = "sk-test-fake-0000"

# qwen-turbo with 8 PTU takes 480 requests per minute, so 4 s measured stages hold 16 to 32 smoke requests.
# Constant arrivals (a Locust option after --) make the 100 % stage exactly the capacity, so the
# verdict does not depend on a Poisson draw.
MODEL = ["--model", "qwen-turbo-2025-04-28", "--ptu", "8"]
TINY_PLAN = ["--stages", "0.5,1.0,1.5", "--stage-duration", "5", "--warmup", "1", "--seed", "7"]
CONSTANT_ARRIVALS = ["--", "--arrival", "constant"]
TEST_POLICY = """\
[data]
min_successful_requests = 10
min_duration_per_longest_request = 2.0

[confidence]
window_s = 2.0
"""


def environment(**extra: str) -> dict[str, str]:
    values = {key: value for key, value in os.environ.items() if key not in ("DASHSCOPE_API_KEY", "PTU_VERIFY_LANG", "LANG", "LC_ALL")}
    values["PTU_VERIFY_LANG"] = "en"
    values.update(extra)
    return values


def run_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=cwd, env=env or environment(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("policy") / "policy.toml"
    path.write_text(TEST_POLICY)
    return path


@contextmanager
def simulate_process(*args: str) -> Iterator[str]:
    """Start ``ptu-verify simulate ARGS --port 0`` and yield its base URL."""
    process = subprocess.Popen([*CLI, "simulate", *args, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment())
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        line = ""
        while time.monotonic() < deadline and process.poll() is None:
            line = process.stdout.readline()
            if line.startswith("Listening on "):
                break
        assert line.startswith("Listening on "), f"simulate printed no listening line, got {line!r}"
        yield line.split()[-1]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def read_json(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(path.read_text())


@dataclass
class FinishedRun:
    result: subprocess.CompletedProcess[str]
    run_dir: Path


@pytest.fixture(scope="module")
def simulator_run(tmp_path_factory: pytest.TempPathFactory, policy: Path) -> FinishedRun:
    """``ptu-verify run`` on the built-in simulator, with the default output directory."""
    cwd = tmp_path_factory.mktemp("simulator-run")
    result = run_cli(["run", *MODEL, *TINY_PLAN, "--policy", str(policy), *CONSTANT_ARRIVALS], cwd=cwd)
    run_dirs = list((cwd / "reports").iterdir()) if (cwd / "reports").exists() else []
    assert len(run_dirs) == 1, result.stdout + result.stderr
    return FinishedRun(result, run_dirs[0])


@pytest.fixture(scope="module")
def degraded_run(tmp_path_factory: pytest.TempPathFactory, policy: Path) -> FinishedRun:
    """``ptu-verify run --base-url`` against a separate simulator at 0.7 of capacity and 1.3 × TTFT."""
    cwd = tmp_path_factory.mktemp("degraded-run")
    simulator_args = ["--capacity-factor", "0.7", "--ttft-factor", "1.3", "--window-s", "10", "--deployment-code", "qwen-turbo-d0000007", "--api-key", FAKE_KEY]
    with simulate_process(*MODEL, *simulator_args) as url:
        result = run_cli(
            ["run", *MODEL, *TINY_PLAN, "--plan", "step", "--policy", str(policy), "--base-url", url + "/compatible-mode/v1",
             "--deployment-code", "qwen-turbo-d0000007", "--out", str(cwd / "run"), *CONSTANT_ARRIVALS],
            cwd=cwd,
            env=environment(DASHSCOPE_API_KEY=FAKE_KEY),
        )  # fmt: skip
    return FinishedRun(result, cwd / "run")


@pytest.mark.slow
def test_run_on_simulator_passes(simulator_run: FinishedRun) -> None:
    result, run_dir = simulator_run.result, simulator_run.run_dir
    assert result.returncode == 0, result.stdout + result.stderr
    assert run_dir.name.endswith("-qwen-turbo-sim0008")
    for name in ("verdict.html", "summary.json", "junit.xml", "records.jsonl", "plan.json", "simulator.json", "locust.log"):
        assert (run_dir / name).exists(), name

    summary = read_json(run_dir / "summary.json")
    assert summary["verdict"] == "pass"
    assert summary["exit_code"] == 0
    assert [stage["label"] for stage in summary["stages"]] == ["step1-50%", "step2-100%", "step3-150%"]
    assert read_json(run_dir / "run.json")["simulated"] is True
    assert read_json(run_dir / "run.json")["partial"] is False

    assert "SIMULATED" in result.stdout
    assert "Verdict: PASS" in result.stdout
    assert f"Report: {run_dir / 'verdict.html'}" in result.stdout
    assert "offered" in result.stdout  # at least one progress line
    assert SIMULATOR_API_KEY not in result.stdout + result.stderr + (run_dir / "locust.log").read_text()


@pytest.mark.slow
def test_run_base_url_under_delivers(degraded_run: FinishedRun) -> None:
    result, run_dir = degraded_run.result, degraded_run.run_dir
    assert result.returncode == 1, result.stdout + result.stderr
    summary = read_json(run_dir / "summary.json")
    assert summary["verdict"] == "fail"
    assert any("Under-delivers" in reason for reason in summary["reasons"]), summary["reasons"]
    assert read_json(run_dir / "run.json")["simulated"] is False
    assert "SIMULATED" not in result.stdout
    assert FAKE_KEY not in result.stdout + result.stderr


@pytest.mark.slow
def test_compare_flags_planted_ttft_factor(simulator_run: FinishedRun, degraded_run: FinishedRun, tmp_path: Path) -> None:
    policy = tmp_path / "compare.toml"
    policy.write_text("[compare]\nmin_samples = 10\n")
    result = run_cli(["compare", str(simulator_run.run_dir), str(degraded_run.run_dir), "--policy", str(policy), "--out", str(tmp_path)], cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Only one of the runs was against the built-in simulator" in result.stdout

    data = read_json(tmp_path / "compare.json")
    half = next(stage for stage in data["stages"] if stage["label"] == "step1-50%")
    # Below 0.7 of capacity the degraded deployment serves everything, only 1.3 times slower to start.
    assert "ttft_p50_s" in half["regressions"]
    assert "achieved_tpm" not in half["regressions"]
    assert "throttled_share" not in half["regressions"]
    html = (tmp_path / "compare.html").read_text()
    assert "<svg" in html
    assert "<script" not in html


@pytest.mark.slow
def test_run_sigint_writes_partial_report(tmp_path: Path, policy: Path) -> None:
    out = tmp_path / "run"
    process = subprocess.Popen(
        [*CLI, "run", *MODEL, "--stages", "0.5,1.0", "--stage-duration", "60", "--warmup", "1", "--policy", str(policy), "--out", str(out)],
        cwd=tmp_path, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT_S + 20
        records = out / "records.jsonl"
        while time.monotonic() < deadline and process.poll() is None:
            if records.exists() and records.read_text().count("\n") >= 5:
                break
            time.sleep(0.2)
        assert process.poll() is None, "run ended before it could be interrupted"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)

    assert "Interrupted" in stdout, stdout + stderr
    assert read_json(out / "run.json")["partial"] is True
    summary = read_json(out / "summary.json")
    assert summary["run"]["partial"] is True
    assert (out / "verdict.html").exists()
    assert process.returncode == summary["exit_code"]
    assert "(PARTIAL)" in stdout


def test_run_base_url_without_key_exits_2(tmp_path: Path) -> None:
    result = run_cli(["run", *MODEL, "--base-url", "http://127.0.0.1:9/compatible-mode/v1", "--deployment-code", "qwen-turbo-d0000007"], cwd=tmp_path)
    assert result.returncode == 2
    assert "DASHSCOPE_API_KEY is not set" in result.stderr
    assert "--api-key-env" in result.stderr
    assert not (tmp_path / "reports").exists()


def test_run_base_url_without_deployment_code_exits_2(tmp_path: Path) -> None:
    result = run_cli(["run", *MODEL, "--base-url", "http://127.0.0.1:9/compatible-mode/v1"], cwd=tmp_path, env=environment(DASHSCOPE_API_KEY=FAKE_KEY))
    assert result.returncode == 2
    assert "--deployment-code is required" in result.stderr
    assert FAKE_KEY not in result.stdout + result.stderr


@pytest.mark.slow
def test_run_rejected_key_exits_2(tmp_path: Path) -> None:
    with simulate_process(*MODEL, "--api-key", FAKE_KEY) as url:
        result = run_cli(
            ["run", *MODEL, *TINY_PLAN, "--base-url", url + "/compatible-mode/v1", "--deployment-code", "qwen-turbo-sim0008", "--out", str(tmp_path / "run")],
            cwd=tmp_path,
            env=environment(DASHSCOPE_API_KEY="sk-test-wrong-0000"),
        )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Preflight failed" in result.stderr
    assert "was rejected" in result.stderr
    assert not (tmp_path / "run" / "summary.json").exists()
    assert "sk-test-wrong-0000" not in result.stdout + result.stderr

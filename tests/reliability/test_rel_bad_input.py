"""Bad input, one table: every case must exit 2 with the file, field or value and the fix, never a traceback.

``ptu-verify`` cases run in-process through the CLI entry point; locustfile cases run Locust as a
subprocess, as a user would. ``{tmp}`` in an argument is the case's directory, ``{run}`` a valid
synthetic run directory and ``{closed}`` a URL on 127.0.0.1 where nothing listens. A wrong key is
covered by test_rel_secrets.py, whose rejected run must exit 2 with the same kind of message.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from test_rel_support import SECRET_KEY, child_env, free_port, locust_command

from ptu_verify.analysis.synthetic import SyntheticLoad, write_synthetic_run

CATALOG_ENTRY = '[models."m-1"]\nfamily = "qwen-plus"\nmodality = "text"\nqpm_per_ptu = 1\n'
RECORD = {
    "schema": "ptu-verify/record-v1", "run_id": "r", "worker_id": "local", "request_id": "x", "client_request_id": "c",
    "api": "openai", "transport": "fast", "deployment_code": "d", "workload": "smoke", "variant": "smoke", "stage": "s1",
    "started_at": 1_767_225_600.0, "scheduled_at": None, "ttft_s": 0.2, "ttfa_s": 0.2, "e2e_s": 1.0, "input_tokens": 20,
    "output_tokens": 30, "reasoning_tokens": 0, "cached_tokens": 0, "image_tokens": None, "tokens_estimated": False,
    "max_tokens": 64, "chunks": 30, "gen_speed_tps": 40.0, "finish_reason": "stop", "status_code": 200, "outcome": "ok",
    "error_code": None, "error_message": None, "retry_after_s": None, "attempt": 1, "user_latency_s": 1.0,
}  # fmt: skip
GOOD_RUN_JSON = json.dumps({"schema": "ptu-verify/run-v1", "model": "qwen-plus-2025-04-28", "ptu": 8})


@dataclass(frozen=True)
class Case:
    """One bad input: the command, the files it needs and the texts stderr must contain."""

    name: str
    argv: tuple[str, ...]
    expected: tuple[str, ...]  # each must appear in stderr: the file, field or value, and the fix
    files: dict[str, str | bytes] = field(default_factory=dict)  # bytes are written as they are
    locust: bool = False  # run `locust -f loadtest/locustfile.py ARGV` instead of `ptu-verify ARGV`


CASES: list[Case] = [
    # plan: impossible numbers and broken catalogs
    Case("plan negative tpm", ("plan", "-m", "qwen-plus", "--tpm", "-5"), ("--tpm", "-5", "zero or more")),
    Case("plan headroom above 10", ("plan", "-m", "qwen-plus", "--tpm", "1000", "--headroom", "11"), ("--headroom", "11", "between 0 and 10")),
    Case("plan negative price", ("plan", "-m", "qwen-plus", "--tpm", "1000", "--ptu-price", "-3"), ("--ptu-price", "-3")),
    Case("plan unknown model", ("plan", "-m", "qwen-nope", "--tpm", "1000"), ("qwen-nope", "--catalog")),
    Case("catalog negative tpm", ("plan", "-m", "m-1", "--tpm", "1", "--catalog", "{tmp}/c.toml"), ("c.toml", "tpm_per_ptu", "-5"), {"c.toml": CATALOG_ENTRY + "tpm_per_ptu = -5\nmin_purchase_ptu = 1\n"}),
    Case("catalog zero purchase unit", ("plan", "-m", "m-1", "--tpm", "1", "--catalog", "{tmp}/c.toml"), ("c.toml", "min_purchase_ptu", "0"), {"c.toml": CATALOG_ENTRY + "tpm_per_ptu = 5\nmin_purchase_ptu = 0\n"}),
    Case("catalog unknown field", ("plan", "-m", "m-1", "--tpm", "1", "--catalog", "{tmp}/c.toml"), ("c.toml", "colour", "Allowed fields"), {"c.toml": CATALOG_ENTRY + 'tpm_per_ptu = 5\nmin_purchase_ptu = 1\ncolour = "red"\n'}),
    Case("catalog malformed toml", ("plan", "-m", "qwen-plus", "--tpm", "1", "--catalog", "{tmp}/c.toml"), ("c.toml", "not valid TOML", "Fix the syntax"), {"c.toml": "[models\n"}),
    Case("plan infinite tpm", ("plan", "-m", "qwen-plus", "--tpm", "inf"), ("--tpm", "inf", "finite")),
    Case("plan nan qpm", ("plan", "-m", "qwen-plus", "--tpm", "1000", "--qpm", "nan"), ("--qpm", "nan", "finite")),
    Case("plan nan headroom", ("plan", "-m", "qwen-plus", "--tpm", "1000", "--headroom", "nan"), ("--headroom", "nan", "between 0 and 10")),
    Case("plan infinite price", ("plan", "-m", "qwen-plus", "--tpm", "1000", "--input-price", "inf"), ("--input-price", "inf", "finite")),
    Case("catalog not utf-8", ("plan", "-m", "m-1", "--tpm", "1", "--catalog", "{tmp}/c.toml"), ("c.toml", "UTF-8"), {"c.toml": CATALOG_ENTRY.encode() + "# 模型目录\n".encode("gbk")}),
    Case("catalog missing file", ("plan", "-m", "qwen-plus", "--tpm", "1", "--catalog", "{tmp}/none.toml"), ("none.toml", "--catalog")),
    # simulate: settings, faults and config files
    Case("simulate zero ptu", ("simulate", "--model", "qwen-plus", "--ptu", "0"), ("--ptu", "0", "positive whole number")),
    Case("simulate unknown fault", ("simulate", "--model", "qwen-plus", "--ptu", "8", "--fault", "meteor=0.5"), ("meteor", "Known faults")),
    Case("simulate fault probability", ("simulate", "--model", "qwen-plus", "--ptu", "8", "--fault", "stall=2"), ("stall", "2", "between 0 and 1")),
    Case("simulate fault not a number", ("simulate", "--model", "qwen-plus", "--ptu", "8", "--fault", "stall=abc"), ("stall=abc", "e.g. --fault stall=0.05")),
    Case("simulate negative capacity", ("simulate", "--model", "qwen-plus", "--ptu", "8", "--capacity-factor", "-1"), ("capacity_factor", "-1", "positive")),
    Case("simulate config unknown key", ("simulate", "--config", "{tmp}/s.yaml"), ("s.yaml", "colour", "Known keys"), {"s.yaml": "model: qwen-plus\nptu: 8\ncolour: red\n"}),
    Case("simulate config zero window", ("simulate", "--config", "{tmp}/s.yaml"), ("window_s", "0", "positive"), {"s.yaml": "model: qwen-plus\nptu: 8\nwindow_s: 0\n"}),
    Case("simulate config bad schedule", ("simulate", "--config", "{tmp}/s.yaml"), ("fault_schedule", "start_s", "end_s"), {"s.yaml": "model: qwen-plus\nptu: 8\nfault_schedule:\n  - fault: stall\n"}),
    Case("simulate config malformed", ("simulate", "--config", "{tmp}/s.toml"), ("s.toml", "not valid TOML"), {"s.toml": "model = \n"}),
    Case("simulate port out of range", ("simulate", "--model", "qwen-plus", "--ptu", "8", "--port", "99999"), ("--port", "99999", "65535")),
    Case("simulate invalid host", ("simulate", "--model", "qwen-plus", "--ptu", "8", "--host", "256.1.1.1"), ("256.1.1.1", "--host")),
    # run: checked before any load is sent
    Case("run zero ptu", ("run", "-m", "qwen-plus", "--ptu", "0"), ("--ptu", "0")),
    Case("run zero stage duration", ("run", "-m", "qwen-plus", "--ptu", "8", "--stage-duration", "0"), ("--stage-duration", "0")),
    Case("run zero stage fraction", ("run", "-m", "qwen-plus", "--ptu", "8", "--stages", "0,1"), ("--stages", "0,1", "more than 0")),
    Case("run warm-up fills the stage", ("run", "-m", "qwen-plus", "--ptu", "8", "--stage-duration", "10", "--warmup", "10"), ("--warmup 10", "--stage-duration 10")),
    Case("run infinite target", ("run", "-m", "qwen-plus", "--ptu", "8", "--target-tpm", "inf"), ("--target-tpm", "inf", "finite")),
    Case("run base url not a url", ("run", "-m", "qwen-plus", "--ptu", "8", "--base-url", "not-a-url", "--deployment-code", "d"), ("--base-url", "not-a-url", "https://")),
    Case("run base url ftp", ("run", "-m", "qwen-plus", "--ptu", "8", "--base-url", "ftp://127.0.0.1/x", "--deployment-code", "d"), ("ftp://127.0.0.1/x", "https://")),
    Case("run base url no host", ("run", "-m", "qwen-plus", "--ptu", "8", "--base-url", "http://", "--deployment-code", "d"), ("--base-url http://", "a host")),
    Case("run base url wrong path", ("run", "-m", "qwen-plus", "--ptu", "8", "--base-url", "http://127.0.0.1:1/v1", "--deployment-code", "d"), ("http://127.0.0.1:1/v1", "/compatible-mode/v1")),
    Case("run base url wrong api path", ("run", "-m", "qwen-plus", "--ptu", "8", "--api", "dashscope", "--base-url", "{closed}", "--deployment-code", "d"), ("{closed}", "/api/v1")),
    Case("run headroom above 10", ("run", "-m", "qwen-plus", "--ptu", "8", "--headroom", "11"), ("--headroom", "11", "between 0 and 10")),
    Case("run policy unknown section", ("run", "-m", "qwen-plus", "--ptu", "8", "--policy", "{tmp}/p.toml"), ("p.toml", "nosuch", "Allowed sections"), {"p.toml": "[nosuch]\nx = 1\n"}),
    Case("run deployment code missing", ("run", "-m", "qwen-plus", "--ptu", "8", "--base-url", "{closed}"), ("--deployment-code",)),
    Case("run unreachable host", ("run", "-m", "qwen-plus", "--ptu", "8", "--base-url", "{closed}", "--deployment-code", "qwen-plus-rel"), ("Cannot reach", "{closed}", "Check --host")),
    # analyze: run directories, policies and numbers
    Case("analyze missing dir", ("analyze", "{tmp}/none"), ("none", "does not exist")),
    Case("analyze no records", ("analyze", "{tmp}/d"), ("No records", "ptu-verify run wrote"), {"d/run.json": GOOD_RUN_JSON}),
    Case("analyze unreadable records", ("analyze", "{tmp}/d"), ("no readable records",), {"d/records.jsonl": "not json\n{\"half\": \n", "d/run.json": GOOD_RUN_JSON}),
    Case("analyze malformed run.json", ("analyze", "{tmp}/d"), ("run.json", "Fix or remove"), {"d/records.jsonl": json.dumps(RECORD) + "\n", "d/run.json": "{not json"}),
    Case("analyze bad plan stage", ("analyze", "{tmp}/d"), ("plan.json", "stages[0]", "end_at"), {"d/records.jsonl": json.dumps(RECORD) + "\n", "d/run.json": GOOD_RUN_JSON, "d/plan.json": json.dumps({"stages": [{"start_at": 5, "measure_start_at": 5, "end_at": "soon"}]})}),
    Case("analyze zero ptu", ("analyze", "{run}", "--ptu", "0"), ("--ptu", "0")),
    Case("analyze unknown model", ("analyze", "{run}", "--model", "qwen-nope"), ("qwen-nope", "--catalog")),
    Case("analyze headroom above 10", ("analyze", "{run}", "--headroom", "11"), ("--headroom", "11", "between 0 and 10")),
    Case("policy value not a number", ("analyze", "{run}", "--policy", "{tmp}/p.toml"), ("p.toml", "capacity.min_delivered_fraction", "a number"), {"p.toml": '[capacity]\nmin_delivered_fraction = "x"\n'}),
    Case("policy negative count", ("analyze", "{run}", "--policy", "{tmp}/p.yaml"), ("p.yaml", "data.min_successful_requests", "-3"), {"p.yaml": "data:\n  min_successful_requests: -3\n"}),
    Case("policy share above one", ("analyze", "{run}", "--policy", "{tmp}/p.toml"), ("throttling.max_throttled_share", "5", "between 0 and 1"), {"p.toml": "[throttling]\nmax_throttled_share = 5\n"}),
    Case("policy unknown key", ("analyze", "{run}", "--policy", "{tmp}/p.toml"), ("p.toml", "capacity.colour", "Allowed keys"), {"p.toml": '[capacity]\ncolour = "red"\n'}),
    Case("policy malformed yaml", ("analyze", "{run}", "--policy", "{tmp}/p.yaml"), ("p.yaml", "Fix the syntax"), {"p.yaml": "data: [1\n"}),
    # compare
    Case("compare missing dirs", ("compare", "{tmp}/a", "{tmp}/b"), ("a", "not a directory")),
    Case("compare not run dirs", ("compare", "{tmp}/a", "{tmp}/b"), ("run.json", "not a ptu-verify run directory"), {"a/x": "", "b/x": ""}),
    # workload show: profiles and traces
    Case("profile unknown key", ("workload", "show", "{tmp}/w.yaml"), ("w.yaml", "colour", "remove it"), {"w.yaml": "name: w\ninput_tokens: 24\noutput_tokens: 64\ncolour: red\n"}),
    Case("profile negative tokens", ("workload", "show", "{tmp}/w.yaml"), ("w.yaml", "input_tokens", "-24", "at least 1", "or {kind: lognormal"), {"w.yaml": "name: w\ninput_tokens: -24\noutput_tokens: 64\n"}),
    Case("profile input too large", ("workload", "show", "{tmp}/w.yaml"), ("w.yaml", "input_tokens", "10000000", "at most 1000000"), {"w.yaml": "name: w\ninput_tokens: 10000000\noutput_tokens: 64\n"}),
    Case("profile output max too large", ("workload", "show", "{tmp}/w.yaml"), ("w.yaml", "output_tokens", "200000", "at most 100000"), {"w.yaml": "name: w\ninput_tokens: 24\noutput_tokens: {kind: uniform, min: 1, max: 200000}\n"}),
    Case("profile too many images", ("workload", "show", "{tmp}/w.yaml"), ("w.yaml", "images.count", "40", "at most 32"), {"w.yaml": 'name: w\ninput_tokens: 24\noutput_tokens: 64\nimages: {count: 40, sizes: ["64x64"]}\n'}),
    Case("profile not utf-8", ("workload", "show", "{tmp}/w.yaml"), ("w.yaml", "UTF-8"), {"w.yaml": "name: w\ndescription: 中文\ninput_tokens: 24\noutput_tokens: 64\n".encode("gb18030")}),
    Case("profile malformed yaml", ("workload", "show", "{tmp}/w.yaml"), ("w.yaml", "not valid YAML"), {"w.yaml": "name: [w\n"}),
    Case("profile missing", ("workload", "show", "{tmp}/none.yaml"), ("none.yaml", "not found", "Fix the name or the path")),
    Case("trace bad value", ("workload", "show", "trace:{tmp}/t.jsonl"), ("t.jsonl", "line 1", "input_length", "whole number"), {"t.jsonl": '{"timestamp": 1, "input_length": "x", "output_length": 5}\n'}),
    Case("trace bad timestamp", ("workload", "show", "{tmp}/t.csv"), ("t.csv", "line 2", "abc"), {"t.csv": "TIMESTAMP,ContextTokens,GeneratedTokens\nabc,1,2\n"}),
    Case("trace missing", ("workload", "show", "trace:{tmp}/none.jsonl"), ("none.jsonl", "does not exist")),
    # the locustfile
    Case("locust zero timeout", ("--deployment-code", "d", "--request-timeout", "0"), ("--request-timeout", "0", "greater than 0"), locust=True),
    Case("locust unknown profile key", ("--deployment-code", "d", "--workload", "{tmp}/w.yaml"), ("w.yaml", "colour", "remove it"), {"w.yaml": "name: w\ninput_tokens: 24\noutput_tokens: 64\ncolour: red\n"}, locust=True),
    Case("locust host not a url", ("--deployment-code", "d", "--host", "not-a-url"), ("--host", "not-a-url", "https://"), locust=True),
    Case("locust deployment code missing", (), ("--deployment-code", "Bailian console"), locust=True),
]


@pytest.fixture(scope="module")
def shared_inputs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A valid synthetic run and a closed port."""
    base = tmp_path_factory.mktemp("inputs")
    run_dir = write_synthetic_run(base / "run", load=SyntheticLoad(fractions=(0.5,), stage_s=40.0, warmup_s=10.0))
    yield {"run": str(run_dir), "closed": f"http://127.0.0.1:{free_port()}/compatible-mode/v1"}


def _fill(text: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text


def _params() -> list[Any]:
    # Cases that start Locust (directly or through ptu-verify run) take 2-3 s each.
    starts_locust = ("locust", "run unreachable host")
    return [pytest.param(case, id=case.name, marks=[pytest.mark.slow] if case.name.startswith(starts_locust) else []) for case in CASES]


@pytest.mark.parametrize("case", _params())
def test_bad_input_exits_2(case: Case, tmp_path: Path, shared_inputs: dict[str, str], run_cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    values = {**shared_inputs, "tmp": str(tmp_path)}
    for relative, content in case.files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    argv = [_fill(argument, values) for argument in case.argv]

    if case.locust:
        host = values["closed"]
        command = locust_command(host, tmp_path / "run", *argv)
        # Each case gives its own --deployment-code (or none): drop the helper's.
        index = command.index("--deployment-code")
        del command[index : index + 2]
        result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60, env=child_env(), cwd=tmp_path)
        exit_code, stdout, stderr = result.returncode, result.stdout, result.stderr
    else:
        monkeypatch.setenv("DASHSCOPE_API_KEY", SECRET_KEY)
        if case.name == "run deployment code missing":
            monkeypatch.chdir(tmp_path)
        outcome = run_cli(*argv)
        exit_code, stdout, stderr = outcome.exit_code, outcome.stdout, outcome.stderr

    assert exit_code == 2, f"exit {exit_code}\nstdout: {stdout[-1500:]}\nstderr: {stderr[-1500:]}"
    assert "Traceback" not in stderr + stdout
    assert "{{" not in stderr, "a message template was printed without format()"
    for text in case.expected:
        assert _fill(text, values) in stderr, f"{_fill(text, values)!r} not in stderr:\n{stderr[-2000:]}"
    assert SECRET_KEY not in stderr + stdout
    shutil.rmtree(tmp_path / "run", ignore_errors=True)

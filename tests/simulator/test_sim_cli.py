"""``ptu-verify simulate`` as a real process, and its input errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

START_TIMEOUT_S = 30.0


@contextmanager
def simulate_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start ``ptu-verify simulate ARGS`` and yield the process and its base URL."""
    command = [sys.executable, "-c", "import sys; from ptu_verify.cli import main; sys.exit(main())", "simulate", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PTU_VERIFY_LANG": "en"})
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        line = ""
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if line.startswith("Listening on ") or process.poll() is not None:
                break
        assert line.startswith("Listening on "), f"no listening line, got {line!r}"
        yield process, line.split()[-1]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_serves_until_sigterm() -> None:
    flags = ("--capacity-factor", "0.5", "--window-s", "10", "--limiter", "token_bucket", "--fault", "keepalive=0.25")
    with simulate_process("--model", "qwen-plus-2025-04-28", "--ptu", "8", "--deployment-code", "qwen-plus-cli", "--api-key", "sk-test-secret-0000", *flags) as (process, url):
        assert url.startswith("http://127.0.0.1:")
        response = httpx.post(
            url + "/compatible-mode/v1/chat/completions",
            json={"model": "qwen-plus-cli", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            headers={"Authorization": "Bearer sk-test-secret-0000"},
            timeout=30,
        )
        capacity = httpx.get(url + "/sim/stats", timeout=30).json()["capacity"]
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=15)

    assert response.status_code == 200
    assert capacity["capacity_factor"] == 0.5
    assert capacity["window_s"] == 10.0
    assert capacity["limiter"] == "token_bucket"
    assert process.returncode == 0
    assert "sk-test-secret-0000" not in stdout + stderr


def test_warns_when_not_on_localhost() -> None:
    with simulate_process("--model", "qwen-turbo-2025-04-28", "--ptu", "4", "--host", "127.0.0.2") as (process, url):
        assert url.startswith("http://127.0.0.2:")
        process.send_signal(signal.SIGINT)
        _stdout, stderr = process.communicate(timeout=15)

    assert "Warning: listening on 127.0.0.2" in stderr


def test_config_unknown_key_exits_2(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "sim.toml"
    path.write_text("ttft_factr = 2\n")

    result = run_cli("simulate", "--model", "qwen-plus-2025-04-28", "--ptu", "8", "--config", str(path))

    assert result.exit_code == 2
    assert str(path) in result.stderr
    assert "ttft_factr" in result.stderr


def test_bad_fault_flag_exits_2(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("simulate", "--model", "qwen-plus-2025-04-28", "--ptu", "8", "--fault", "stall=often")

    assert result.exit_code == 2
    assert "stall=often" in result.stderr


def test_missing_ptu_exits_2(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("simulate", "--model", "qwen-plus-2025-04-28")

    assert result.exit_code == 2
    assert "--ptu" in result.stderr


def test_model_and_ptu_from_config_file(tmp_path: Path) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text("model: qwen-max-2025-01-25\nptu: 16\ndeployment_code: qwen-max-file\nwindow_s: 5\n")

    with simulate_process("--config", str(path)) as (process, url):
        stats = httpx.get(url + "/sim/stats", params={"requests": "0"}, timeout=30).json()
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=15)

    assert stats["model"] == "qwen-max-2025-01-25"
    assert stats["deployment_code"] == "qwen-max-file"
    assert stats["capacity"]["tpm"] == 160_000
    assert stats["capacity"]["window_s"] == 5.0

"""A killed Locust keeps its records; a failing preflight stops the run before any load."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from locust_helpers import (
    locust_command,
    locust_env,
    read_json,
    read_records,
    run_locust,
    wait_for,
)


@pytest.mark.slow
def test_kill9_loses_at_most_one_second(simulator: Any, tmp_path: Path) -> None:
    sim = simulator(natural_length_median=20, speed_factor=3)
    run_dir = tmp_path / "run"
    command = locust_command(sim.openai_base_url, run_dir, "-u", "10", "-r", "10", "-t", "60s", "--wait-time", "0.1")
    process = subprocess.Popen(command, env=locust_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        wait_for(lambda: len(read_records(run_dir)) >= 60 if (run_dir / "records.jsonl").exists() else False, 30, "60 records on disk")

        # Kill only once enough requests finished well before, so the loss check has something to check.
        def finished_before(age_s: float) -> int:
            cutoff = time.time() - age_s
            return sum(1 for entry in sim.stats()["requests"] if entry["finished_at"] is not None and entry["finished_at"] <= cutoff)

        wait_for(lambda: finished_before(1.5) >= 41, 30, "41 requests finished 1.5 s ago")
        os.kill(process.pid, signal.SIGKILL)
        killed_at = time.time()
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()

    recorded = {record["request_id"] for record in read_records(run_dir)}
    run_info = read_json(run_dir / "run.json")
    preflight_id = run_info["preflight"]["request_id"]
    finished_early = [
        entry["request_id"]
        for entry in sim.stats()["requests"]
        if entry["finished_at"] is not None and entry["finished_at"] <= killed_at - 1.0 and entry["request_id"] != preflight_id
    ]
    assert len(finished_early) >= 40
    missing = [request_id for request_id in finished_early if request_id not in recorded]
    assert missing == [], f"{len(missing)} requests finished more than 1 s before the kill are missing"
    assert run_info["partial"] is True
    assert run_info["ended_at"] is None


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "expected"),
    [("wrong key", "was rejected"), ("unknown deployment", "was not found"), ("unreachable host", "Cannot reach")],
)
def test_preflight_failure_exits_2(simulator: Any, tmp_path: Path, case: str, expected: str) -> None:
    sim = simulator()
    host = sim.openai_base_url
    args: list[str] = ["-u", "5", "-r", "5", "-t", "5s"]
    env = locust_env()
    if case == "wrong key":
        env = locust_env(DASHSCOPE_API_KEY="sk-test-wrong-0000")
    elif case == "unknown deployment":
        args += ["--deployment-code", "qwen-plus-unknown"]
    else:
        host = f"http://127.0.0.1:{_closed_port()}/compatible-mode/v1"
    run_dir = tmp_path / "run"
    result = run_locust(host, run_dir, *args, env=env, timeout_s=60)

    assert result.returncode == 2, result.stderr[-2000:]
    assert "Preflight failed" in result.stderr
    assert expected in result.stderr
    assert "sk-test" not in result.stderr
    assert not (run_dir / "records.jsonl").exists()
    assert len(sim.stats()["requests"]) == (0 if case == "unreachable host" else 1), "the load must not start"

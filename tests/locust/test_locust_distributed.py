"""Distributed runs with separate master and worker processes.

Options given to the master only reach the workers, a worker started with other values is reported,
and a worker killed mid-run marks the run partial.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from locust_helpers import (
    DEPLOYMENT,
    LOCUSTFILE,
    free_port,
    locust_command,
    locust_env,
    read_json,
    read_records,
    wait_for,
)


def _worker(port: int, *args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker", "--master-port", str(port), *args]
    return subprocess.Popen(command, env=locust_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_master_options_reach_workers(simulator: Any, tmp_path: Path) -> None:
    sim = simulator(natural_length_median=40, speed_factor=3)
    port = free_port()
    run_dir = tmp_path / "run"
    master_command = locust_command(
        sim.openai_base_url,
        run_dir,
        "--master",
        "--master-bind-port",
        str(port),
        "--expect-workers",
        "3",
        "--expect-workers-max-wait",
        "30",
        "-u",
        "6",
        "-r",
        "6",
        "-t",
        "4s",
        "--wait-time",
        "0.2",
        "--drain-timeout",
        "2",
    )
    master = subprocess.Popen(master_command, env=locust_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    plain = [_worker(port), _worker(port)]
    mismatched = _worker(port, "--deployment-code", "qwen-plus-other", "--api", "openai", "--request-timeout", "30")
    try:
        # Once every worker has shipped records, kill one hard: the master must mark the run partial.
        wait_for(lambda: len({record["worker_id"] for record in read_records(run_dir)}) == 3 if (run_dir / "records.jsonl").exists() else False, 30, "records from 3 workers")
        os.kill(plain[1].pid, signal.SIGKILL)
        _, master_stderr = master.communicate(timeout=60)
    finally:
        for process in [master, *plain, mismatched]:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)

    assert master.returncode == 0, master_stderr[-3000:]
    records = read_records(run_dir)
    assert {record["deployment_code"] for record in records} == {DEPLOYMENT}, "workers must use the master's --deployment-code"
    assert {record["worker_id"] for record in records} == {"w0", "w1", "w2"}
    run_info = read_json(run_dir / "run.json")

    mismatches = run_info["option_mismatches"]
    assert len(mismatches) == 1, mismatches
    (worker_mismatch,) = mismatches.values()
    assert worker_mismatch == {"deployment_code": {"worker": "qwen-plus-other", "master": DEPLOYMENT}, "request_timeout": {"worker": 30.0, "master": 120.0}}
    assert "qwen-plus-other" in master_stderr

    assert run_info["partial"] is True
    assert len(run_info["lost_workers"]) == 1
    by_id = {entry["request_id"]: entry for entry in sim.stats()["requests"]}
    assert all(record["output_tokens"] == by_id[record["request_id"]]["output_tokens"] for record in records if record["outcome"] == "ok")

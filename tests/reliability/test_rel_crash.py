"""Crash safety: SIGKILL of Locust, SIGKILL of one worker, Ctrl-C on ``ptu-verify run``.

After each, ``ptu-verify analyze`` must read the run directory, the run must be marked partial, and
every request the simulator finished more than LOSS_WINDOW_S before the crash must have its record.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from test_rel_support import (
    MODEL,
    child_env,
    cli_command,
    free_port,
    read_json,
    read_records,
    simulator,
    start_locust,
    wait_for,
)

# Records are flushed every 0.5 s (workers ship batches every 0.5 s), so a crash may lose up to about
# one second of finished requests and never more.
LOSS_WINDOW_S = 1.0
NO_LIMITS = {"capacity_factor": 100.0, "enforce_qpm": False}


def _lost_requests(entries: list[dict[str, Any]], records: list[dict[str, Any]], crash_at: float, preflight_id: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return the finished simulator entries missing from the records: all of them, and those older than the loss window.

    The preflight request (``preflight_id``) is never a record: run.json keeps it.
    """
    recorded = {record["request_id"] for record in records} | {preflight_id}
    finished = [entry for entry in entries if entry["outcome"] == "ok" and entry["finished_at"] is not None and entry["finished_at"] < crash_at]
    lost = [entry for entry in finished if entry["request_id"] not in recorded]
    too_old = [entry for entry in lost if entry["finished_at"] < crash_at - LOSS_WINDOW_S]
    return lost, too_old


def _record_count(run_dir: Path) -> int:
    path = run_dir / "records.jsonl"
    if not path.exists():
        return 0
    with path.open("rb") as handle:
        return sum(1 for _line in handle)


def _analyze_partial(run_cli: Any, run_dir: Path) -> dict[str, Any]:
    result = run_cli("analyze", str(run_dir), "--model", MODEL, "--ptu", "8")
    assert result.exit_code in (0, 1, 3), result.stderr
    assert "Traceback" not in result.stderr
    summary = read_json(run_dir / "summary.json")
    assert summary["run"]["partial"] is True
    assert (run_dir / "verdict.html").is_file()
    return summary


@pytest.mark.slow
def test_sigkill_locust_keeps_records(tmp_path: Path, run_cli: Any) -> None:
    run_dir = tmp_path / "run"
    with simulator(**NO_LIMITS) as sim:
        process = start_locust(sim.openai_base_url, run_dir, "-u", "6", "-r", "6", "-t", "60s", "--skip-preflight", log_path=tmp_path / "locust.log")
        try:
            wait_for(lambda: _record_count(run_dir) >= 60, 30.0, "60 records on disk")
        finally:
            crash_at = time.time()
            process.kill()
            process.wait(timeout=10)
        wait_for(lambda: sim.stats(include_requests=False)["totals"]["in_flight"] == 0, 10.0, "the simulator to see every stream end")
        entries = sim.stats()["requests"]

    records = read_records(run_dir)
    lost, too_old = _lost_requests(entries, records, crash_at)
    assert not too_old, f"{len(too_old)} requests finished more than {LOSS_WINDOW_S} s before the kill have no record"
    assert len(records) >= 60
    assert read_json(run_dir / "run.json")["partial"] is True
    # A write torn by the kill leaves half a line; the analysis skips and counts it.
    with (run_dir / "records.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"schema": "ptu-verify/record-v1", "run_id": "torn", "started_at": 17')
    summary = _analyze_partial(run_cli, run_dir)
    assert summary["input"]["records"] == len(records)
    assert summary["input"]["skipped_record_lines"] == 1
    print(f"SIGKILL: {len(records)} records kept, {len(lost)} finished requests lost")


@pytest.mark.slow
def test_sigkill_one_worker_marks_partial(tmp_path: Path, run_cli: Any) -> None:
    run_dir = tmp_path / "run"
    port = str(free_port())
    with simulator(**NO_LIMITS) as sim:
        process = start_locust(
            sim.openai_base_url, run_dir, "-u", "6", "-r", "6", "-t", "5s", "--skip-preflight", "--drain-timeout", "2",
            "--processes", "2", "--master-bind-host", "127.0.0.1", "--master-bind-port", port, "--master-port", port,
            log_path=tmp_path / "locust.log",
        )  # fmt: skip
        try:
            wait_for(lambda: {record["worker_id"] for record in read_records(run_dir)} >= {"w0", "w1"}, 30.0, "records from both workers")
            workers = psutil.Process(process.pid).children()
            assert len(workers) == 2, workers
            crash_at = time.time()
            workers[0].kill()
            process.wait(timeout=40)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        wait_for(lambda: sim.stats(include_requests=False)["totals"]["in_flight"] == 0, 10.0, "the simulator to see every stream end")
        entries = sim.stats()["requests"]

    log = (tmp_path / "locust.log").read_text(encoding="utf-8", errors="replace")
    records = read_records(run_dir)
    lost, too_old = _lost_requests(entries, records, crash_at)
    assert not too_old, f"{len(too_old)} requests finished more than {LOSS_WINDOW_S} s before the kill have no record"
    run_info = read_json(run_dir / "run.json")
    assert run_info["ended_at"] is not None, log[-3000:]
    assert run_info["partial"] is True
    assert len(run_info["lost_workers"]) == 1, run_info
    surviving = {"w0", "w1"} - set(run_info["lost_workers"])
    last_of = {worker: max(record["started_at"] for record in records if record["worker_id"] == worker) for worker in ("w0", "w1")}
    # The surviving worker kept sending until the end; the killed one stopped at the kill.
    assert last_of[surviving.pop()] > crash_at + 1.0
    _analyze_partial(run_cli, run_dir)
    print(f"worker SIGKILL: {len(records)} records kept, {len(lost)} finished requests lost")


@pytest.mark.slow
def test_ctrl_c_on_run_gives_partial_report(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        cli_command("run", "--model", MODEL, "--ptu", "8", "--out", str(run_dir), "--seed", "3", "--plan", "users", "--", "-u", "4", "-r", "4"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        wait_for(lambda: _record_count(run_dir) >= 5 or process.poll() is not None, 60.0, "5 records from ptu-verify run")
        assert process.poll() is None, f"ptu-verify run ended early:\n{process.communicate()[1].decode()[-3000:]}"
        interrupted_at = time.time()
        # Ctrl-C in a terminal signals the foreground process group: ptu-verify, not its Locust child,
        # which runs in a session of its own.
        os.killpg(process.pid, signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    assert process.returncode in (0, 1, 3), stderr.decode()[-3000:]
    assert b"Traceback" not in stderr
    assert b"partial" in stdout, stdout.decode()[-2000:]
    summary = read_json(run_dir / "summary.json")
    assert summary["run"]["partial"] is True
    assert read_json(run_dir / "run.json")["partial"] is True
    assert (run_dir / "verdict.html").is_file()

    # The simulator's ground truth, written by ptu-verify run: nothing finished before the interrupt is missing.
    entries = read_json(run_dir / "simulator.json")["requests"]
    records = read_records(run_dir)
    preflight_id = read_json(run_dir / "run.json")["preflight"]["request_id"]
    lost, too_old = _lost_requests(entries, records, interrupted_at, preflight_id)
    assert not too_old, f"{len(too_old)} requests finished before Ctrl-C have no record"
    print(f"Ctrl-C: {len(records)} records kept, {len(lost)} finished requests lost")

"""Load safety caps: --max-total-tokens and --max-duration end a run cleanly, long before its -t limit."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from test_rel_support import read_json, read_records, run_locust, simulator, wait_for

RUN_TIME_S = 60  # -t: far beyond either cap, so only the cap can end the run in time
TOKEN_CAP = 4000
DURATION_CAP_S = 2.0


def _record_tokens(record: dict[str, Any]) -> int:
    return int(record["input_tokens"] or 0) + int(record["output_tokens"] or 0)


def _cap_crossed_at(records: list[dict[str, Any]], cap: int) -> float:
    """Return the completion time at which the recorded tokens first reached ``cap``."""
    total = 0
    for record in sorted(records, key=lambda item: item["started_at"] + (item["e2e_s"] or 0.0)):
        total += _record_tokens(record)
        if total >= cap:
            return float(record["started_at"] + (record["e2e_s"] or 0.0))
    raise AssertionError(f"the records hold only {total} tokens, below the cap of {cap}")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("cap_args", "reason"),
    [
        (["--max-total-tokens", str(TOKEN_CAP)], "max-total-tokens reached"),
        (["--max-duration", str(DURATION_CAP_S)], "max-duration reached"),
    ],
    ids=["max-total-tokens", "max-duration"],
)
def test_cap_stops_run_cleanly(tmp_path: Path, run_cli: Any, cap_args: list[str], reason: str) -> None:
    run_dir = tmp_path / "run"
    with simulator(capacity_factor=100.0, enforce_qpm=False) as sim:
        started = time.monotonic()
        result = run_locust(sim.openai_base_url, run_dir, "-u", "4", "-r", "4", "-t", f"{RUN_TIME_S}s", "--skip-preflight", *cap_args, timeout_s=RUN_TIME_S)
        elapsed_s = time.monotonic() - started
        wait_for(lambda: sim.stats(include_requests=False)["totals"]["in_flight"] == 0, 10.0, "no request in flight")
        entries = sim.stats()["requests"]

    assert result.returncode == 0, result.stderr[-3000:]
    assert elapsed_s < RUN_TIME_S / 2, f"the cap did not stop the run: it took {elapsed_s:.1f} s"
    run_info = read_json(run_dir / "run.json")
    assert run_info["stop_reason"] == reason
    assert run_info["ended_at"] is not None

    # Records kept: every request the simulator finished has its record, and nothing more.
    records = read_records(run_dir)
    finished_ok = {entry["request_id"] for entry in entries if entry["outcome"] == "ok"}
    recorded_ok = {record["request_id"] for record in records if record["outcome"] == "ok"}
    assert recorded_ok == finished_ok
    assert run_info["records_written"] == len(records)

    if "--max-total-tokens" in cap_args:
        assert sum(_record_tokens(record) for record in records) >= TOKEN_CAP
        # The cap is checked every 0.2 s: no request may start later than shortly after the recorded
        # tokens crossed it (requests in flight then still finish and are recorded).
        crossed_at = _cap_crossed_at(records, TOKEN_CAP)
        late = [record for record in records if record["started_at"] > crossed_at + 0.5]
        assert not late, f"{len(late)} requests started more than 0.5 s after the cap was reached"
    else:
        span_s = max(record["started_at"] for record in records) - float(run_info["started_at"])
        assert span_s <= DURATION_CAP_S + 1.5, span_s

    analysis = run_cli("analyze", str(run_dir))
    assert analysis.exit_code in (0, 1, 3), analysis.stderr
    assert read_json(run_dir / "summary.json")["input"]["records"] == len(records)

"""Fault matrix end to end: Locust against a simulator that injects every fault kind at fixed rates.

One run per API. Each record is matched to the simulator's own entry by request id, and the faults
the simulator drew for that request decide the outcome the record must have. Requests without an
outcome-changing fault (including keep-alive comments and split events) must carry exactly the
simulator's token counts, and ``ptu-verify analyze`` must count every failure kind as the records do.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from test_rel_support import SECRET_KEY, read_json, read_records, run_locust, simulator

REQUEST_TIMEOUT_S = 1.0
STALL_S = 2.5  # longer than the request timeout, so a stall must end as a timeout
FAULT_RATES = {
    "http_500": 0.07,
    "http_503": 0.07,
    "stream_error": 0.07,
    "reset": 0.07,
    "stall": 0.05,
    "malformed": 0.07,
    "keepalive": 0.3,
    "split": 0.3,
}
# Outcome and HTTP status that a record must have for the first outcome-changing fault of its request,
# in the order the simulator applies them (status faults before the stream, then mid-stream faults).
EXPECTED: dict[str, tuple[str, int]] = {
    "http_500": ("http_error", 500),
    "http_503": ("http_error", 503),
    "stream_error": ("stream_error", 500),
    "reset": ("truncated", 200),
    "stall": ("timeout", 200),
    "malformed": ("stream_error", 200),
}
ERROR_CODES = {
    "openai": {"http_500": "internal_error", "http_503": "model_unavailable", "stream_error": "internal_error"},
    "dashscope": {"http_500": "InternalError", "http_503": "ModelUnavailable", "stream_error": "InternalError"},
}
COMMON_CODES = {"reset": "connection_lost", "stall": "timeout", "malformed": "invalid_event"}


def _deciding_fault(faults: list[str]) -> str | None:
    for name in EXPECTED:
        if name in faults:
            return name
    return None


def _expected_code(api: str, fault: str) -> str:
    return ERROR_CODES[api].get(fault) or COMMON_CODES[fault]


@pytest.mark.slow
@pytest.mark.parametrize("api", ["openai", "dashscope"])
def test_fault_matrix_end_to_end(tmp_path: Path, api: str, run_cli: Any) -> None:
    run_dir = tmp_path / "run"
    with simulator(faults=FAULT_RATES, stall_s=STALL_S, capacity_factor=100.0, enforce_qpm=False) as sim:
        host = sim.openai_base_url if api == "openai" else sim.dashscope_base_url
        result = run_locust(
            host, run_dir, "--api", api, "-u", "10", "-r", "10", "-t", "2s",
            "--request-timeout", str(REQUEST_TIMEOUT_S), "--skip-preflight", "--drain-timeout", "3",
        )  # fmt: skip
        entries = {entry["request_id"]: entry for entry in sim.stats()["requests"]}

    # The run completes despite the faults (Locust exits 1 because requests failed).
    assert result.returncode in (0, 1), result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    run_info = read_json(run_dir / "run.json")
    assert run_info["ended_at"] is not None
    assert run_info["partial"] is False

    records = read_records(run_dir)
    assert len(records) >= 100, f"only {len(records)} records"
    seen_faults: Counter[str] = Counter()
    unaffected = 0
    for record in records:
        entry = entries.get(record["request_id"])
        assert entry is not None, f"record {record['client_request_id']} has request id {record['request_id']!r}, unknown to the simulator"
        fault = _deciding_fault(entry["faults"])
        if fault is None:
            # Keep-alive comments and split events must not change a single figure.
            assert record["outcome"] == "ok", (record, entry)
            assert record["input_tokens"] == entry["input_tokens"], (record, entry)
            assert record["output_tokens"] == entry["output_tokens"], (record, entry)
            assert record["chunks"] == entry["output_tokens"], (record, entry)
            assert record["tokens_estimated"] is False
            assert record["ttft_s"] is not None and record["ttft_s"] > 0
            unaffected += 1
            continue
        seen_faults[fault] += 1
        outcome, status = EXPECTED[fault]
        assert (record["outcome"], record["status_code"]) == (outcome, status), (fault, record, entry)
        assert record["error_code"] == _expected_code(api, fault), (fault, record)
        if fault == "stall":
            assert record["e2e_s"] == pytest.approx(REQUEST_TIMEOUT_S, abs=0.3)
    assert unaffected >= 50
    for fault in EXPECTED:
        assert seen_faults[fault] >= 1, f"no request hit fault {fault}: {dict(seen_faults)}"
    # Write-shape faults were drawn and served: there were affected-but-ok requests of each.
    shaped = Counter(name for entry in entries.values() if entry["outcome"] == "ok" for name in entry["faults"])
    assert shaped["keepalive"] >= 10, shaped
    assert shaped["split"] >= 10, shaped

    # The analysis counts every kind exactly as the records show it.
    analysis = run_cli("analyze", str(run_dir), "--model", "qwen-plus-2025-04-28", "--ptu", "8")
    assert analysis.exit_code in (0, 1, 3), analysis.stderr
    assert "Traceback" not in analysis.stderr
    summary = read_json(run_dir / "summary.json")
    counted = {(failure["outcome"], failure["error_code"]): failure["count"] for failure in summary["failures"]}
    expected_counts = Counter((record["outcome"], record["error_code"]) for record in records if record["outcome"] != "ok")
    assert counted == dict(expected_counts)
    by_fault: Counter[tuple[str, str]] = Counter()
    for fault, count in seen_faults.items():
        by_fault[(EXPECTED[fault][0], _expected_code(api, fault))] += count
    assert counted == dict(by_fault)
    assert summary["input"]["records"] == len(records)
    assert SECRET_KEY not in (run_dir / "summary.json").read_text(encoding="utf-8")
    print(f"{api}: {len(records)} records, {unaffected} without an outcome-changing fault, faults {dict(seen_faults)}")

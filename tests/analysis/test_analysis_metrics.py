"""Metric definitions on hand-made records: percentiles, steady-state rate, shares, robustness."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ptu_verify.analysis import AnalysisOptions, analyze_run
from ptu_verify.analysis.synthetic import SyntheticLoad, write_synthetic_run
from ptu_verify.records import RECORD_SCHEMA

T0 = 1_767_225_600.0


def record(**fields: Any) -> dict[str, Any]:
    """A successful record with every RequestRecord field; ``fields`` override the defaults."""
    base: dict[str, Any] = {
        "schema": RECORD_SCHEMA,
        "run_id": "r",
        "worker_id": "w0",
        "request_id": "x",
        "client_request_id": "c",
        "api": "openai",
        "transport": "fast",
        "deployment_code": "qwen-plus-d824b8ad",
        "workload": "chat",
        "variant": "short",
        "stage": "all",
        "started_at": T0,
        "scheduled_at": None,
        "ttft_s": 0.5,
        "ttfa_s": 0.5,
        "e2e_s": 2.0,
        "input_tokens": 100,
        "output_tokens": 50,
        "reasoning_tokens": 0,
        "cached_tokens": 0,
        "image_tokens": None,
        "tokens_estimated": False,
        "max_tokens": 200,
        "chunks": 50,
        "gen_speed_tps": 40.0,
        "finish_reason": "stop",
        "status_code": 200,
        "outcome": "ok",
        "error_code": None,
        "error_message": None,
        "retry_after_s": None,
        "attempt": 1,
        "user_latency_s": 2.0,
    }
    base.update(fields)
    return base


def write_run(run_dir: Path, records: list[dict[str, Any]], *, plan: dict[str, Any] | None = None, ptu: int = 8) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "records.jsonl").write_text("".join(json.dumps(item) + "\n" for item in records), encoding="utf-8")
    (run_dir / "run.json").write_text(json.dumps({"model": "qwen-plus-2025-04-28", "ptu": ptu, "simulated": True}), encoding="utf-8")
    if plan is not None:
        (run_dir / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
    return run_dir


def test_steady_state_rate_of_a_burst(tmp_path: Path) -> None:
    # 40 requests sent at t=0, completed one per second from t=10 to t=49.
    records = [record(started_at=T0, e2e_s=10.0 + index, output_tokens=100, input_tokens=0) for index in range(40)]
    summary = analyze_run(write_run(tmp_path, records))

    overall = summary.stages[0]
    assert overall["label"] == "all"
    assert overall["rate_method"] == "steady_state"
    assert overall["achieved_qpm"] == pytest.approx(60.0)
    assert overall["achieved_tpm"] == pytest.approx(6000.0)
    assert overall["naive_qpm"] == pytest.approx(40 / 49 * 60)
    assert round(overall["naive_qpm"] / 60, 2) == 0.82


def test_percentiles_are_exact_over_all_workers(tmp_path: Path) -> None:
    run_dir = write_synthetic_run(tmp_path)
    lines = (run_dir / "records.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    # Split the records over two worker files, as distributed runs write them.
    (run_dir / "records.jsonl").unlink()
    for worker in ("w0", "w1"):
        kept = [line for line, row in zip(lines, rows) if row["worker_id"] == worker]
        (run_dir / f"records-{worker}.jsonl").write_text("\n".join(kept) + "\n", encoding="utf-8")
    plan = json.loads((run_dir / "plan.json").read_text(encoding="utf-8"))
    stage = plan["stages"][2]

    summary = analyze_run(run_dir)

    measured = [row for row in rows if stage["measure_start_at"] <= row["started_at"] < stage["end_at"] and row["outcome"] == "ok"]
    ttft = np.array([row["ttft_s"] for row in measured])
    speed = np.array([row["gen_speed_tps"] for row in measured])
    result = summary.stages[2]
    assert result["ttft_s"]["count"] == len(measured)
    for p in (50, 90, 95, 99):
        assert result["ttft_s"][f"p{p}"] == np.percentile(ttft, p)
    assert result["ttft_s"]["max"] == ttft.max()
    assert result["ttft_p95_s"] == np.percentile(ttft, 95)
    assert result["speed_p50_tps"] == np.percentile(speed, 50)
    tokens = sum(row["input_tokens"] + row["output_tokens"] for row in measured)
    measured_min = (stage["end_at"] - stage["measure_start_at"]) / 60
    assert result["achieved_tpm"] == pytest.approx(tokens / measured_min)


def test_warm_up_and_stage_membership_follow_start_time(tmp_path: Path) -> None:
    plan = {
        "plan": "step",
        "stages": [
            {"label": "a", "start_at": T0, "measure_start_at": T0 + 10, "end_at": T0 + 70, "offered_tpm": 1000, "offered_qpm": None, "fraction_of_capacity": None},
            {"label": "b", "start_at": T0 + 70, "measure_start_at": T0 + 80, "end_at": T0 + 140, "offered_tpm": 2000, "offered_qpm": None, "fraction_of_capacity": None},
        ],
    }
    records = [
        record(started_at=T0 + 5),  # warm-up of a: not measured
        record(started_at=T0 + 10),  # first measured second of a
        record(started_at=T0 + 69.9, e2e_s=30.0),  # ends inside b but belongs to a
        record(started_at=T0 + 75),  # warm-up of b
        record(started_at=T0 + 139.9),
        record(started_at=T0 + 140),  # after the last stage
    ]
    summary = analyze_run(write_run(tmp_path, records, plan=plan))

    first, second = summary.stages
    assert first["requests"] == 2
    assert second["requests"] == 1
    assert first["achieved_qpm"] == pytest.approx(2.0)
    assert first["achieved_tpm"] == pytest.approx(300.0)
    assert first["offered_tpm_source"] == "plan"
    assert summary.input["records"] == 6
    assert summary.input["measured_records"] == 3


def test_throttle_shares_by_limit_and_failures(tmp_path: Path) -> None:
    records = [record(started_at=T0 + index) for index in range(6)]
    records += [
        record(started_at=T0 + 1, outcome="throttled", status_code=429, error_code="Throttling.AllocationQuota", input_tokens=None, output_tokens=None),
        record(started_at=T0 + 2, outcome="throttled", status_code=429, error_code="limit_requests", input_tokens=None, output_tokens=None),
        # A throttling code inside an HTTP 200 stream still counts as throttled.
        record(started_at=T0 + 3, outcome="stream_error", status_code=200, error_code="Throttling.BurstRate", input_tokens=None, output_tokens=None),
        record(started_at=T0 + 4, outcome="truncated", status_code=200, error_message="connection closed", input_tokens=None, output_tokens=None),
    ]
    summary = analyze_run(write_run(tmp_path, records))
    overall = summary.overall

    assert overall["requests"] == 10
    assert overall["ok_requests"] == 6
    assert overall["throttled_share"] == pytest.approx(0.3)
    assert overall["throttled_by_kind"] == {"token_limit": 1, "request_limit": 1, "burst": 1}
    assert overall["failed_by_outcome"] == {"truncated": 1}
    assert overall["failed_share"] == pytest.approx(0.1)
    truncated = next(row for row in summary.failures if row["outcome"] == "truncated")
    assert truncated["sample_messages"] == ["connection closed"]


def test_cached_reasoning_and_reserved_tokens(tmp_path: Path) -> None:
    records = [
        record(started_at=T0 + index, input_tokens=1000, cached_tokens=400, output_tokens=300, reasoning_tokens=200, max_tokens=1000, tokens_estimated=index == 0)
        for index in range(4)
    ]
    summary = analyze_run(write_run(tmp_path, records))
    overall = summary.overall

    assert overall["tokens"] == {"input": 4000.0, "output": 1200.0, "cached": 1600.0, "reasoning": 800.0, "total": 5200.0}
    assert overall["tokens_estimated_share"] == pytest.approx(0.25)
    assert overall["reserved_unused_tpm"] / overall["achieved_output_tpm"] == pytest.approx(700 / 300)
    assert any("partly estimated" in note for note in summary.note_texts())


def test_truncated_last_line_is_skipped_and_counted(tmp_path: Path) -> None:
    run_dir = write_synthetic_run(tmp_path, load=SyntheticLoad(fractions=(1.0,)))
    before = analyze_run(run_dir)
    with (run_dir / "records.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record(started_at=T0 + 60))[:57])

    after = analyze_run(run_dir)

    assert after.input["skipped_record_lines"] == 1
    assert after.input["records"] == before.input["records"]
    assert after.stages[0]["achieved_tpm"] == before.stages[0]["achieved_tpm"]
    assert any("1 unreadable record lines" in note for note in after.note_texts())


def test_minute_windows_align_to_wall_clock(tmp_path: Path) -> None:
    records = [record(started_at=T0 + 30 + index * 10) for index in range(9)]
    summary = analyze_run(write_run(tmp_path, records), AnalysisOptions(minute_windows=True))

    minutes = summary.minute_windows
    assert minutes is not None
    # Starts at :30, :40, :50 fall in the first minute; :60 … :110 in the second.
    assert [row["minute_at"] for row in minutes] == [T0, T0 + 60]
    assert [row["requests"] for row in minutes] == [3, 6]
    assert sum(row["total_tokens"] for row in minutes) == 9 * 150


def test_generator_health_shares(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, [record(started_at=T0 + index) for index in range(5)])
    samples = [
        {"schema": "ptu-verify/health-v1", "worker_id": "w0", "at": T0 + second, "cpu_percent": 50.0, "loop_lag_s": 0.01, "in_flight": 1, "dispatched": 10, "late_dispatches": 1, "dropped_dispatches": 1, "stage": None}
        for second in range(4)
    ]
    (tmp_path / "health-w0.jsonl").write_text("".join(json.dumps(sample) + "\n" for sample in samples), encoding="utf-8")

    summary = analyze_run(run_dir)

    assert summary.health["late_dropped_share"] == pytest.approx(0.2)
    assert {check.name: check.status for check in summary.checks}["generator_health"] == "inconclusive"


def test_process_pool_reads_the_same_frame(tmp_path: Path) -> None:
    from ptu_verify.analysis import load

    run_dir = write_synthetic_run(tmp_path, load=SyntheticLoad(fractions=(1.0, 1.2)))
    paths = sorted(run_dir.glob("records*.jsonl"))
    with (run_dir / "records.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"started_at": 1\n')

    serial, serial_skipped = load.read_frame(paths, load.RECORD_COLUMNS, load.FLOAT_COLUMNS, processes=1)
    original = load._BLOCK_BYTES
    load._BLOCK_BYTES = 20_000
    try:
        parallel, parallel_skipped = load.read_frame(paths, load.RECORD_COLUMNS, load.FLOAT_COLUMNS, processes=2)
    finally:
        load._BLOCK_BYTES = original

    assert serial_skipped == parallel_skipped == 1
    assert len(parallel) == len(serial) == 733
    for name in load.RECORD_COLUMNS:
        assert parallel[name].astype(object).fillna("-").tolist() == serial[name].astype(object).fillna("-").tolist(), name


def test_stray_timestamp_widens_series_bins(tmp_path: Path) -> None:
    records = [record(started_at=T0 + index) for index in range(5)] + [record(started_at=1.0)]
    summary = analyze_run(write_run(tmp_path, records))

    assert summary.time_series["bin_s"][0] > 10.0
    assert len(summary.time_series["t_s"]) <= 5001
    assert summary.overall["requests"] == 6


def test_sparse_records_give_inconclusive(tmp_path: Path) -> None:
    # Successes without end-to-end times cannot give a completion rate, and must not crash.
    records = [record(started_at=T0 + index, e2e_s=None) for index in range(10)]
    summary = analyze_run(write_run(tmp_path, records))

    assert summary.verdict == "inconclusive"
    assert summary.stages[0]["achieved_tpm"] is None
    assert summary.sustained_tpm["value"] is None
    assert "No stage has a measurable achieved TPM" in summary.reasons[0]


def test_retries_and_first_attempt_shares(tmp_path: Path) -> None:
    throttled = {"outcome": "throttled", "status_code": 429, "error_code": "Throttling.RateQuota", "input_tokens": None, "output_tokens": None}
    records = [
        record(started_at=T0, **throttled),
        record(started_at=T0 + 1, attempt=2),  # the retry of the first request succeeds
        record(started_at=T0 + 2, **throttled),
        record(started_at=T0 + 3, attempt=2, **throttled),  # this user request never succeeds
        record(started_at=T0 + 4),
    ]
    overall = analyze_run(write_run(tmp_path, records)).overall

    assert overall["first_attempts"] == 3
    assert overall["retried_attempts"] == 2
    assert overall["first_attempt_throttled_share"] == pytest.approx(2 / 3)
    assert overall["throttled_share"] == pytest.approx(3 / 5)
    assert overall["user_success_share"] == pytest.approx(2 / 3)

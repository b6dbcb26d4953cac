"""Live progress: incremental reading of growing records files and the per-stage snapshot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ptu_verify.records import PlanInfo
from ptu_verify.run.progress import RecordTail, compute_progress, format_plan_estimate, format_progress, percentile, plan_estimate

T0 = 1_700_000_000.0


def record(started_at: float, *, outcome: str = "ok", ttft_s: float = 0.5, e2e_s: float = 2.0, tokens: tuple[int, int] = (700, 300)) -> dict[str, Any]:
    ok = outcome == "ok"
    return {
        "schema": "ptu-verify/record-v1",
        "started_at": started_at,
        "outcome": outcome,
        "status_code": 200 if ok else 429,
        "ttft_s": ttft_s if ok else None,
        "e2e_s": e2e_s if ok else 0.05,
        "input_tokens": tokens[0] if ok else None,
        "output_tokens": tokens[1] if ok else None,
    }


def plan() -> PlanInfo:
    return {
        "schema": "ptu-verify/plan-v1",
        "plan": "step",
        "stages": [
            {"label": "50%", "start_at": T0, "measure_start_at": T0 + 5, "end_at": T0 + 60, "offered_tpm": 100_000.0,
             "offered_qpm": 100.0, "fraction_of_capacity": 0.5, "users": None},
            {"label": "100%", "start_at": T0 + 60, "measure_start_at": T0 + 65, "end_at": T0 + 120, "offered_tpm": 200_000.0,
             "offered_qpm": 200.0, "fraction_of_capacity": 1.0, "users": None},
        ],
    }


def test_tail_reads_only_appended_lines(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(record(T0)) + "\n")
    tail = RecordTail(tmp_path)
    assert tail.poll() == 1

    with path.open("a") as handle:
        handle.write(json.dumps(record(T0 + 1)) + "\n" + json.dumps(record(T0 + 2)) + "\n")
    assert tail.poll() == 2
    assert tail.poll() == 0
    assert [row["started_at"] for row in tail.records] == [T0, T0 + 1, T0 + 2]


def test_tail_keeps_half_written_line(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    line = json.dumps(record(T0)) + "\n"
    path.write_text(line[:20])
    tail = RecordTail(tmp_path)
    assert tail.poll() == 0

    with path.open("a") as handle:
        handle.write(line[20:])
    assert tail.poll() == 1
    assert tail.skipped_lines == 0


def test_tail_reads_worker_files_appearing_later(tmp_path: Path) -> None:
    tail = RecordTail(tmp_path)
    assert tail.poll() == 0
    (tmp_path / "records-w1.jsonl").write_text(json.dumps(record(T0)) + "\nnot json\n")
    (tmp_path / "records-w2.jsonl").write_text(json.dumps(record(T0 + 1)) + "\n")
    assert tail.poll() == 2
    assert tail.skipped_lines == 1


def test_progress_in_measured_stage() -> None:
    # 100% stage. One ok request of 1000 tokens ends every second from T0+91 to T0+120, and a
    # throttled attempt ends at T0+93, 97, … The window is [T0+87.9, T0+117.9). It is 30 s long
    # and ends 2 s before now, because the newest records may not be flushed yet.
    records = [record(T0 + 60 + second - 2.0) for second in range(31, 61)]
    records += [record(T0 + 60 + second - 0.05, outcome="throttled") for second in range(33, 61, 4)]
    snapshot = compute_progress(records, plan(), now=T0 + 119.9)

    assert snapshot.stage == "100%"
    assert snapshot.stage_index == 1
    assert snapshot.measuring
    assert snapshot.offered_tpm == 200_000.0
    assert snapshot.window_s == pytest.approx(30.0)
    ok_ends = list(range(91, 118))  # T0+91 … T0+117
    throttled_ends = list(range(93, 118, 4))  # T0+93 … T0+117
    assert snapshot.requests == len(ok_ends) + len(throttled_ends)
    assert snapshot.achieved_tpm == pytest.approx(len(ok_ends) * 1000 / 30.0 * 60.0)
    assert snapshot.throttled_share == pytest.approx(len(throttled_ends) / (len(ok_ends) + len(throttled_ends)))
    assert snapshot.ttft_p50_s == pytest.approx(0.5)
    assert snapshot.time_left_s == pytest.approx(0.1)


def test_progress_window_clipped_to_stage_start() -> None:
    # 10 s into the second stage only its own requests count, not the first stage's.
    records = [record(T0 + 40, tokens=(10_000, 0))] + [record(T0 + 59 + second) for second in range(5)]
    snapshot = compute_progress(records, plan(), now=T0 + 70)
    assert snapshot.window_s == pytest.approx(8.0)
    assert snapshot.requests == 5
    assert snapshot.achieved_tpm == pytest.approx(5 * 1000 / 8.0 * 60.0)
    assert snapshot.measuring


def test_progress_window_reaches_back_early_in_stage() -> None:
    # 3 s into a stage the window still spans MIN_WINDOW_S, partly in the previous stage.
    records = [record(T0 + 53.5), record(T0 + 56)]
    snapshot = compute_progress(records, plan(), now=T0 + 63)
    assert snapshot.window_s == pytest.approx(5.0)
    assert snapshot.requests == 1  # the request ending at T0+55.5 is before the window [T0+56, T0+61)
    assert not snapshot.measuring


def test_progress_warm_up_flag() -> None:
    snapshot = compute_progress([], plan(), now=T0 + 62)
    assert snapshot.stage == "100%"
    assert not snapshot.measuring
    assert snapshot.achieved_tpm is None
    assert snapshot.window_s == pytest.approx(5.0)


def test_progress_without_plan() -> None:
    snapshot = compute_progress([record(T0)], None, now=T0 + 3)
    assert snapshot.stage is None
    assert snapshot.stage_count == 0
    assert snapshot.time_left_s is None
    assert "waiting for the plan" in format_progress(snapshot)


def test_progress_line_shows_figures() -> None:
    records = [record(T0 + 60 + second, ttft_s=0.2 + second / 100) for second in range(30)]
    line = format_progress(compute_progress(records, plan(), now=T0 + 95))
    assert "stage 2/2 100%" in line
    assert "offered 200,000 TPM" in line
    assert "429 0.0 %" in line
    assert "left 0:25" in line


def test_percentile_interpolates() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == pytest.approx(2.5)
    assert percentile([float(value) for value in range(101)], 0.95) == pytest.approx(95.0)


def test_plan_estimate_from_stages() -> None:
    duration_s, tokens = plan_estimate(plan())
    assert duration_s == pytest.approx(120.0)
    assert tokens == pytest.approx(100_000 + 200_000)
    assert format_plan_estimate(plan()) == "Plan step: 2 stages, 2.0 min, at most 300,000 tokens offered."


def test_plan_estimate_unknown_for_search() -> None:
    search = plan()
    search["plan"] = "search"
    assert plan_estimate(search) == (None, None)
    assert "tokens not estimable" in format_plan_estimate(search)

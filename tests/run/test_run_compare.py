"""Regression comparison on synthetic run directories: planted changes are flagged, noise is not."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from ptu_verify.errors import InputError
from ptu_verify.run.compare import CompareSettings, compare_runs, load_compare_settings, write_compare_json

STAGES = (("50%", 0.5), ("100%", 1.0), ("125%", 1.25))
CAPACITY_TPM = 200_000.0
TOKENS_PER_REQUEST = 1_000


def write_run(
    run_dir: Path,
    *,
    seed: int,
    ttft_factor: float = 1.0,
    capacity_factor: float = 1.0,
    workload: str = "chat",
    plan: str = "step",
    stage_s: float = 60.0,
) -> Path:
    """Write a run directory whose records follow a simple PTU model: tokens above capacity are throttled."""
    rng = random.Random(seed)
    run_dir.mkdir(parents=True)
    start = 1_700_000_000.0
    stages: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    for label, fraction in STAGES:
        offered_tpm = CAPACITY_TPM * fraction
        stage = {
            "label": label,
            "start_at": start,
            "measure_start_at": start + 5.0,
            "end_at": start + stage_s,
            "offered_tpm": offered_tpm,
            "offered_qpm": offered_tpm / TOKENS_PER_REQUEST,
            "fraction_of_capacity": fraction,
            "users": None,
        }
        stages.append(stage)
        rate_per_s = offered_tpm / TOKENS_PER_REQUEST / 60.0
        # A token bucket that refills at the capacity and contains at most 5 requests' tokens.
        bucket_tokens = 5.0 * TOKENS_PER_REQUEST
        at = start
        while True:
            gap_s = rng.expovariate(rate_per_s)
            at += gap_s
            if at >= stage["end_at"]:
                break
            bucket_tokens = min(5.0 * TOKENS_PER_REQUEST, bucket_tokens + CAPACITY_TPM * capacity_factor / 60.0 * gap_s)
            ok = bucket_tokens >= TOKENS_PER_REQUEST
            bucket_tokens -= TOKENS_PER_REQUEST if ok else 0.0
            ttft = rng.lognormvariate(math.log(0.4), 0.3) * ttft_factor * (1.0 + 0.3 * min(fraction, 1.0))
            records.append(
                {
                    "schema": "ptu-verify/record-v1",
                    "run_id": run_dir.name,
                    "worker_id": "w0",
                    "client_request_id": f"{label}-{len(records)}",
                    "stage": label,
                    "started_at": at,
                    "outcome": "ok" if ok else "throttled",
                    "status_code": 200 if ok else 429,
                    "ttft_s": ttft if ok else None,
                    "e2e_s": ttft + 4.0 if ok else 0.05,
                    "input_tokens": 700 if ok else None,
                    "output_tokens": 300 if ok else None,
                    "gen_speed_tps": rng.gauss(75.0, 6.0) if ok else None,
                }
            )
        start = stage["end_at"]

    run_info = {"schema": "ptu-verify/run-v1", "run_id": run_dir.name, "model": "qwen-plus-2025-04-28", "ptu": 8,
                "deployment_code": "qwen-plus-d824b8ad", "workload": workload, "plan": plan, "started_at": stages[0]["start_at"]}
    (run_dir / "run.json").write_text(json.dumps(run_info))
    (run_dir / "plan.json").write_text(json.dumps({"schema": "ptu-verify/plan-v1", "plan": plan, "stages": stages}))
    (run_dir / "records.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    return run_dir


def test_compare_same_configuration_not_flagged(tmp_path: Path) -> None:
    for pair in range(5):
        baseline = write_run(tmp_path / f"base{pair}", seed=100 + pair)
        current = write_run(tmp_path / f"cur{pair}", seed=200 + pair)
        result = compare_runs(baseline, current)
        flagged = [(stage.label, stage.regressions) for stage in result.stages if stage.regressions]
        assert flagged == [], f"pair {pair}"
        assert result.exit_code == 0


def test_compare_flags_planted_ttft_regression(tmp_path: Path) -> None:
    baseline = write_run(tmp_path / "base", seed=1)
    current = write_run(tmp_path / "cur", seed=2, ttft_factor=1.3)
    result = compare_runs(baseline, current)
    assert result.exit_code == 1
    for stage in result.stages:
        assert "ttft_p50_s" in stage.regressions, stage.label
        assert "achieved_tpm" not in stage.regressions
        assert "speed_p50_tps" not in stage.regressions
    ttft = next(metric for metric in result.stages[0].metrics if metric.metric == "ttft_p50_s")
    assert ttft.relative_change is not None and ttft.relative_change > 0.15
    assert ttft.difference_ci_low is not None and ttft.difference_ci_low > 0


def test_compare_flags_capacity_drop(tmp_path: Path) -> None:
    baseline = write_run(tmp_path / "base", seed=1)
    current = write_run(tmp_path / "cur", seed=2, capacity_factor=0.7)
    result = compare_runs(baseline, current)
    by_label = {stage.label: stage for stage in result.stages}
    assert by_label["50%"].regressions == []
    assert "throttled_share" in by_label["100%"].regressions
    assert "achieved_tpm" in by_label["125%"].regressions
    assert "throttled_share" in by_label["125%"].regressions


def test_compare_is_reproducible(tmp_path: Path) -> None:
    baseline = write_run(tmp_path / "base", seed=1)
    current = write_run(tmp_path / "cur", seed=2)
    first = compare_runs(baseline, current).to_dict()
    second = compare_runs(baseline, current).to_dict()
    assert first == second


def test_compare_rejects_different_workloads(tmp_path: Path) -> None:
    baseline = write_run(tmp_path / "base", seed=1, workload="chat")
    current = write_run(tmp_path / "cur", seed=2, workload="rag")
    with pytest.raises(InputError, match="different workloads"):
        compare_runs(baseline, current)


def test_compare_rejects_different_plans(tmp_path: Path) -> None:
    baseline = write_run(tmp_path / "base", seed=1, plan="step")
    current = write_run(tmp_path / "cur", seed=2, plan="acceptance")
    with pytest.raises(InputError, match="different plans"):
        compare_runs(baseline, current)


def test_compare_rejects_missing_directory(tmp_path: Path) -> None:
    baseline = write_run(tmp_path / "base", seed=1)
    with pytest.raises(InputError, match="not a directory"):
        compare_runs(baseline, tmp_path / "nowhere")


def test_compare_json_written(tmp_path: Path) -> None:
    baseline = write_run(tmp_path / "base", seed=1)
    current = write_run(tmp_path / "cur", seed=2, ttft_factor=1.3)
    path = write_compare_json(compare_runs(baseline, current), tmp_path / "out")
    data = json.loads(path.read_text())
    assert data["schema"] == "ptu-verify/compare-v1"
    assert data["regression"] is True
    assert [stage["label"] for stage in data["stages"]] == ["50%", "100%", "125%"]
    assert {metric["metric"] for metric in data["stages"][0]["metrics"]} == {
        "achieved_tpm", "ttft_p50_s", "ttft_p95_s", "speed_p50_tps", "throttled_share"
    }


def test_compare_policy_overrides(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[compare]\nconfidence = 0.99\nresamples = 200\n[compare.min_change]\nttft_p50_s = 0.5\n")
    settings = load_compare_settings(policy)
    assert settings.confidence == 0.99
    assert settings.resamples == 200
    assert settings.min_change["ttft_p50_s"] == 0.5

    baseline = write_run(tmp_path / "base", seed=1)
    current = write_run(tmp_path / "cur", seed=2, ttft_factor=1.3)
    result = compare_runs(baseline, current, settings)
    assert all("ttft_p50_s" not in stage.regressions for stage in result.stages)


def test_compare_policy_rejects_unknown_metric(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[compare.min_change]\nlatency = 0.1\n")
    with pytest.raises(InputError, match="Unknown metric 'latency'"):
        load_compare_settings(policy)


def test_compare_few_records_insufficient(tmp_path: Path) -> None:
    baseline = write_run(tmp_path / "base", seed=1, stage_s=8.0)
    current = write_run(tmp_path / "cur", seed=2, stage_s=8.0, ttft_factor=2.0)
    result = compare_runs(baseline, current, CompareSettings())
    statuses = {metric.status for stage in result.stages for metric in stage.metrics}
    assert statuses == {"insufficient_data"}
    # Nothing could be judged and nothing regressed: inconclusive, with every stage named in a note.
    assert result.exit_code == 3
    assert result.judged_count == 0
    assert all(stage.all_insufficient for stage in result.stages)
    assert "Too few data to judge any metric at stage 50%, 100%, 125%" in result.notes[0]


def test_compare_wide_interval_insufficient(tmp_path: Path) -> None:
    # 30 s stages (25 s measured): the achieved-TPM interval is wider than ±20 % of the baseline.
    baseline = write_run(tmp_path / "base", seed=1, stage_s=30.0)
    current = write_run(tmp_path / "cur", seed=2, stage_s=30.0, capacity_factor=0.7)
    result = compare_runs(baseline, current)
    tpm = [next(metric for metric in stage.metrics if metric.metric == "achieved_tpm") for stage in result.stages]
    assert [metric.status for metric in tpm] == ["insufficient_data"] * 3
    assert {metric.insufficient_reason for metric in tpm} == {"wide_interval"}
    assert result.to_dict()["judged_count"] == result.judged_count > 0


def test_compare_rejects_empty_records(tmp_path: Path, run_cli: Any) -> None:
    baseline = write_run(tmp_path / "base", seed=1)
    current = write_run(tmp_path / "cur", seed=2)
    (current / "records.jsonl").write_text("")
    with pytest.raises(InputError, match="no readable records"):
        compare_runs(baseline, current)
    outcome = run_cli("compare", str(baseline), str(current))
    assert outcome.exit_code == 2
    assert "nothing to compare" in outcome.stderr


def test_compare_command_exit_codes(tmp_path: Path, run_cli: Any) -> None:
    baseline = write_run(tmp_path / "base", seed=1)
    slower = write_run(tmp_path / "slower", seed=2, ttft_factor=1.3)
    other = write_run(tmp_path / "other", seed=3, workload="rag")

    regression = run_cli("compare", str(baseline), str(slower), "--out", str(tmp_path / "out"))
    assert regression.exit_code == 1
    assert "REGRESSION" in regression.stdout
    assert (tmp_path / "out" / "compare.html").exists()
    assert (tmp_path / "out" / "compare.json").exists()

    mismatch = run_cli("compare", str(baseline), str(other))
    assert mismatch.exit_code == 2
    assert "different workloads: chat" in mismatch.stderr
    assert not (other / "compare.json").exists()


def test_compare_min_windows_marks_short_stages(tmp_path: Path) -> None:
    baseline = write_run(tmp_path / "base", seed=1, stage_s=30.0)
    current = write_run(tmp_path / "cur", seed=2, stage_s=30.0, ttft_factor=2.0)
    # 25 s measured is shorter than 10 blocks of 5 s.
    result = compare_runs(baseline, current, CompareSettings(min_windows=10))
    reasons = {metric.insufficient_reason for stage in result.stages for metric in stage.metrics}
    assert reasons == {"short_stage"}
    assert result.exit_code == 3

"""Open-loop plans against a simulator of known capacity: step, capacity search, a saturated generator.

qwen-turbo allows 60 QPM per PTU; the smoke workload's requests (about 88 tokens) make QPM the binding
limit: 20 requests per second with 20 PTU. The simulator's limiter window is 1-2 s so throttling shows at
once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from locust_helpers import REPO, read_json, read_records, run_locust

MODEL = "qwen-turbo-2025-04-28"
PTU = 20
PLAN_ARGS = ["--model", MODEL, "--ptu", str(PTU), "--arrival", "constant"]


def _turbo(simulator: Any, ptu: int = PTU, **knobs: Any) -> Any:
    knobs.setdefault("window_s", 2)
    return simulator(model=MODEL, ptu=ptu, natural_length_median=2000, speed_factor=4, tokens_per_chunk=8, **knobs)


def _stage_figures(records: list[dict[str, Any]], stage: dict[str, Any]) -> tuple[float, float]:
    """Return (achieved TPM, 429 share) of the requests started in a stage's measured part."""
    measured = [record for record in records if record["stage"] == stage["label"] and stage["measure_start_at"] <= record["started_at"] < stage["end_at"]]
    ok_tokens = sum(record["input_tokens"] + record["output_tokens"] for record in measured if record["outcome"] == "ok")
    throttled = sum(1 for record in measured if record["outcome"] == "throttled")
    duration_s = stage["end_at"] - stage["measure_start_at"]
    return ok_tokens * 60 / duration_s, throttled / len(measured)


@pytest.mark.slow
def test_step_plan_saturates_at_capacity(simulator: Any, tmp_path: Path) -> None:
    sim = _turbo(simulator)
    run_dir = tmp_path / "run"
    step_args = ["--stages", "0.5,1.25,1.5", "--stage-duration", "3", "--warmup", "1", "--burst-credit", "--burst-credit-max", "3"]
    result = run_locust(sim.openai_base_url, run_dir, "--plan", "step", *PLAN_ARGS, *step_args, "--csv", str(tmp_path / "stats"))
    assert result.returncode in (0, 1), result.stderr[-3000:]  # 1: Locust counts the 429s as failures
    failures = (tmp_path / "stats_failures.csv").read_text(encoding="utf-8")
    assert "throttled HTTP 429" in failures, failures

    plan = read_json(run_dir / "plan.json")
    capacity_tpm = plan["binding_capacity_tpm"]
    assert plan["binding_limit"] == "qpm"
    burst, *stages = plan["stages"]
    assert burst["label"] == "burst-credit"
    assert burst["measure_start_at"] == burst["end_at"], "the burst-credit phase must not be measured"
    assert burst["end_at"] == stages[0]["start_at"]
    assert "throttled" in plan["burst_credit"]
    records = read_records(run_dir)
    figures = {stage["label"]: (stage["offered_tpm"], *_stage_figures(records, stage)) for stage in stages}
    (low_offered, low_achieved, low_share), (_, high_achieved, high_share), (_, top_achieved, top_share) = figures.values()

    assert low_achieved == pytest.approx(low_offered, rel=0.15), figures
    assert high_achieved == pytest.approx(capacity_tpm, rel=0.15), figures
    assert top_achieved == pytest.approx(capacity_tpm, rel=0.15), figures
    assert low_share <= 0.02, figures
    assert high_share >= 0.1, figures
    assert top_share > high_share, figures

    run_info = read_json(run_dir / "run.json")
    assert run_info["stop_reason"] == "plan completed"
    assert run_info["partial"] is False
    assert run_info["generator_behind"] is False, run_info["generator"]
    assert {record["stage"] for record in records} == {"burst-credit", *figures}


@pytest.mark.slow
@pytest.mark.parametrize("capacity_factor", [1.0, 0.7])
def test_search_plan_finds_capacity(simulator: Any, tmp_path: Path, capacity_factor: float) -> None:
    # 40 PTU (40 requests per second) so a 3 s measured window holds about 100 requests. A token bucket
    # holding 0.5 s of refill absorbs the dispatch jitter of a busy machine; a 1 s sliding window would
    # throttle at 97 % of capacity and move the answer by more than the tolerance.
    sim = _turbo(simulator, ptu=40, window_s=1, limiter="token_bucket", burst_s=0.5, capacity_factor=capacity_factor)
    run_dir = tmp_path / "run"
    args = ["--plan", "search", "--model", MODEL, "--ptu", "40", "--arrival", "constant", "--stage-duration", "4", "--warmup", "1", "--search-max-stages", "6"]
    result = run_locust(sim.openai_base_url, run_dir, *args)
    assert result.returncode in (0, 1), result.stderr[-3000:]

    plan = read_json(run_dir / "plan.json")
    search = plan["search"]
    true_capacity_tpm = plan["binding_capacity_tpm"] * capacity_factor
    assert search["converged"], search
    assert search["sustained_offered_tpm"] == pytest.approx(true_capacity_tpm, rel=0.05), search
    assert search["plateau_tpm"] == pytest.approx(true_capacity_tpm, rel=0.1), search
    assert search["stages"] < 6, "the search should need fewer stages than the 6-stage step plan"
    assert len(plan["stages"]) == search["stages"]


@pytest.mark.slow
def test_saturated_generator_marks_run(simulator: Any, tmp_path: Path) -> None:
    sim = _turbo(simulator)
    run_dir = tmp_path / "run"
    locustfile = REPO / "tests" / "locust" / "burning_locustfile.py"
    result = run_locust(sim.openai_base_url, run_dir, "--plan", "rate", "--arrival-qpm", "1200", "--arrival", "constant", "-t", "3s", locustfile=locustfile)
    assert result.returncode in (0, 1), result.stderr[-3000:]

    run_info = read_json(run_dir / "run.json")
    generator = run_info["generator"]
    assert run_info["generator_behind"] is True, generator
    assert generator["late"] / generator["dispatched"] > 0.5, generator
    assert "generator fell behind" in result.stderr
    health = [line for line in (run_dir / "health-local.jsonl").read_text().splitlines() if line]
    assert len(health) >= 2

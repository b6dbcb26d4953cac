"""Verdicts, reasons and recommendations on synthetic runs whose truth is known."""

from __future__ import annotations

from pathlib import Path

import pytest

from ptu_verify.analysis import AnalysisOptions, Prices, analyze_run
from ptu_verify.analysis.policy import load_policy
from ptu_verify.analysis.synthetic import (
    SyntheticDeployment,
    SyntheticLoad,
    write_synthetic_run,
)
from ptu_verify.errors import InputError


def checks_by_name(summary) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {check.name: check.status for check in summary.checks}


def stage(summary, label: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    return next(entry for entry in summary.stages if entry["label"] == label)


def test_healthy_deployment_passes(tmp_path: Path) -> None:
    summary = analyze_run(write_synthetic_run(tmp_path))

    assert summary.verdict == "pass"
    assert summary.exit_code == 0
    assert checks_by_name(summary)["capacity_delivered"] == "pass"
    assert checks_by_name(summary)["no_early_throttling"] == "pass"
    assert summary.capacity["effective_tpm"] == 200_000
    assert summary.capacity["binding_limit"] == "tpm"
    top = stage(summary, "100%")
    assert top["throttled_share"] == 0.0
    assert top["achieved_tpm"] == pytest.approx(200_000, rel=0.01)
    assert top["utilization"] == pytest.approx(1.0, rel=0.01)
    # One request in six is above capacity at 120 % of it.
    assert stage(summary, "120%")["throttled_share"] == pytest.approx(1 / 6)
    assert summary.sustained_tpm["ci_low"] < summary.sustained_tpm["value"] < summary.sustained_tpm["ci_high"]
    assert summary.recommendation["action"] is None


def test_throttling_at_70_percent_fails(tmp_path: Path) -> None:
    summary = analyze_run(write_synthetic_run(tmp_path, SyntheticDeployment(capacity_factor=0.7)))

    assert summary.verdict == "fail"
    assert summary.exit_code == 1
    statuses = checks_by_name(summary)
    assert statuses["capacity_delivered"] == "fail"
    assert statuses["no_early_throttling"] == "fail"
    assert summary.reasons[0].startswith("Under-delivers: 140,")
    assert "of 200,000 TPM (70.0 %)" in summary.reasons[0]
    assert "stage 80%" in summary.reasons[1]
    assert stage(summary, "80%")["throttled_share"] == pytest.approx(1 - 0.7 / 0.8)
    assert stage(summary, "50%")["throttled_share"] == 0.0
    assert summary.overall["throttle_onset"]["stage"] == "80%"
    assert summary.overall["throttle_onset"]["offered_fraction"] == pytest.approx(0.8)


def test_ttft_objective_fails_at_three_times_ttft(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("latency:\n  ttft_p95_max_s: 1.0\n  speed_p50_min_tps: 40\n", encoding="utf-8")
    slow = analyze_run(write_synthetic_run(tmp_path / "slow", SyntheticDeployment(ttft_factor=3.0)), AnalysisOptions(policy_path=policy))
    fast = analyze_run(write_synthetic_run(tmp_path / "fast"), AnalysisOptions(policy_path=policy))

    assert slow.verdict == "fail"
    assert checks_by_name(slow)["latency_ttft_p95"] == "fail"
    assert checks_by_name(slow)["latency_speed_p50"] == "pass"
    assert checks_by_name(slow)["capacity_delivered"] == "pass"
    assert any("exceeds the objective 1 s" in reason for reason in slow.reasons)
    assert fast.verdict == "pass"
    assert checks_by_name(fast)["latency_ttft_p95"] == "pass"


def test_over_provisioned_deployment_scales_down(tmp_path: Path) -> None:
    run_dir = write_synthetic_run(tmp_path, SyntheticDeployment(ptu=16))
    options = AnalysisOptions(target_tpm=150_000, prices=Prices(ptu_per_hour=20.0))
    summary = analyze_run(run_dir, options)

    recommendation = summary.recommendation
    assert summary.verdict == "pass"
    assert recommendation["action"] == "scale_down"
    # 150,000 TPM / 25,000 per PTU = 6 PTU, rounded up to the purchase unit of 8.
    assert recommendation["ptu_recommended"] == 8
    assert recommendation["ptu_delta"] == -8
    assert recommendation["utilization_at_target_deployed"] == pytest.approx(150_000 / 400_000)
    assert recommendation["utilization_at_target_recommended"] == pytest.approx(150_000 / 200_000)
    assert recommendation["cost_before"]["ptu_cost"] == pytest.approx(43_200 * 16 * 20 / 60)
    assert recommendation["cost_after"]["ptu_cost"] == pytest.approx(43_200 * 8 * 20 / 60)


def test_under_provisioned_target_scales_up(tmp_path: Path) -> None:
    summary = analyze_run(write_synthetic_run(tmp_path), AnalysisOptions(target_tpm=300_000, headroom=0.2))

    assert summary.recommendation["action"] == "scale_up"
    # 300,000 × 1.2 / 25,000 = 14.4 → 15 PTU → 16 in units of 8.
    assert summary.recommendation["ptu_recommended"] == 16
    assert summary.recommendation["ptu_delta"] == 8


def test_qpm_limit_binds_for_short_requests(tmp_path: Path) -> None:
    # 500 tokens per request: 200 QPM × 500 = 100,000 TPM, below the 200,000 TPM limit.
    deployment = SyntheticDeployment(input_tokens=400, output_tokens=100)
    summary = analyze_run(write_synthetic_run(tmp_path, deployment), AnalysisOptions(target_qpm=190))

    assert summary.capacity["binding_limit"] == "qpm"
    assert summary.capacity["effective_tpm"] == pytest.approx(100_000, rel=0.01)
    assert summary.verdict == "pass"
    assert summary.recommendation["action"] == "keep"
    assert summary.recommendation["binding_limit"] == "qpm"
    assert summary.recommendation["target_tpm"] == pytest.approx(190 * summary.capacity["tokens_per_request"])


def test_trace_plan_sizes_for_observed_demand(tmp_path: Path) -> None:
    load = SyntheticLoad(fractions=(0.3, 0.3), plan_kind="trace")
    summary = analyze_run(write_synthetic_run(tmp_path, SyntheticDeployment(ptu=16), load), AnalysisOptions())

    assert summary.recommendation["target_source"] == "trace"
    assert summary.recommendation["target_tpm"] == pytest.approx(0.3 * 400_000, rel=0.02)
    assert summary.recommendation["action"] == "scale_down"


def test_cpu_saturated_generator_is_inconclusive(tmp_path: Path) -> None:
    summary = analyze_run(write_synthetic_run(tmp_path, load=SyntheticLoad(cpu_percent=97.0)))

    assert summary.verdict == "inconclusive"
    assert summary.exit_code == 3
    assert checks_by_name(summary)["generator_health"] == "inconclusive"
    assert "fell behind" in summary.reasons[0]


def test_late_dispatches_make_failure_inconclusive(tmp_path: Path) -> None:
    run_dir = write_synthetic_run(tmp_path, SyntheticDeployment(capacity_factor=0.7), SyntheticLoad(late_share=0.05))
    summary = analyze_run(run_dir)

    assert summary.verdict == "inconclusive"
    assert summary.health["late_dropped_share"] == pytest.approx(0.05, abs=0.02)


def test_plan_below_capacity_is_inconclusive(tmp_path: Path) -> None:
    summary = analyze_run(write_synthetic_run(tmp_path, load=SyntheticLoad(fractions=(0.5, 0.8))))

    assert summary.verdict == "inconclusive"
    assert checks_by_name(summary)["capacity_delivered"] == "inconclusive"
    assert "never reached capacity" in summary.reasons[0]


def test_short_stages_are_inconclusive_unless_policy_allows(tmp_path: Path) -> None:
    run_dir = write_synthetic_run(tmp_path / "run", load=SyntheticLoad(stage_s=40.0, warmup_s=10.0))
    policy = tmp_path / "demo.toml"
    policy.write_text("[data]\nmin_successful_requests = 10\n", encoding="utf-8")

    strict = analyze_run(run_dir)
    relaxed = analyze_run(run_dir, AnalysisOptions(policy_path=policy))

    assert strict.verdict == "inconclusive"
    assert checks_by_name(strict)["enough_data"] == "inconclusive"
    assert "50%: 42 successful requests (need 100)" in strict.reasons[0]
    assert relaxed.verdict == "pass"


def test_partial_run_is_inconclusive(tmp_path: Path) -> None:
    summary = analyze_run(write_synthetic_run(tmp_path), AnalysisOptions(partial=True))

    assert summary.partial
    assert summary.verdict == "inconclusive"
    assert checks_by_name(summary)["run_complete"] == "inconclusive"


def test_model_and_ptu_override_run_json(tmp_path: Path) -> None:
    summary = analyze_run(write_synthetic_run(tmp_path), AnalysisOptions(model="qwen-plus", ptu=16))

    assert summary.capacity["tpm"] == 400_000
    assert summary.verdict == "fail"
    assert "of 400,000 TPM" in summary.reasons[0]


@pytest.mark.parametrize(
    ("text", "suffix", "message"),
    [
        ("capacity:\n  min_delivered_fraction: high\n", ".yaml", "capacity.min_delivered_fraction must be a number"),
        ("speed:\n  x: 1\n", ".yaml", "unknown section 'speed'"),
        ("[data]\nmin_requests = 5\n", ".toml", "unknown key 'data.min_requests'"),
        ("[throttling]\nmax_throttled_share = 5\n", ".toml", "is a share between 0 and 1"),
        ("[data]\nmin_successful_requests = 2.5\n", ".toml", "must be a whole number"),
        ("[data\n", ".toml", "cannot be parsed"),
    ],
)
def test_invalid_policy_is_rejected(tmp_path: Path, text: str, suffix: str, message: str) -> None:
    run_dir = write_synthetic_run(tmp_path / "run", load=SyntheticLoad(fractions=(1.0,)))
    policy = tmp_path / f"policy{suffix}"
    policy.write_text(text, encoding="utf-8")

    with pytest.raises(InputError) as error:
        analyze_run(run_dir, AnalysisOptions(policy_path=policy))
    assert message in error.value.message


def test_missing_run_directory_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        analyze_run(tmp_path / "missing")
    with pytest.raises(InputError, match="No records"):
        analyze_run(tmp_path)


def test_under_delivery_notes_sizing_assumption(tmp_path: Path) -> None:
    run_dir = write_synthetic_run(tmp_path, SyntheticDeployment(capacity_factor=0.7))
    summary = analyze_run(run_dir, AnalysisOptions(target_tpm=150_000))

    assert summary.overall["peak_window_tpm"] >= summary.sustained_tpm["value"]
    notes = summary.note_texts()
    assert any("catalog's 25,000 TPM per PTU; this deployment delivered 17,5" in note for note in notes), notes


def test_policy_compare_section_is_left_to_compare(tmp_path: Path) -> None:
    run_dir = write_synthetic_run(tmp_path / "run", load=SyntheticLoad(fractions=(1.0,)))
    policy = tmp_path / "policy.toml"
    policy.write_text("[compare]\nconfidence = 0.9\n\n[throttling]\nmax_throttled_share = 0.02\n", encoding="utf-8")

    loaded = load_policy(policy)
    assert loaded.throttling.max_throttled_share == 0.02
    summary = analyze_run(run_dir, AnalysisOptions(policy_path=policy))
    assert summary.exit_code in (0, 1, 3)

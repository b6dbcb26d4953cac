"""Runs cut short, records with lines removed and out-of-range policy values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptu_verify.analysis import AnalysisOptions, analyze_run
from ptu_verify.analysis.policy import load_policy
from ptu_verify.analysis.synthetic import SyntheticDeployment, SyntheticLoad, effective_capacity_tpm, write_synthetic_run
from ptu_verify.errors import InputError
from ptu_verify.report import write_reports
from ptu_verify.report.console import format_console_summary

LOAD = SyntheticLoad()


def cut_run(run_dir: Path, keep_until_s: float, *, partial: bool, stop_reason: str | None) -> Path:
    """Write a healthy synthetic run, then keep only the records started before ``keep_until_s``."""
    write_synthetic_run(run_dir, load=LOAD)
    path = run_dir / "records.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if json.loads(line)["started_at"] < LOAD.start_at + keep_until_s]
    assert 0 < len(kept) < len(lines)
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    info.update({"partial": partial, "stop_reason": stop_reason, "ended_at": LOAD.start_at + keep_until_s})
    (run_dir / "run.json").write_text(json.dumps(info), encoding="utf-8")
    return run_dir


def test_max_duration_stop_is_inconclusive(tmp_path: Path) -> None:
    # The stages are 120 s with 30 s warm-up: stage 80% is cut after 60 s of its 90 s measured span.
    run_dir = cut_run(tmp_path, LOAD.stage_s + 90.0, partial=True, stop_reason="max-duration reached")

    # The orchestrator saw no Ctrl-C, so it passes partial=False; run.json must still win.
    summary = analyze_run(run_dir, AnalysisOptions(partial=False))

    assert summary.verdict == "inconclusive"
    assert summary.exit_code == 3
    assert summary.partial and summary.to_dict()["run"]["partial"] is True
    statuses = {check.name: check.status for check in summary.checks}
    assert statuses["capacity_delivered"] != "fail"
    assert statuses["run_complete"] == "inconclusive"
    assert any("max-duration reached" in reason for reason in summary.reasons)
    assert "The run is partial: it stopped before its plan ended (max-duration reached)." in summary.note_texts()
    assert summary.run["stages_not_reached"] == ["100%", "120%"]
    assert [stage["label"] for stage in summary.stages] == ["50%", "80%"]
    cut = summary.stages[1]
    assert cut["cut_short"] is True
    assert cut["duration_s"] == pytest.approx(60.0, abs=1.0)
    # Divided by the 60 s measured, not the 90 s planned, the cut stage achieves what it was offered.
    assert cut["achieved_tpm"] == pytest.approx(0.8 * effective_capacity_tpm(SyntheticDeployment()), rel=0.03)
    assert summary.stages[0]["cut_short"] is False


def test_truncated_records_do_not_fail(tmp_path: Path) -> None:
    run_dir = cut_run(tmp_path, 2 * LOAD.stage_s + 60.0, partial=False, stop_reason="plan completed")

    summary = analyze_run(run_dir)

    assert summary.verdict != "fail"
    assert summary.run["stages_not_reached"] == ["120%"]
    top = next(stage for stage in summary.stages if stage["label"] == "100%")
    assert top["cut_short"] is True
    assert top["utilization"] == pytest.approx(1.0, rel=0.03)
    assert any("stages not reached: 120%" in reason for reason in summary.reasons)


def test_complete_run_has_no_cut_stage(tmp_path: Path) -> None:
    summary = analyze_run(write_synthetic_run(tmp_path))

    assert summary.verdict == "pass"
    assert summary.run["stages_not_reached"] == []
    assert not any(stage["cut_short"] for stage in summary.stages)


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("capacity:\n  min_delivered_fraction: 1.5\n", "capacity.min_delivered_fraction", "1.5"),
        ("capacity:\n  min_delivered_fraction: 0\n", "capacity.min_delivered_fraction", "0"),
        ("confidence:\n  level: 1.0\n", "confidence.level", "1.0"),
        ("confidence:\n  level: 0\n", "confidence.level", "0"),
    ],
)
def test_out_of_range_policy_rejected(tmp_path: Path, text: str, key: str, value: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(InputError) as raised:
        load_policy(path)

    message = str(raised.value)
    assert str(path) in message
    assert key in message
    assert value in message
    assert "range" in message


def test_policy_range_edges_accepted(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("capacity:\n  min_delivered_fraction: 1.0\nconfidence:\n  level: 0.99\n", encoding="utf-8")

    policy = load_policy(path)

    assert policy.capacity.min_delivered_fraction == 1.0
    assert policy.confidence.level == 0.99


def test_qpm_bound_capacity_label(tmp_path: Path) -> None:
    # 88 tokens per request: 8 PTU of qwen-plus buys 200,000 TPM and 200 QPM, so QPM binds at 17,600 TPM.
    deployment = SyntheticDeployment(input_tokens=60, output_tokens=28, max_tokens=64)
    run_dir = write_synthetic_run(tmp_path, deployment, SyntheticLoad(fractions=(0.5, 1.0), stage_s=90.0))
    summary = analyze_run(run_dir)

    # The synthetic token counts jitter, so the observed tokens per request is near, not at, 88.
    assert summary.capacity["binding_limit"] == "qpm"
    tokens = summary.capacity["tokens_per_request"]
    console = format_console_summary(summary)
    expected = f"Capacity for this workload: {200 * tokens:,.0f} TPM (200 QPM × {tokens:.1f} tokens/request; QPM binds."
    assert expected in console
    assert "buys 200,000 TPM / 200 QPM" in console
    english = write_reports(summary, run_dir, lang="en")["verdict.html"].read_text(encoding="utf-8")
    assert "Capacity for this workload" in english
    assert "Purchased capacity" not in english
    assert "200,000 TPM / 200 QPM" in english
    chinese = write_reports(summary, run_dir, lang="zh")["verdict.html"].read_text(encoding="utf-8")
    assert "本负载下的容量" in chinese
    assert "200,000 TPM / 200 QPM" in chinese


def test_tpm_bound_capacity_label(tmp_path: Path) -> None:
    summary = analyze_run(write_synthetic_run(tmp_path, load=SyntheticLoad(fractions=(0.5, 1.0), stage_s=90.0)))

    assert "Purchased capacity: 200,000 TPM (TPM binds." in format_console_summary(summary)


def test_short_stage_burst_note(tmp_path: Path) -> None:
    # A deployment that lets 120 % through for 20 s, as a rested 60 s limiter window does.
    burst = SyntheticDeployment(capacity_factor=1.3)
    short = analyze_run(write_synthetic_run(tmp_path / "short", burst, SyntheticLoad(fractions=(1.2,), stage_s=20.0, warmup_s=0.0)))
    long = analyze_run(write_synthetic_run(tmp_path / "long", burst, SyntheticLoad(fractions=(1.2,), stage_s=90.0, warmup_s=0.0)))

    assert short.stages[0]["utilization"] > 1.0
    assert any("rested window admits a burst" in note and "--burst-credit" in note for note in short.note_texts())
    assert not any("rested window" in note for note in long.note_texts())

"""``ptu-verify history`` on hand-written summaries, and escaping in the compare and history pages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ptu_verify.run.compare import compare_runs
from ptu_verify.run.history import collect_history
from ptu_verify.run.render import render_compare_html

T0 = 1_700_000_000.0


def write_summary(run_dir: Path, *, started_at: float, sustained_tpm: float, ttft_p95_s: float, verdict: str = "pass", code: str = "qwen-plus-d824b8ad") -> Path:
    run_dir.mkdir(parents=True)
    stages: list[dict[str, Any]] = [
        {"label": f"step{index}", "offered_fraction": fraction, "achieved_tpm": min(fraction, 1.0) * sustained_tpm,
         "throttled_share": max(fraction - 1.0, 0.0), "ttft_p50_s": ttft_p95_s / 2, "ttft_p95_s": ttft_p95_s * fraction, "speed_p50_tps": 60.0}
        for index, fraction in enumerate((0.5, 1.0, 1.25), start=1)
    ]  # fmt: skip
    summary = {
        "schema": "ptu-verify/summary-v1",
        "verdict": verdict,
        "capacity": {"tpm": 200_000, "effective_tpm": 200_000.0},
        "sustained_tpm": {"value": sustained_tpm, "ci_low": sustained_tpm * 0.97, "ci_high": sustained_tpm * 1.03},
        "stages": stages,
        "run": {"run_id": run_dir.name, "started_at": started_at, "deployment_code": code, "model": "qwen-plus-2025-04-28", "ptu": 8,
                "workload": "chat", "plan": "step", "simulated": False, "partial": False},
    }  # fmt: skip
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def test_history_orders_runs_by_start(tmp_path: Path) -> None:
    write_summary(tmp_path / "reports" / "b", started_at=T0 + 86_400, sustained_tpm=180_000, ttft_p95_s=0.8)
    write_summary(tmp_path / "reports" / "a", started_at=T0, sustained_tpm=198_000, ttft_p95_s=0.6)
    history = collect_history([tmp_path / "reports"])
    assert [Path(point.run.run_dir).name for point in history.points] == ["a", "b"]
    first = history.points[0]
    assert first.reference_stage == "step2"
    assert first.ttft_p95_s == 0.6
    assert first.delivered_fraction == 198_000 / 200_000
    assert first.sustained_tpm_ci_low == 198_000 * 0.97


def test_history_command_writes_pages(tmp_path: Path, run_cli: Any) -> None:
    write_summary(tmp_path / "reports" / "a", started_at=T0, sustained_tpm=198_000, ttft_p95_s=0.6)
    write_summary(tmp_path / "reports" / "b", started_at=T0 + 86_400, sustained_tpm=150_000, ttft_p95_s=0.9, verdict="fail")
    (tmp_path / "reports" / "not-a-run").mkdir()
    result = run_cli("history", str(tmp_path / "reports"), "--out", str(tmp_path / "out"))

    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "198,000" in lines[2]
    assert "PASS" in lines[2]
    assert "150,000" in lines[3]
    assert "FAIL" in lines[3]
    assert "75.0 %" in lines[3]
    page = (tmp_path / "out" / "history.html").read_text()
    assert page.count("<svg") == 4
    assert "<script" not in page
    data = json.loads((tmp_path / "out" / "history.json").read_text())
    assert data["schema"] == "ptu-verify/history-v1"
    assert len(data["runs"]) == 2


def test_history_skips_run_without_summary(tmp_path: Path, run_cli: Any) -> None:
    write_summary(tmp_path / "a", started_at=T0, sustained_tpm=198_000, ttft_p95_s=0.6)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "run.json").write_text("{}")
    result = run_cli("history", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0
    assert "Skipped" in result.stdout
    assert "analyse the run first" in result.stdout


def test_history_without_runs_exits_2(tmp_path: Path, run_cli: Any) -> None:
    (tmp_path / "empty").mkdir()
    result = run_cli("history", str(tmp_path / "empty"))
    assert result.exit_code == 2
    assert "No analysed run found" in result.stderr


def test_history_page_escapes_text(tmp_path: Path, run_cli: Any) -> None:
    write_summary(tmp_path / "<b>x</b>", started_at=T0, sustained_tpm=198_000, ttft_p95_s=0.6, code="<script>alert(1)</script>")
    result = run_cli("history", str(tmp_path / "<b>x</b>"), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0
    page = (tmp_path / "out" / "history.html").read_text()
    assert "<b>x</b>" not in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page


def write_run(run_dir: Path, label: str, workload: str) -> Path:
    run_dir.mkdir(parents=True)
    stage = {"label": label, "start_at": T0, "measure_start_at": T0 + 1, "end_at": T0 + 31, "offered_tpm": 1000.0}
    records = [
        {"started_at": T0 + 1 + index * 0.5, "outcome": "ok", "ttft_s": 0.3, "gen_speed_tps": 50.0, "input_tokens": 10, "output_tokens": 5}
        for index in range(60)
    ]
    (run_dir / "run.json").write_text(json.dumps({"workload": workload, "plan": "step", "deployment_code": "<i>code</i>"}))
    (run_dir / "plan.json").write_text(json.dumps({"plan": "step", "stages": [stage]}))
    (run_dir / "records.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    return run_dir


def test_compare_page_escapes_text(tmp_path: Path) -> None:
    label = "<img src=x onerror=alert(1)>"
    result = compare_runs(write_run(tmp_path / "a", label, "chat"), write_run(tmp_path / "b", label, "chat"))
    page = render_compare_html(result)
    assert "<img src=x" not in page
    assert "<i>code</i>" not in page
    assert "&lt;i&gt;code&lt;/i&gt;" in page
    assert "<script" not in page
    assert "within noise" in page

"""verdict.html, summary.json, junit.xml and the analyze command."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

import pytest

from ptu_verify.analysis import AnalysisOptions, analyze_run
from ptu_verify.analysis.synthetic import (
    SyntheticDeployment,
    SyntheticLoad,
    write_synthetic_run,
)
from ptu_verify.i18n import set_language
from ptu_verify.report import write_reports
from ptu_verify.report.charts import svg_line_chart
from ptu_verify.report.console import format_console_summary

HOSTILE = "<script>alert(1)</script>"


class PageScan(HTMLParser):
    """Collects the attributes and tags that matter for a self-contained page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.tags: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "script":
            self.scripts += 1
        for name, value in attrs:
            if name in ("src", "href", "xlink:href", "action") and value:
                self.links.append(value)


def scan(page: str) -> PageScan:
    parser = PageScan()
    parser.feed(page)
    parser.close()
    return parser


@pytest.fixture(scope="module")
def failing_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_run(tmp_path_factory.mktemp("fail"), SyntheticDeployment(capacity_factor=0.7), SyntheticLoad(failure_share=0.02))


def test_html_is_self_contained_with_charts(failing_run: Path) -> None:
    paths = write_reports(analyze_run(failing_run), failing_run, lang="en")
    page = paths["verdict.html"].read_text(encoding="utf-8")
    parsed = scan(page)

    assert parsed.scripts == 0
    assert not [link for link in parsed.links if not link.startswith("#")]
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", page, re.IGNORECASE)
    assert "@import" not in page
    assert not re.search(r"url\(\s*[\"']?(?!#)", page)
    assert parsed.tags.count("svg") == 7
    assert 'class="banner fail"' in page
    assert ">SIMULATED<" in page
    assert "Under-delivers: 137,681 of 200,000 TPM" in page
    assert '<html lang="en">' in page


def test_html_renders_in_chinese(failing_run: Path) -> None:
    summary = analyze_run(failing_run)
    page = write_reports(summary, failing_run, lang="zh")["verdict.html"].read_text(encoding="utf-8")

    assert '<html lang="zh-CN">' in page
    assert "预置吞吐单元验证" in page
    assert "未通过" in page
    assert "容量不足" in page
    assert "扩缩容建议" in page
    scan(page)


def test_every_check_detail_is_translated(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("latency:\n  ttft_p95_max_s: 1.0\n  speed_p50_min_tps: 40\n", encoding="utf-8")
    runs = [
        write_synthetic_run(tmp_path / "a", SyntheticDeployment(capacity_factor=0.7), SyntheticLoad(stage_s=40, warmup_s=10)),
        write_synthetic_run(tmp_path / "b", SyntheticDeployment(ttft_factor=3.0), SyntheticLoad(cpu_percent=97.0)),
        write_synthetic_run(tmp_path / "c", load=SyntheticLoad(fractions=(0.95, 1.0), late_share=0.05)),
        write_synthetic_run(tmp_path / "d", load=SyntheticLoad(fractions=(0.5,))),
    ]
    set_language("zh")
    for run_dir in runs:
        summary = analyze_run(run_dir, AnalysisOptions(policy_path=policy, partial=True))
        for check in summary.checks:
            assert re.search(r"[\u4e00-\u9fff]", check.detail), f"{check.name}: {check.detail}"
        for note in summary.note_texts():
            assert re.search(r"[\u4e00-\u9fff]", note), note


def test_hostile_text_is_escaped(tmp_path: Path) -> None:
    run_dir = write_synthetic_run(tmp_path, load=SyntheticLoad(workload=HOSTILE, variants=(HOSTILE, "long"), failure_share=0.05, failure_message=HOSTILE))
    run_json = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    run_json["workload"] = HOSTILE
    run_json["deployment_code"] = '"><img src=x onerror=alert(1)>'
    (run_dir / "run.json").write_text(json.dumps(run_json), encoding="utf-8")
    plan = json.loads((run_dir / "plan.json").read_text(encoding="utf-8"))
    plan["stages"][0]["label"] = HOSTILE
    (run_dir / "plan.json").write_text(json.dumps(plan), encoding="utf-8")

    paths = write_reports(analyze_run(run_dir), run_dir, lang="en")
    page = paths["verdict.html"].read_text(encoding="utf-8")
    parsed = scan(page)

    assert HOSTILE not in page
    assert "<img" not in page
    assert parsed.scripts == 0
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "img" not in parsed.tags


def test_secrets_stay_out_of_reports(failing_run: Path) -> None:
    paths = write_reports(analyze_run(failing_run), failing_run, lang="en")

    for name in ("verdict.html", "summary.json", "junit.xml"):
        assert "sk-test-fake-0000" not in paths[name].read_text(encoding="utf-8")
    summary = json.loads(paths["summary.json"].read_text(encoding="utf-8"))
    assert summary["run"]["command"] == ["ptu-verify", "run", "--api-key", "***"]


def test_summary_json_schema(failing_run: Path) -> None:
    path = write_reports(analyze_run(failing_run, AnalysisOptions(target_tpm=100_000)), failing_run, lang="en")["summary.json"]
    summary = json.loads(path.read_text(encoding="utf-8"))

    assert summary["schema"] == "ptu-verify/summary-v1"
    assert summary["verdict"] == "fail"
    assert summary["reasons"]
    assert {"name", "status", "detail"} <= set(summary["checks"][0])
    assert {"tpm", "qpm", "ptu", "model"} <= set(summary["capacity"])
    assert {"value", "ci_low", "ci_high"} <= set(summary["sustained_tpm"])
    stage_keys = {"label", "offered_tpm", "achieved_tpm", "achieved_qpm", "throttled_share", "ttft_p50_s", "ttft_p95_s", "speed_p50_tps", "requests"}
    assert all(stage_keys <= set(stage) for stage in summary["stages"])
    assert summary["recommendation"]["action"] == "keep"
    assert {"action", "ptu_recommended", "ptu_delta"} <= set(summary["recommendation"])
    assert summary["failures"][0]["count"] > 0


def test_junit_has_one_case_per_check(failing_run: Path) -> None:
    summary = analyze_run(failing_run, AnalysisOptions(partial=True))
    path = write_reports(summary, failing_run, lang="en")["junit.xml"]
    root = ElementTree.parse(path).getroot()

    cases = root.findall(".//testcase")
    assert [case.get("name") for case in cases] == [check.name for check in summary.checks]
    failed = {case.get("name") for case in cases if case.find("failure") is not None}
    skipped = {case.get("name") for case in cases if case.find("skipped") is not None}
    assert failed == {"capacity_delivered", "no_early_throttling"}
    assert "run_complete" in skipped


def test_console_summary_lists_stages(failing_run: Path) -> None:
    text = format_console_summary(analyze_run(failing_run, AnalysisOptions(target_tpm=300_000)))

    assert text.startswith("Verdict: FAIL [SIMULATED]")
    assert "Under-delivers: 137,681 of 200,000 TPM" in text
    assert re.search(r"^80% +160,000 +137,681", text, re.MULTILINE)
    assert "Scale up by 8 PTU to 16 PTU" in text


def test_chart_svg_has_no_namespace_urls() -> None:
    svg = svg_line_chart([0, 1, 2], {"a": [1, None, 3]}, title="t", hlines={"cap": 2}, salt='x"y')

    assert svg.startswith("<svg ")
    assert "http" not in svg
    assert 'aria-label="x&quot;y"' in svg


@pytest.mark.parametrize(
    ("deployment", "load", "code"),
    [
        (SyntheticDeployment(), SyntheticLoad(), 0),
        (SyntheticDeployment(capacity_factor=0.7), SyntheticLoad(), 1),
        (SyntheticDeployment(), SyntheticLoad(cpu_percent=97.0), 3),
    ],
)
def test_analyze_command_exit_codes(run_cli, tmp_path: Path, deployment: SyntheticDeployment, load: SyntheticLoad, code: int) -> None:  # type: ignore[no-untyped-def]
    run_dir = write_synthetic_run(tmp_path, deployment, load)
    result = run_cli("analyze", str(run_dir), "--minute-windows")

    assert result.exit_code == code, result.stderr
    assert f"Report: {run_dir / 'verdict.html'}" in result.stdout
    assert (run_dir / "junit.xml").exists()
    assert json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))["minute_windows"]


def test_analyze_command_in_chinese_with_prices(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run_dir = write_synthetic_run(tmp_path, SyntheticDeployment(ptu=16))
    result = run_cli("analyze", str(run_dir), "--lang", "zh", "--target-tpm", "150000", "--ptu-price", "20")

    assert result.exit_code == 0, result.stderr
    assert "结论:通过" in result.stdout
    assert "缩容 8 PTU,至 8 PTU" in result.stdout
    assert "每月 PTU 费用" in (run_dir / "verdict.html").read_text(encoding="utf-8")


def test_analyze_command_bad_input(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    missing = run_cli("analyze", str(tmp_path / "nope"))
    run_dir = write_synthetic_run(tmp_path / "run", load=SyntheticLoad(fractions=(1.0,)))
    bad_ptu = run_cli("analyze", str(run_dir), "--ptu", "0")
    bad_target = run_cli("analyze", str(run_dir), "--target-tpm", "-5")

    assert missing.exit_code == 2
    assert "does not exist" in missing.stderr
    assert bad_ptu.exit_code == 2
    assert "--ptu N" in bad_ptu.stderr
    assert bad_target.exit_code == 2


def test_naive_rate_is_labelled_without_plan(tmp_path: Path) -> None:
    run_dir = write_synthetic_run(tmp_path, load=SyntheticLoad(fractions=(1.0,)), write_plan=False)
    page = write_reports(analyze_run(run_dir), run_dir, lang="en")["verdict.html"].read_text(encoding="utf-8")

    assert "Naive QPM (all successes ÷ first start to last end)" in page
    assert "steady state (between first and last completion)" in page

"""Rendering of comparisons and histories: console tables and self-contained HTML pages.

The HTML pages are jinja2 templates with autoescaping; every text is translated and every number
formatted here, so the templates only place values. Charts are inline SVG from ptu_verify.report.charts.
"""

from __future__ import annotations

from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from ..cli.common import render_table
from ..i18n import _, get_language
from ..report.charts import svg_bar_chart
from .compare import CompareResult, MetricComparison
from .history import History, HistoryPoint

__all__ = [
    "metric_names",
    "format_metric_value",
    "format_compare_table",
    "format_history_table",
    "render_compare_html",
    "render_history_html",
    "write_compare_html",
    "write_history_html",
]


def metric_names() -> dict[str, str]:
    """Return the display name of each compared metric in the active language."""
    return {
        "achieved_tpm": _("achieved TPM"),
        "ttft_p50_s": _("TTFT p50"),
        "ttft_p95_s": _("TTFT p95"),
        "speed_p50_tps": _("generation speed p50"),
        "throttled_share": _("429 share"),
    }


def _status_names() -> dict[str, str]:
    return {
        "regression": _("REGRESSION"),
        "improvement": _("improved"),
        "unchanged": _("within noise"),
        "insufficient_data": _("too few data"),
    }


def format_metric_value(metric: str, value: float | None, *, signed: bool = False) -> str:
    """Format one metric value with its unit: TPM as a whole number, seconds, tokens/s or a percentage.

    ``signed`` marks a difference: it gets a sign, and a difference of shares is in percentage points.
    """
    if value is None:
        return "-"
    sign = "+" if signed and value > 0 else ""
    if metric == "throttled_share" and signed:
        return f"{sign}{value * 100:.1f} pp"
    if metric == "achieved_tpm":
        return f"{sign}{value:,.0f}"
    if metric.endswith("_s"):
        return f"{sign}{value:.3f} s"
    if metric == "speed_p50_tps":
        return f"{sign}{value:.1f} tok/s"
    if metric == "throttled_share":
        return f"{sign}{value * 100:.1f} %"
    return f"{sign}{value:g}"


def _change(comparison: MetricComparison) -> str:
    if comparison.change_kind == "relative" and comparison.relative_change is not None:
        return f"{comparison.relative_change * 100:+.1f} %"
    if comparison.difference is None:
        return "-"
    return format_metric_value(comparison.metric, comparison.difference, signed=True)


def _interval(comparison: MetricComparison) -> str:
    if comparison.difference_ci_low is None or comparison.difference_ci_high is None:
        return "-"
    low = format_metric_value(comparison.metric, comparison.difference_ci_low, signed=True)
    high = format_metric_value(comparison.metric, comparison.difference_ci_high, signed=True)
    return f"[{low}, {high}]"


def _compare_rows(result: CompareResult) -> list[dict[str, str]]:
    names, statuses = metric_names(), _status_names()
    rows = []
    for stage in result.stages:
        for comparison in stage.metrics:
            rows.append(
                {
                    "stage": stage.label,
                    "metric": names[comparison.metric],
                    "baseline": format_metric_value(comparison.metric, comparison.baseline),
                    "current": format_metric_value(comparison.metric, comparison.current),
                    "change": _change(comparison),
                    "interval": _interval(comparison),
                    "status": comparison.status,
                    "status_text": statuses[comparison.status],
                }
            )
    return rows


def _banner(result: CompareResult) -> str:
    if result.regression_count:
        return "regression"
    if result.judged_count:
        return "ok"
    return "inconclusive"


def _verdict_line(result: CompareResult) -> str:
    if result.regression_count:
        return _("REGRESSION: {count} stage metrics got worse beyond the noise.").format(count=result.regression_count)
    if not result.judged_count:
        return _("INCONCLUSIVE: no stage metric had enough data for a meaningful interval. Run longer stages.")
    unjudged = sum(len(stage.metrics) for stage in result.stages) - result.judged_count
    if unjudged:
        return _("No regression among the {judged} stage metrics with enough data; {unjudged} had too few data to judge.").format(
            judged=result.judged_count, unjudged=unjudged
        )
    return _("No regression: every difference is within the noise or below the minimum change.")


def format_compare_table(result: CompareResult) -> str:
    """Render the comparison as a console table followed by the verdict line."""
    headers = [_("stage"), _("metric"), _("baseline"), _("current"), _("change"), _("difference interval"), _("status")]
    rows = [[row["stage"], row["metric"], row["baseline"], row["current"], row["change"], row["interval"], row["status_text"]] for row in _compare_rows(result)]
    lines = [render_table(headers, rows), ""]
    lines += [_("Note: {note}").format(note=note) for note in result.notes]
    if result.unmatched_baseline_stages or result.unmatched_current_stages:
        lines.append(
            _("Stages only in one run (not compared): baseline {base}; current {current}.").format(
                base=", ".join(result.unmatched_baseline_stages) or "-", current=", ".join(result.unmatched_current_stages) or "-"
            )
        )
    lines.append(_verdict_line(result))
    return "\n".join(lines)


def _timestamp(value: float | None) -> str:
    if value is None:
        return "-"
    return datetime.fromtimestamp(value, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _run_label(point: HistoryPoint) -> str:
    return Path(point.run.run_dir).name


def format_history_table(history: History) -> str:
    """Render the history as a console table, oldest run first."""
    headers = [_("started"), _("run"), _("verdict"), _("sustained TPM"), _("of capacity"), _("TTFT p95"), _("speed p50"), _("429 share")]
    rows = []
    for point in history.points:
        verdict = (point.verdict or "-").upper() + (" *" if point.run.simulated else "")
        rows.append(
            [
                _timestamp(point.run.started_at),
                _run_label(point),
                verdict,
                format_metric_value("achieved_tpm", point.sustained_tpm),
                "-" if point.delivered_fraction is None else f"{point.delivered_fraction * 100:.1f} %",
                format_metric_value("ttft_p95_s", point.ttft_p95_s),
                format_metric_value("speed_p50_tps", point.speed_p50_tps),
                format_metric_value("throttled_share", point.throttled_share),
            ]
        )
    lines = [render_table(headers, rows)]
    if any(point.run.simulated for point in history.points):
        lines.append(_("* against the built-in simulator"))
    for path, reason in history.skipped:
        lines.append(_("Skipped {path}: {reason}").format(path=path, reason=reason))
    return "\n".join(lines)


def _environment() -> jinja2.Environment:
    templates = resources.files("ptu_verify.report") / "templates"
    loader = jinja2.DictLoader(
        {name: (templates / name).read_text(encoding="utf-8") for name in ("compare.html.j2", "history.html.j2")}
    )
    return jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)


def _side_context(side: Any) -> dict[str, str]:
    return {
        "dir": side.run_dir,
        "started": _timestamp(side.started_at),
        "target": f"{side.model or '-'} × {side.ptu or '-'} PTU ({side.deployment_code or '-'})",
        "badges": " ".join(text for flag, text in ((side.simulated, _("SIMULATED")), (side.partial, _("PARTIAL"))) if flag),
    }


def _compare_charts(result: CompareResult) -> list[str]:
    names = metric_names()
    labels = [stage.label for stage in result.stages]
    charts = []
    for metric, name in names.items():
        by_stage = [next(item for item in stage.metrics if item.metric == metric) for stage in result.stages]
        charts.append(
            svg_bar_chart(
                labels,
                {_("baseline"): [item.baseline for item in by_stage], _("current"): [item.current for item in by_stage]},
                title=name,
                xlabel=_("stage"),
                percent=metric == "throttled_share",
                salt=f"compare-{metric}",
            )
        )
    return charts


def render_compare_html(result: CompareResult) -> str:
    """Return compare.html: verdict, both runs, the per-stage table and one chart per metric."""
    settings = result.settings
    context = {
        "lang": "zh-CN" if get_language() == "zh" else "en",
        "title": _("ptu-verify regression check"),
        "regression": bool(result.regression_count),
        "banner": _banner(result),
        "verdict_text": _verdict_line(result),
        "baseline_title": _("Baseline"),
        "current_title": _("Current"),
        "baseline": _side_context(result.baseline),
        "current": _side_context(result.current),
        "run_headers": [_("run directory"), _("started"), _("target")],
        "table_title": _("Per stage"),
        "headers": [_("stage"), _("metric"), _("baseline"), _("current"), _("change"), _("difference interval"), _("status")],
        "rows": _compare_rows(result),
        "notes": result.notes,
        "unmatched": _("Stages only in one run (not compared): baseline {base}; current {current}.").format(
            base=", ".join(result.unmatched_baseline_stages) or "-", current=", ".join(result.unmatched_current_stages) or "-"
        )
        if result.unmatched_baseline_stages or result.unmatched_current_stages
        else "",
        "method_title": _("Method"),
        "method": _(
            "Each stage is measured from the raw records of both runs. The difference interval is the difference "
            "± Student's t × its block-bootstrap standard error ({resamples} resamples of {block_s:g} s blocks, seed {seed}), "
            "at {confidence:.0%} confidence for all {tests} stage metrics together (Bonferroni). A metric regresses only "
            "when the whole interval lies on the worse side and the change reaches its minimum: {minimums}."
        ).format(
            resamples=settings.resamples,
            block_s=settings.block_s,
            seed=settings.seed,
            confidence=settings.confidence,
            tests=len(result.stages) * len(metric_names()),
            minimums=", ".join(
                f"{metric_names()[name]} {value * 100:g} %" if name != "throttled_share" else f"{metric_names()[name]} {value * 100:g} pp"
                for name, value in settings.min_change.items()
            ),
        ),
        "charts_title": _("Baseline and current per stage"),
        "charts": _compare_charts(result),
        "footer": _("Written by ptu-verify compare. Exit code {code}: 1 means a regression, 3 that no metric had enough data.").format(code=result.exit_code),
    }
    return _environment().get_template("compare.html.j2").render(context)


def _history_charts(history: History) -> list[str]:
    # Bars over run numbers (#1, #2, …, as in the table): a line chart's x axis would show fractional runs.
    runs = [f"#{index}" for index in range(1, len(history.points) + 1)]
    points = history.points
    capacities = {point.capacity_tpm for point in points if point.capacity_tpm is not None}
    hlines = {_("purchased capacity"): capacities.pop()} if len(capacities) == 1 else None
    return [
        svg_bar_chart(
            runs,
            {_("sustained TPM"): [point.sustained_tpm for point in points]},
            title=_("Sustained TPM"),
            xlabel=_("run"),
            hlines=hlines,
            salt="history-tpm",
        ),
        svg_bar_chart(
            runs,
            {_("TTFT p50"): [point.ttft_p50_s for point in points], _("TTFT p95"): [point.ttft_p95_s for point in points]},
            title=_("Time to first token at the highest stage within capacity (s)"),
            xlabel=_("run"),
            salt="history-ttft",
        ),
        svg_bar_chart(
            runs,
            {_("generation speed p50"): [point.speed_p50_tps for point in points]},
            title=_("Generation speed at the highest stage within capacity (tokens/s)"),
            xlabel=_("run"),
            salt="history-speed",
        ),
        svg_bar_chart(
            runs,
            {_("429 share"): [point.throttled_share for point in points]},
            title=_("429 share at the highest stage within capacity"),
            xlabel=_("run"),
            percent=True,
            salt="history-throttled",
        ),
    ]


def _tpm_interval(point: HistoryPoint) -> str:
    if point.sustained_tpm_ci_low is None or point.sustained_tpm_ci_high is None:
        return "-"
    return f"{point.sustained_tpm_ci_low:,.0f} – {point.sustained_tpm_ci_high:,.0f}"


def render_history_html(history: History) -> str:
    """Return history.html: the trend charts and a table of the runs, numbered as on the charts' x axis."""
    verdicts = {"pass": _("PASS"), "fail": _("FAIL"), "inconclusive": _("INCONCLUSIVE")}
    rows = []
    for index, point in enumerate(history.points, start=1):
        rows.append(
            {
                "index": str(index),
                "started": _timestamp(point.run.started_at),
                "run": point.run.run_dir,
                "target": f"{point.run.model or '-'} × {point.run.ptu or '-'} PTU",
                "verdict": point.verdict or "",
                "verdict_text": verdicts.get(point.verdict or "", point.verdict or "-") + (" · " + _("SIMULATED") if point.run.simulated else ""),
                "sustained": format_metric_value("achieved_tpm", point.sustained_tpm),
                "interval": _tpm_interval(point),
                "delivered": "-" if point.delivered_fraction is None else f"{point.delivered_fraction * 100:.1f} %",
                "ttft_p95": format_metric_value("ttft_p95_s", point.ttft_p95_s),
                "speed": format_metric_value("speed_p50_tps", point.speed_p50_tps),
                "throttled": format_metric_value("throttled_share", point.throttled_share),
            }
        )
    context = {
        "lang": "zh-CN" if get_language() == "zh" else "en",
        "title": _("ptu-verify history"),
        "summary": _("{count} runs from {first} to {last}.").format(
            count=len(history.points), first=_timestamp(history.points[0].run.started_at), last=_timestamp(history.points[-1].run.started_at)
        ),
        "charts_title": _("Trend"),
        "charts": _history_charts(history),
        "table_title": _("Runs"),
        "headers": ["#", _("started"), _("run directory"), _("target"), _("verdict"), _("sustained TPM"), _("confidence interval"), _("of capacity"), _("TTFT p95"), _("speed p50"), _("429 share")],
        "rows": rows,
        "skipped": [_("Skipped {path}: {reason}").format(path=path, reason=reason) for path, reason in history.skipped],
        "footer": _("Latency and 429 figures are from the highest stage offered at or below capacity in each run."),
    }
    return _environment().get_template("history.html.j2").render(context)


def write_compare_html(result: CompareResult, out_dir: Path) -> Path:
    """Write compare.html into ``out_dir`` and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "compare.html"
    path.write_text(render_compare_html(result), encoding="utf-8")
    return path


def write_history_html(history: History, out_dir: Path) -> Path:
    """Write history.html into ``out_dir`` and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "history.html"
    path.write_text(render_history_html(history), encoding="utf-8")
    return path


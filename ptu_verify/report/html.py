"""verdict.html: one self-contained page (inline CSS and SVG) built from a Summary.

All numbers are formatted and all labels translated here; the template only loops over the
prepared rows. Jinja2 autoescaping is on, so text from records, servers and profiles is escaped.
"""

from __future__ import annotations

import datetime as dt
from importlib import resources
from typing import Any

import jinja2
import markupsafe

from .. import __version__
from ..analysis import Summary
from ..i18n import _, get_language
from .charts import svg_bar_chart, svg_histogram, svg_line_chart
from .console import action_text, capacity_texts

__all__ = ["build_context", "render_html"]


def _number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _percent(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f} %"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _timestamp(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return dt.datetime.fromtimestamp(value, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _check_names() -> dict[str, str]:
    return {
        "capacity_delivered": _("Capacity delivered"),
        "no_early_throttling": _("No early throttling"),
        "latency_ttft_p95": _("TTFT p95 objective"),
        "latency_speed_p50": _("Generation speed p50 objective"),
        "enough_data": _("Enough data"),
        "generator_health": _("Load generator kept up"),
        "run_complete": _("Run complete"),
    }


def _status_texts() -> dict[str, str]:
    return {"pass": _("PASS"), "fail": _("FAIL"), "inconclusive": _("INCONCLUSIVE"), "skipped": _("SKIPPED")}


def _key_figures(data: dict[str, Any]) -> list[dict[str, str]]:
    capacity, sustained, overall = data["capacity"], data["sustained_tpm"], data["overall"]
    interval = "-"
    if sustained.get("ci_low") is not None:
        interval = _("{level} CI {low} – {high}").format(
            level=_percent(sustained["level"], 0), low=_number(sustained["ci_low"]), high=_number(sustained["ci_high"])
        )
    recommendation_figure = {"label": _("Recommendation"), "value": action_text(data["recommendation"]), "note": ""}
    if data["recommendation"].get("action") is None:
        # Without a target the action text is a hint, which reads better as the small note.
        recommendation_figure.update(value="-", note=action_text(data["recommendation"]))
    capacity_label, capacity_detail = capacity_texts(capacity)
    utilization = sustained["value"] / capacity["effective_tpm"] if sustained.get("value") is not None and capacity["effective_tpm"] else None
    return [
        {"label": capacity_label, "value": _("{tpm} TPM").format(tpm=_number(capacity["effective_tpm"])), "note": capacity_detail},
        {"label": _("Sustained achieved TPM"), "value": _number(sustained.get("value")), "note": interval},
        {"label": _("Utilization at the plateau"), "value": _percent(utilization), "note": _("achieved ÷ purchased capacity")},
        {"label": _("429 share (measured)"), "value": _percent(overall.get("throttled_share")), "note": _("{count} of {total} attempts").format(count=overall["throttled"], total=overall["requests"])},
        {"label": _("TTFT p95 (measured)"), "value": _("{value} s").format(value=_seconds(overall["ttft_s"]["p95"])), "note": _("p50 {value} s").format(value=_seconds(overall["ttft_s"]["p50"]))},
        {"label": _("Generation speed p50"), "value": _("{value} tokens/s").format(value=_number(overall["speed_tps"]["p50"], 1)), "note": ""},
        recommendation_figure,
    ]


def _stage_rows(data: dict[str, Any]) -> list[list[str]]:
    rows = []
    for stage in data["stages"]:
        rows.append(
            [
                stage["label"],
                _number(stage["offered_tpm"]),
                _percent(stage["offered_fraction"], 0),
                _number(stage["achieved_tpm"]),
                _number(stage["achieved_input_tpm"]),
                _number(stage["achieved_output_tpm"]),
                _number(stage["achieved_cached_tpm"]),
                _number(stage["achieved_reasoning_tpm"]),
                _number(stage["achieved_qpm"], 1),
                _percent(stage["utilization"]),
                _percent(stage["throttled_share"]),
                _percent(stage["failed_share"]),
                _seconds(stage["ttft_s"]["p50"]),
                _seconds(stage["ttft_s"]["p95"]),
                _seconds(stage["ttft_s"]["p99"]),
                _seconds(stage["ttfa_s"]["p95"]),
                _seconds(stage["e2e_s"]["p95"]),
                _number(stage["speed_tps"]["p50"], 1),
                _percent(stage["reserved_unused_share"]),
                f'{stage["ok_requests"]} / {stage["requests"]}',
                _number(stage["measured_s"]),
            ]
        )
    return rows


def _stage_headers() -> list[str]:
    return [
        _("Stage"),
        _("Offered TPM"),
        _("Offered share"),
        _("Achieved TPM"),
        _("Input TPM"),
        _("Output TPM"),
        _("Cached TPM"),
        _("Reasoning TPM"),
        _("QPM"),
        _("Utilization"),
        _("429 share"),
        _("Other failures"),
        _("TTFT p50 s"),
        _("TTFT p95 s"),
        _("TTFT p99 s"),
        _("TTFA p95 s"),
        _("E2E p95 s"),
        _("Speed p50 tok/s"),
        _("Reserved unused"),
        _("OK / attempts"),
        _("Measured s"),
    ]


def _stage_charts(data: dict[str, Any]) -> list[str]:
    stages = data["stages"]
    labels = [stage["label"] for stage in stages]
    capacity_line = {capacity_texts(data["capacity"])[0]: data["capacity"]["effective_tpm"]}
    return [
        svg_bar_chart(
            labels,
            {_("Offered TPM"): [stage["offered_tpm"] for stage in stages], _("Achieved TPM"): [stage["achieved_tpm"] for stage in stages]},
            title=_("Achieved vs offered TPM by stage"),
            ylabel=_("tokens per minute"),
            hlines=capacity_line,
            salt="tpm-by-stage",
        ),
        svg_bar_chart(
            labels,
            {_("429 share"): [stage["throttled_share"] for stage in stages]},
            title=_("429 share by stage"),
            percent=True,
            salt="throttled-by-stage",
        ),
        svg_bar_chart(
            labels,
            {name: [stage["ttft_s"][key] for stage in stages] for name, key in (("p50", "p50"), ("p90", "p90"), ("p95", "p95"), ("p99", "p99"))},
            title=_("TTFT percentiles by stage"),
            ylabel=_("seconds"),
            salt="ttft-by-stage",
        ),
        svg_histogram(
            data["speed_histogram"]["edges"],
            data["speed_histogram"]["counts"],
            title=_("Generation speed distribution (measured, successful requests)"),
            xlabel=_("tokens per second"),
            ylabel=_("requests"),
            salt="speed-histogram",
        ),
    ]


def _time_charts(data: dict[str, Any]) -> list[str]:
    stages = data["stages"]
    capacity_line = {capacity_texts(data["capacity"])[0]: data["capacity"]["effective_tpm"]}
    series = data["time_series"]
    origin = series["origin_at"][0]
    bin_s = series["bin_s"][0]
    minutes = [value / 60.0 for value in series["t_s"]]
    boundary_minutes = [(stage["start_at"] - origin) / 60.0 for stage in stages[1:]]
    return [
        svg_line_chart(
            minutes,
            {_("429 share"): series["throttled_share"]},
            title=_("429 share over time ({seconds} s windows)").format(seconds=f"{bin_s:g}"),
            xlabel=_("minutes since the first request"),
            vlines=boundary_minutes,
            percent=True,
            salt="throttled-over-time",
        ),
        svg_line_chart(
            minutes,
            {_("Achieved TPM"): series["achieved_tpm"]},
            title=_("Achieved TPM over time ({seconds} s windows)").format(seconds=f"{bin_s:g}"),
            xlabel=_("minutes since the first request"),
            hlines=capacity_line,
            vlines=boundary_minutes,
            salt="tpm-over-time",
        ),
        svg_line_chart(
            minutes,
            {_("Achieved QPM"): series["achieved_qpm"], _("Attempted QPM"): series["attempted_qpm"]},
            title=_("QPM over time ({seconds} s windows)").format(seconds=f"{bin_s:g}"),
            xlabel=_("minutes since the first request"),
            hlines={_("Purchased QPM"): data["capacity"]["qpm"]},
            vlines=boundary_minutes,
            salt="qpm-over-time",
        ),
    ]


def _charts(data: dict[str, Any]) -> list[dict[str, str]]:
    # The SVG comes from matplotlib, which escapes the text it draws, so it is inserted as markup.
    return [{"svg": markupsafe.Markup(chart)} for chart in [*_stage_charts(data), *_time_charts(data)]]


def _variant_rows(data: dict[str, Any]) -> list[list[str]]:
    return [
        [
            row["workload"],
            row["variant"],
            f'{row["ok_requests"]} / {row["requests"]}',
            _percent(row["throttled_share"]),
            _number(row["input_tokens_mean"]),
            _number(row["output_tokens_mean"]),
            _percent(row["token_share"]),
            _seconds(row["ttft_p50_s"]),
            _seconds(row["ttft_p95_s"]),
            _number(row["speed_p50_tps"], 1),
        ]
        for row in data["variants"]
    ]


def _failure_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "cells": [row["outcome"], row["error_code"] or "-", ", ".join(map(str, row["status_codes"])) or "-", str(row["count"]), _percent(row["share"])],
            "messages": row["sample_messages"],
        }
        for row in data["failures"]
    ]


def _health_rows(health: dict[str, Any]) -> list[list[str]]:
    if not health.get("samples"):
        return [[_("Samples"), "0"]]
    return [
        [_("Samples"), str(health["samples"])],
        [_("Workers"), str(health["workers"])],
        [_("CPU p95 (worst worker)"), _percent((health["cpu_p95_worst_worker_percent"] or 0) / 100.0, 0)],
        [_("CPU max"), _percent((health["cpu_max_percent"] or 0) / 100.0, 0)],
        [_("Event-loop lag p95"), _("{value} s").format(value=_seconds(health["loop_lag_s"]["p95"]))],
        [_("Late dispatches"), _percent(health["late_share"], 2)],
        [_("Dropped dispatches"), _percent(health["dropped_share"], 2)],
    ]


def _overall_rows(data: dict[str, Any]) -> list[list[str]]:
    overall = data["overall"]
    from_plan = overall["rate_method"] == "measured_span"
    method = _("measured span") if from_plan else _("steady state (between first and last completion)")
    by_kind = ", ".join(f"{kind} {count}" for kind, count in overall["throttled_by_kind"].items()) or "-"
    onset_data = overall.get("throttle_onset")
    onset = "-"
    if onset_data:
        onset = _("{stage}: {share} 429s at {offered} of capacity").format(
            stage=onset_data["stage"], share=_percent(onset_data["throttled_share"]), offered=_percent(onset_data["offered_fraction"], 0)
        )
    by_outcome = ", ".join(f"{outcome} {count}" for outcome, count in overall["failed_by_outcome"].items()) or "-"
    rows = [
        [_("Achieved TPM (input / output / total)"), f'{_number(overall["achieved_input_tpm"])} / {_number(overall["achieved_output_tpm"])} / {_number(overall["achieved_tpm"])}'],
        [_("Cached and reasoning TPM (already in the totals)"), f'{_number(overall["achieved_cached_tpm"])} / {_number(overall["achieved_reasoning_tpm"])}'],
        [_("Achieved QPM"), _number(overall["achieved_qpm"], 1)],
        [_("Rate method"), method],
        [_("Peak achieved TPM in one time-series window (burst)"), _number(overall["peak_window_tpm"])],
        [_("Tokens per successful request"), _number(overall["tokens_per_request"])],
        [_("429 by limit"), by_kind],
        [_("429 onset (first stage above the limit)"), onset],
        [_("429 share of first attempts (without retries)"), _percent(overall["first_attempt_throttled_share"])],
        [_("Retried attempts"), str(overall["retried_attempts"])],
        [_("User requests that succeeded (retries included)"), _percent(overall["user_success_share"])],
        [_("Other failures by outcome"), by_outcome],
        [_("Reserved but unused tokens per minute (max_tokens − output)"), f'{_number(overall["reserved_unused_tpm"])} ({_percent(overall["reserved_unused_share"])})'],
        [_("Share of successes with estimated tokens"), _percent(overall["tokens_estimated_share"])],
        [_("TTFA p50 / p95"), f'{_seconds(overall["ttfa_s"]["p50"])} / {_seconds(overall["ttfa_s"]["p95"])} s'],
        [_("E2E p50 / p95 / max"), f'{_seconds(overall["e2e_s"]["p50"])} / {_seconds(overall["e2e_s"]["p95"])} / {_seconds(overall["e2e_s"]["max"])} s'],
    ]
    if not from_plan:
        # Across the stages of a plan these would span the gaps between measured windows, so they
        # are shown only for a run without a plan (one window).
        rows[4:4] = [
            [_("Steady-state QPM (completions)"), _number(overall["steady_state_qpm"], 1)],
            [_("Naive QPM (all successes ÷ first start to last end)"), _number(overall["naive_qpm"], 1)],
        ]
    return rows


def _recommendation_rows(recommendation: dict[str, Any]) -> list[list[str]]:
    if recommendation.get("action") is None:
        return []
    sources = {"options": _("given with --target-tpm / --target-qpm"), "trace": _("observed demand of the trace replay")}
    rows = [
        [_("Target"), _("{tpm} TPM, {qpm} QPM ({source})").format(tpm=_number(recommendation["target_tpm"]), qpm=_number(recommendation["target_qpm"], 1), source=sources.get(recommendation["target_source"], "-"))],
        [_("Headroom"), _percent(recommendation["headroom"], 0)],
        [_("Deployed PTU"), str(recommendation["ptu_deployed"])],
        [_("Recommended PTU"), str(recommendation["ptu_recommended"])],
        [_("Binding limit"), str(recommendation["binding_limit"]).upper()],
        [_("Utilization at target, deployed"), _percent(recommendation["utilization_at_target_deployed"])],
        [_("Utilization at target, recommended"), _percent(recommendation["utilization_at_target_recommended"])],
    ]
    for label, cost in ((_("Monthly PTU cost, deployed"), recommendation.get("cost_before")), (_("Monthly PTU cost, recommended"), recommendation.get("cost_after"))):
        if cost and cost.get("ptu_cost") is not None:
            rows.append([label, _number(cost["ptu_cost"], 2)])
    after = recommendation.get("cost_after")
    if after and after.get("token_cost") is not None:
        rows.append([_("Monthly pay-per-token cost at target"), _number(after["token_cost"], 2)])
    return rows


def _metadata_rows(run: dict[str, Any]) -> list[list[str]]:
    rows = [
        [_("Run directory"), str(run.get("run_dir", "-"))],
        [_("Run id"), str(run.get("run_id", "-"))],
        [_("Model"), str(run.get("model"))],
        [_("PTU"), str(run.get("ptu"))],
        [_("Deployment code"), str(run.get("deployment_code", "-"))],
        [_("API"), f'{run.get("api", "-")} ({run.get("transport", "-")})'],
        [_("Host"), str(run.get("host", "-"))],
        [_("Workload"), str(run.get("workload", "-"))],
        [_("Plan"), f'{run.get("plan_kind") or run.get("plan") or "-"} ({run.get("arrival") or "-"})'],
        [_("Started"), _timestamp(run.get("started_at"))],
        [_("Ended"), _timestamp(run.get("ended_at"))],
        [_("Command"), " ".join(run.get("command") or []) or "-"],
        [_("Versions"), ", ".join(f"{name} {version}" for name, version in (run.get("versions") or {}).items()) or "-"],
    ]
    return rows


def _minute_rows(data: dict[str, Any]) -> list[list[str]]:
    return [
        [_timestamp(row["minute_at"]), str(row["requests"]), str(row["ok_requests"]), str(row["throttled"]), _number(row["input_tokens"]), _number(row["output_tokens"]), _number(row["total_tokens"])]
        for row in data.get("minute_windows") or []
    ]


def build_context(summary: Summary) -> dict[str, Any]:
    """Prepare every string the template shows, in the active language."""
    data = summary.to_dict()
    status_texts = _status_texts()
    check_names = _check_names()
    language = get_language()
    return {
        "lang": "zh-CN" if language == "zh" else "en",
        "title": _("PTU verification: {model}, {ptu} PTU").format(model=data["capacity"]["model"], ptu=data["capacity"]["ptu"]),
        "verdict": data["verdict"],
        "verdict_text": status_texts[data["verdict"]],
        "simulated": summary.simulated,
        "partial": summary.partial,
        "simulated_text": _("SIMULATED"),
        "simulated_hint": _("The target was the built-in simulator, not a Bailian deployment."),
        "partial_text": _("PARTIAL"),
        "partial_hint": _("The run was interrupted or lost a worker."),
        "reasons": data["reasons"],
        "key_figures": _key_figures(data),
        "checks_title": _("Checks"),
        "checks_headers": [_("Check"), _("Status"), _("Detail")],
        "checks": [
            {"name": check_names.get(check["name"], check["name"]), "status": check["status"], "status_text": status_texts[check["status"]], "detail": check["detail"]}
            for check in data["checks"]
        ],
        "recommendation_title": _("Recommendation"),
        "recommendation_text": action_text(data["recommendation"]),
        "recommendation_rows": _recommendation_rows(data["recommendation"]),
        "charts_title": _("Charts"),
        "charts": _charts(data),
        "stages_title": _("Stages (measured part only)"),
        "stage_headers": _stage_headers(),
        "stage_rows": _stage_rows(data),
        "overall_title": _("Whole measured run"),
        "overall_rows": _overall_rows(data),
        "variants_title": _("Breakdown by workload variant"),
        "variant_headers": [_("Workload"), _("Variant"), _("OK / attempts"), _("429 share"), _("Input tokens"), _("Output tokens"), _("Token share"), _("TTFT p50 s"), _("TTFT p95 s"), _("Speed p50 tok/s")],
        "variant_rows": _variant_rows(data),
        "failures_title": _("Failures (whole run, warm-up included)"),
        "failure_headers": [_("Outcome"), _("Error code"), _("HTTP status"), _("Count"), _("Share")],
        "failure_rows": _failure_rows(data),
        "no_failures": _("No failed requests."),
        "sample_messages_label": _("Sample messages"),
        "health_title": _("Load generator health"),
        "health_rows": _health_rows(data["generator_health"]),
        "minute_title": _("Per-minute windows (UTC-aligned, by start time)"),
        "minute_headers": [_("Minute"), _("Attempts"), _("OK"), _("429"), _("Input tokens"), _("Output tokens"), _("Total tokens")],
        "minute_rows": _minute_rows(data),
        "notes_title": _("Notes"),
        "notes": data["notes"],
        "metadata_title": _("Run metadata"),
        "metadata_rows": _metadata_rows(data["run"]),
        "footer": _("Generated by ptu-verify {version} at {time}. Percentiles are exact over all workers' samples.").format(
            version=__version__, time=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        ),
    }


def _environment() -> jinja2.Environment:
    template_text = resources.files("ptu_verify.report").joinpath("templates/verdict.html.j2").read_text(encoding="utf-8")
    environment = jinja2.Environment(loader=jinja2.DictLoader({"verdict.html.j2": template_text}), autoescape=True, undefined=jinja2.StrictUndefined)
    return environment


def render_html(summary: Summary) -> str:
    """Render verdict.html in the active language."""
    return _environment().get_template("verdict.html.j2").render(**build_context(summary))

"""From a run directory to a Summary: metrics per stage, checks, verdict and recommendation."""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..catalog import Capacity, ModelSpec, load_catalog
from ..errors import ExitCode, InputError
from ..i18n import _
from ..sizing import MAX_HEADROOM, Prices
from .load import RunData, load_run, stage_list
from .metrics import (
    Prepared,
    StageWindow,
    bootstrap_rate_ci,
    failure_samples,
    generator_health,
    group_metrics,
    minute_windows,
    prepare,
    speed_histogram,
    time_series,
    variant_breakdown,
)
from .policy import Policy, load_policy
from .recommend import recommend
from .verdict import Check, Verdict, combine_checks, evaluate_checks

__all__ = ["SUMMARY_SCHEMA", "AnalysisOptions", "Summary", "analyze_run"]

logger = logging.getLogger(__name__)

SUMMARY_SCHEMA = "ptu-verify/summary-v1"
_EXIT_CODES = {"pass": ExitCode.PASS, "fail": ExitCode.FAIL, "inconclusive": ExitCode.INCONCLUSIVE}
# Command-line values after these flags, and anything shaped like an API key, are hidden in reports.
_SECRET_FLAG = re.compile(r"(key|token|secret|password|authorization)", re.IGNORECASE)
# Length of the per-minute limiter window; shorter stages can read above capacity.
_LIMITER_WINDOW_S = 60.0
_SECRET_VALUE = re.compile(r"\bsk-[A-Za-z0-9_-]{6,}")


@dataclass(frozen=True)
class AnalysisOptions:
    """Inputs of ``analyze_run`` besides the run directory; model and ptu default to run.json."""

    model: str | None = None
    ptu: int | None = None
    catalog_path: Path | None = None
    policy_path: Path | None = None
    target_tpm: float | None = None
    target_qpm: float | None = None
    headroom: float = 0.0
    prices: Prices = field(default_factory=Prices)
    partial: bool | None = None  # True marks the run partial; None or False defers to run.json
    minute_windows: bool = False


@dataclass
class Summary:
    """The analysis result; ``to_dict()`` is the content of summary.json (schema ptu-verify/summary-v1)."""

    verdict: Verdict
    checks: list[Check]
    capacity: dict[str, Any]
    sustained_tpm: dict[str, Any]
    stages: list[dict[str, Any]]
    overall: dict[str, Any]
    recommendation: dict[str, Any]
    time_series: dict[str, Any]
    minute_windows: list[dict[str, Any]] | None
    variants: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    health: dict[str, Any]
    speed_histogram: dict[str, list[float]]
    run: dict[str, Any]
    notes: list[tuple[str, dict[str, Any]]]
    policy: dict[str, Any]
    input: dict[str, Any]

    @property
    def exit_code(self) -> int:
        """0 pass, 1 fail, 3 inconclusive."""
        return int(_EXIT_CODES[self.verdict])

    @property
    def reasons(self) -> list[str]:
        """Details of the failed checks, then of the inconclusive ones; for a pass, the capacity detail."""
        failed = [check.detail for check in self.checks if check.status == "fail"]
        unsure = [check.detail for check in self.checks if check.status == "inconclusive"]
        if failed or unsure:
            return failed + unsure
        return [check.detail for check in self.checks if check.name == "capacity_delivered"]

    @property
    def simulated(self) -> bool:
        """True when the target was the built-in simulator."""
        return bool(self.run.get("simulated"))

    @property
    def partial(self) -> bool:
        """True when the run was interrupted or lost a worker."""
        return bool(self.run.get("partial"))

    def note_texts(self) -> list[str]:
        """Return the notes in the active language."""
        return [_(template).format(**params) for template, params in self.notes]

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready summary, with texts in the active language and NaN as null."""
        value = {
            "schema": SUMMARY_SCHEMA,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "reasons": self.reasons,
            "checks": [check.as_dict() for check in self.checks],
            "capacity": self.capacity,
            "sustained_tpm": self.sustained_tpm,
            "stages": self.stages,
            "overall": self.overall,
            "recommendation": self.recommendation,
            "time_series": self.time_series,
            "minute_windows": self.minute_windows,
            "variants": self.variants,
            "failures": self.failures,
            "generator_health": self.health,
            "speed_histogram": self.speed_histogram,
            "run": self.run,
            "notes": self.note_texts(),
            "policy": self.policy,
            "input": self.input,
        }
        return _json_ready(value)


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, (np.floating, float)):
        number = float(value)
        return None if math.isnan(number) or math.isinf(number) else number
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _resolve_capacity(data: RunData, options: AnalysisOptions) -> tuple[ModelSpec, int, Capacity]:
    model = options.model or data.run_info.get("model")
    ptu = options.ptu if options.ptu is not None else data.run_info.get("ptu")
    if not model:
        raise InputError(_("{file} names no model. Pass --model MODEL (a version, family or deployment code).").format(file=data.run_dir / "run.json"))
    if isinstance(ptu, bool) or not isinstance(ptu, int) or ptu <= 0:
        raise InputError(_("The PTU count is missing or invalid ({value!r}). Pass --ptu N with the deployed PTU count.").format(value=ptu))
    resolution = load_catalog(options.catalog_path).resolve(str(model))
    return resolution.spec, ptu, resolution.spec.capacity(ptu)


def _sanitize_command(command: Any) -> list[str]:
    if not isinstance(command, list):
        return []
    cleaned: list[str] = []
    hide_next = False
    for argument in map(str, command):
        if hide_next:
            cleaned.append("***")
            hide_next = False
            continue
        flag, equals, _value = argument.partition("=")
        if flag.startswith("-") and _SECRET_FLAG.search(flag):
            if equals:
                cleaned.append(flag + "=***")
            else:
                cleaned.append(argument)
                hide_next = True
            continue
        cleaned.append(_SECRET_VALUE.sub("sk-***", argument))
    return cleaned


def _run_metadata(data: RunData, options: AnalysisOptions, model: str, ptu: int) -> dict[str, Any]:
    info = data.run_info
    # Either source can only add the partial mark. run.json records a max-duration or -t stop,
    # which the orchestrator does not count as an interruption.
    partial = bool(options.partial) or bool(info.get("partial"))
    keys = ("run_id", "deployment_code", "api", "transport", "workload", "plan", "started_at", "ended_at", "host", "versions", "workers")
    meta: dict[str, Any] = {key: info.get(key) for key in keys if key in info}
    host = meta.get("host")
    if isinstance(host, str):
        meta["host"] = re.sub(r"//[^/@]*@", "//", host)
    meta.update(
        {
            "run_dir": str(data.run_dir),
            "model": model,
            "ptu": ptu,
            "simulated": bool(info.get("simulated")),
            "partial": partial,
            "stop_reason": info.get("stop_reason"),
            "command": _sanitize_command(info.get("command")),
            "plan_kind": data.plan.get("plan") if data.plan else None,
            "arrival": data.plan.get("arrival") if data.plan else None,
        }
    )
    return meta


def _stage_entry(window: StageWindow, metrics: dict[str, Any], capacity_tpm: float, capacity_qpm: float, tokens_per_request: float | None) -> dict[str, Any]:
    offered_tpm, source = window.offered_tpm, "plan"
    if offered_tpm is None and window.offered_qpm is not None and tokens_per_request:
        offered_tpm = window.offered_qpm * tokens_per_request
    if offered_tpm is None:
        source = "observed"
        first_attempts_per_min = metrics["first_attempts"] / (window.measured_s / 60.0) if window.measured_s > 0 else None
        if first_attempts_per_min is not None and tokens_per_request:
            offered_tpm = first_attempts_per_min * tokens_per_request
        elif metrics["achieved_tpm"] is not None and metrics["ok_requests"] == metrics["requests"]:
            offered_tpm = metrics["achieved_tpm"]
    achieved = metrics["achieved_tpm"]
    duration_s = window.measured_s
    if not window.from_plan:
        duration_s = max(duration_s, metrics["elapsed_s"])
    return {
        "label": window.label,
        "start_at": window.start_at,
        "measure_start_at": window.measure_start_at,
        "end_at": window.end_at,
        "duration_s": duration_s,
        "offered_tpm": offered_tpm,
        "offered_tpm_source": source,
        "offered_qpm": window.offered_qpm,
        "offered_fraction": offered_tpm / capacity_tpm if offered_tpm is not None and capacity_tpm > 0 else window.fraction_of_capacity,
        "plan_fraction_of_capacity": window.fraction_of_capacity,
        "utilization": achieved / capacity_tpm if achieved is not None and capacity_tpm > 0 else None,
        "utilization_qpm": metrics["achieved_qpm"] / capacity_qpm if metrics["achieved_qpm"] is not None and capacity_qpm > 0 else None,
        "reserved_unused_share": metrics["reserved_unused_tpm"] / capacity_tpm if metrics["reserved_unused_tpm"] is not None and capacity_tpm > 0 else None,
        "ttft_p50_s": metrics["ttft_s"]["p50"],
        "ttft_p95_s": metrics["ttft_s"]["p95"],
        "speed_p50_tps": metrics["speed_tps"]["p50"],
        **metrics,
    }

# A stage counts as cut by the end of the run when its last request started more than this many
# seconds, and more than _CUT_GAPS median inter-start gaps, before its planned end.
_CUT_MIN_S = 2.0
_CUT_GAPS = 3.0


@dataclass(frozen=True)
class _Coverage:
    """The planned stages that the records reach, with cut stages shortened to the span measured."""

    reached: list[tuple[int, StageWindow]]  # (index into prepared.windows, window as measured)
    not_reached: list[str]
    cut: list[str]


def _coverage(prepared: Prepared) -> _Coverage:
    """Drop stages with no measured record and end a stage cut short at its last request start.

    A run stopped early (max-duration, Ctrl-C, lost records) must not count its unreached stages as
    0 TPM nor divide a cut stage's tokens by its full planned length.
    """
    windows = prepared.windows
    if not windows[0].from_plan:
        return _Coverage(list(enumerate(windows)), [], [])
    started = prepared.frame["started_at"].to_numpy()
    finite = started[np.isfinite(started)]
    last_start = float(finite.max()) if finite.size else -math.inf
    reached: list[tuple[int, StageWindow]] = []
    not_reached: list[str] = []
    cut: list[str] = []
    for index, window in enumerate(windows):
        selected = prepared.measured & (prepared.stage_index == index)
        if not selected.any() or last_start < window.measure_start_at:
            not_reached.append(window.label)
            continue
        starts = np.sort(started[selected])
        gap_s = float(np.median(np.diff(starts))) if starts.size > 1 else 0.0
        if window.end_at - last_start > max(_CUT_MIN_S, _CUT_GAPS * gap_s):
            # The next request would have started about one gap after the last one.
            window = replace(window, end_at=min(window.end_at, last_start + gap_s))
            cut.append(window.label)
        reached.append((index, window))
    return _Coverage(reached, not_reached, cut)


def _throttle_onset(stages: list[dict[str, Any]], policy: Policy) -> dict[str, Any] | None:
    """Return the least-offered stage whose 429 share exceeds the policy's limit, or None."""
    limit = policy.capacity.max_throttled_share
    throttled = [stage for stage in stages if stage["offered_fraction"] is not None and (stage["throttled_share"] or 0.0) > limit]
    if not throttled:
        return None
    onset = min(throttled, key=lambda stage: stage["offered_fraction"])
    return {"stage": onset["label"], "offered_fraction": onset["offered_fraction"], "throttled_share": onset["throttled_share"]}


def _sustained(prepared: Prepared, reached: list[tuple[int, StageWindow]], stages: list[dict[str, Any]], policy: Policy) -> dict[str, Any]:
    """Find the highest achieved stage TPM and bootstrap its confidence interval."""
    candidates = [(position, stage) for position, stage in enumerate(stages) if stage["achieved_tpm"] is not None]
    if not candidates:
        return {"value": None, "ci_low": None, "ci_high": None, "stage": None, "level": policy.confidence.level}
    position, stage = max(candidates, key=lambda item: item[1]["achieved_tpm"])
    index, window = reached[position]
    frame = prepared.frame
    selected = (prepared.stage_index == index) & prepared.measured & frame["ok"].to_numpy()
    amounts = frame["total_n"].to_numpy()[selected]
    if window.from_plan:
        times = frame["started_at"].to_numpy()[selected]
        start, end = window.measure_start_at, window.end_at
    else:
        times = frame["ended_at"].to_numpy()[selected]
        finite = np.isfinite(times)
        times, amounts = times[finite], amounts[finite]
        start, end = (float(times.min()), float(times.max())) if times.size else (0.0, 0.0)
    rule = policy.confidence
    low, high = bootstrap_rate_ci(times, amounts, start, end, window_s=rule.window_s, resamples=rule.resamples, level=rule.level, seed=rule.seed)
    return {"value": stage["achieved_tpm"], "ci_low": low, "ci_high": high, "stage": stage["label"], "level": rule.level, "window_s": rule.window_s}


def _notes(data: RunData, overall: dict[str, Any], run: dict[str, Any], stages: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    notes: list[tuple[str, dict[str, Any]]] = []
    estimated = overall.get("tokens_estimated_share")
    if estimated:
        notes.append(
            ("Throughput is partly estimated: {share} of successful requests had no usage from the server and were counted with the Qwen tokenizer.", {"share": f"{estimated * 100:.1f} %"})
        )
    if data.skipped_record_lines:
        notes.append(("{count} unreadable record lines were skipped (usually a truncated last line).", {"count": data.skipped_record_lines}))
    if data.plan is None:
        notes.append(("No plan.json: the run is analysed as one stage, and rates are steady-state completion rates.", {}))
    if run.get("simulated"):
        notes.append(("The target was the built-in simulator, not a Bailian deployment.", {}))
    if run.get("partial") and run.get("stop_reason"):
        notes.append(("The run is partial: it stopped before its plan ended ({reason}).", {"reason": run["stop_reason"]}))
    elif run.get("partial"):
        notes.append(("The run is partial: it was interrupted or lost a worker.", {}))
    if run.get("stages_not_reached"):
        notes.append(("Stages not reached before the run ended, left out of every figure: {stages}.", {"stages": ", ".join(run["stages_not_reached"])}))
    if run.get("stages_cut"):
        notes.append(
            ("Stages cut short by the end of the run, measured over the span they ran: {stages}.", {"stages": ", ".join(run["stages_cut"])})
        )
    for stage in stages:
        # The limiter counts per minute, so a rested window admits a burst above the per-minute rate.
        if stage["duration_s"] < _LIMITER_WINDOW_S and (stage["utilization"] or 0.0) > 1.0:
            notes.append(
                (
                    (
                        "Stage {stage} achieved {share} of capacity over only {duration:.0f} s. Bailian limits per 60 s window, and a "
                        "rested window admits a burst above the per-minute rate, so a stage shorter than a minute can read above "
                        "capacity. Use stages with at least 60 s measured, or the Locust option --burst-credit, which spends that burst in a "
                        "phase left out of the statistics."
                    ),
                    {"stage": stage["label"], "share": f"{stage['utilization'] * 100:.1f} %", "duration": stage["duration_s"]},
                )
            )
    return notes


def analyze_run(run_dir: Path, options: AnalysisOptions | None = None) -> Summary:
    """Read ``run_dir`` and compute the summary; raise InputError for a missing or empty run."""
    started = time.perf_counter()
    options = options or AnalysisOptions()
    if not 0 <= options.headroom <= MAX_HEADROOM:
        raise InputError(
            _("--headroom must be between 0 and {max} (a fraction: 0.2 means 20 %), got {value}.").format(max=MAX_HEADROOM, value=options.headroom)
        )
    data = load_run(Path(run_dir))
    policy = load_policy(options.policy_path)
    spec, ptu, capacity = _resolve_capacity(data, options)
    model = spec.version
    prepared = prepare(data.records, stage_list(data.plan))
    frame = prepared.frame
    measured = frame[prepared.measured]
    from_plan = prepared.windows[0].from_plan
    coverage = _coverage(prepared)
    reached_windows = [window for _index, window in coverage.reached]
    reached_mask = np.isin(prepared.stage_index, [index for index, _window in coverage.reached])

    # Overall figures first: the observed tokens per request sets the QPM-bound capacity.
    # NOTE: a catalog entry that sells input and output TPM separately is compared on its total
    # only; a deployment limited by one side alone would show as under-delivering that total.
    total_span_s = sum(window.measured_s for window in reached_windows)
    overall = group_metrics(frame[prepared.measured & reached_mask], total_span_s, from_plan=from_plan)
    tokens_per_request = overall["tokens_per_request"]
    qpm_bound_tpm = capacity.qpm * tokens_per_request if tokens_per_request else None
    effective_tpm = float(min(capacity.total_tpm, qpm_bound_tpm)) if qpm_bound_tpm is not None else float(capacity.total_tpm)
    binding = "qpm" if qpm_bound_tpm is not None and qpm_bound_tpm < capacity.total_tpm else "tpm"

    stages = []
    measured_stage = prepared.stage_index[prepared.measured]
    for index, window in coverage.reached:
        group = measured[measured_stage == index]
        metrics = group_metrics(group, window.measured_s, from_plan=window.from_plan)
        entry = _stage_entry(window, metrics, effective_tpm, float(capacity.qpm), tokens_per_request)
        entry["cut_short"] = window.label in coverage.cut
        stages.append(entry)
    overall["utilization"] = overall["achieved_tpm"] / effective_tpm if overall["achieved_tpm"] is not None else None
    overall["reserved_unused_share"] = overall["reserved_unused_tpm"] / effective_tpm if overall["reserved_unused_tpm"] is not None else None
    overall["throttle_onset"] = _throttle_onset(stages, policy)
    series = time_series(frame)
    peak = [value for value in series["achieved_tpm"] if value is not None]
    overall["peak_window_tpm"] = max(peak) if peak else None
    overall["offered_tpm_observed"] = overall["first_attempts"] / (total_span_s / 60.0) * tokens_per_request if total_span_s > 0 and tokens_per_request else None
    overall["offered_qpm_observed"] = overall["first_attempts"] / (total_span_s / 60.0) if total_span_s > 0 else None

    health = generator_health(data.health, reached_windows)
    run = _run_metadata(data, options, model, ptu)
    run["stages_not_reached"] = coverage.not_reached
    run["stages_cut"] = coverage.cut
    checks = evaluate_checks(
        stages, effective_tpm, health, policy, partial=run["partial"], stop_reason=run["stop_reason"], not_reached=coverage.not_reached
    )
    verdict = combine_checks(checks)

    recommendation = recommend(
        spec,
        ptu,
        target_tpm=options.target_tpm,
        target_qpm=options.target_qpm,
        headroom=options.headroom,
        prices=options.prices,
        tokens_per_request=tokens_per_request,
        input_share=overall["input_share"],
        observed_offered_tpm=overall["offered_tpm_observed"],
        observed_offered_qpm=overall["offered_qpm_observed"],
        trace_plan=bool(data.plan and data.plan.get("plan") == "trace"),
    )

    summary = Summary(
        verdict=verdict,
        checks=checks,
        capacity={
            "model": model,
            "ptu": ptu,
            "tpm": capacity.total_tpm,
            "qpm": capacity.qpm,
            "input_tpm": capacity.input_tpm,
            "output_tpm": capacity.output_tpm,
            "effective_tpm": effective_tpm,
            "qpm_bound_tpm": qpm_bound_tpm,
            "binding_limit": binding,
            "tokens_per_request": tokens_per_request,
        },
        sustained_tpm=_sustained(prepared, coverage.reached, stages, policy),
        stages=stages,
        overall=overall,
        recommendation=recommendation,
        time_series=series,
        minute_windows=minute_windows(frame) if options.minute_windows else None,
        variants=variant_breakdown(measured, overall["tokens"]["total"]),
        failures=failure_samples(frame),
        health=health,
        speed_histogram=speed_histogram(measured.loc[measured["ok"].to_numpy(), "gen_speed_tps"]),
        run=run,
        notes=[],
        policy=policy.as_dict(),
        input={
            "records": len(frame),
            "measured_records": len(measured),
            "record_files": [path.name for path in data.record_paths],
            "skipped_record_lines": data.skipped_record_lines,
            "skipped_health_lines": data.skipped_health_lines,
            "health_samples": len(data.health),
        },
    )
    summary.notes = _notes(data, overall, run, stages)
    if verdict == "fail" and any(check.name == "capacity_delivered" and check.status == "fail" for check in checks) and recommendation["action"]:
        # The sizing uses the catalog's TPM per PTU, which this deployment did not deliver.
        delivered = summary.sustained_tpm["value"] or 0.0
        summary.notes.append(
            (
                "The recommendation assumes the catalog's {catalog} TPM per PTU; this deployment delivered {delivered} TPM per PTU.",
                {"catalog": f"{capacity.total_tpm / ptu:,.0f}", "delivered": f"{delivered / ptu:,.0f}"},
            )
        )
    logger.info("Analysed %s in %.2f s: verdict %s", run_dir, time.perf_counter() - started, verdict)
    return summary

"""Checks against the policy and the verdict they add up to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..i18n import _
from .policy import Policy

__all__ = ["Check", "CheckStatus", "Verdict", "combine_checks", "evaluate_checks", "fmt_share", "fmt_tpm"]

CheckStatus = Literal["pass", "fail", "inconclusive", "skipped"]
Verdict = Literal["pass", "fail", "inconclusive"]

# Float noise tolerance when a fraction is compared with a threshold such as 1.0 or 0.9.
_EPSILON = 1e-9


@dataclass(frozen=True)
class Check:
    """One verdict check.

    ``template`` is an English message (a msgid of the report catalog) translated only when the
    detail is rendered, so one analysis can be written out in either language.
    """

    name: str
    status: CheckStatus
    template: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def detail(self) -> str:
        """Return the detail in the active language. A list parameter contains (template, params) parts, joined by "; "."""
        params = {
            key: "; ".join(_(part).format(**part_params) for part, part_params in value) if isinstance(value, list) else value
            for key, value in self.params.items()
        }
        return _(self.template).format(**params)

    def as_dict(self) -> dict[str, Any]:
        """Return {name, status, detail}."""
        return {"name": self.name, "status": self.status, "detail": self.detail}


def fmt_tpm(value: float | None) -> str:
    """Format a token rate as a whole number with thousands separators."""
    return "-" if value is None else f"{value:,.0f}"


def fmt_share(value: float | None) -> str:
    """Format a fraction as a percentage with one decimal."""
    return "-" if value is None else f"{value * 100:.1f} %"


def _capacity_check(stages: list[dict[str, Any]], capacity_tpm: float, policy: Policy) -> Check:
    rule = policy.capacity
    target = rule.min_delivered_fraction * capacity_tpm
    measured = [stage for stage in stages if stage["achieved_tpm"] is not None]
    if not measured:
        return Check("capacity_delivered", "inconclusive", "No stage has a measurable achieved TPM (too few successful requests), so the delivered capacity is unknown.")

    unthrottled = [stage for stage in measured if (stage["throttled_share"] or 0.0) <= rule.max_throttled_share + _EPSILON]
    if unthrottled:
        top = max(unthrottled, key=lambda stage: (stage["offered_fraction"] or 0.0, stage["achieved_tpm"]))
        if top["achieved_tpm"] >= target:
            return Check(
                "capacity_delivered",
                "pass",
                "Stage {stage} achieved {achieved} of {capacity} TPM ({share}) with {throttled} 429s.",
                {
                    "stage": top["label"],
                    "achieved": fmt_tpm(top["achieved_tpm"]),
                    "capacity": fmt_tpm(capacity_tpm),
                    "share": fmt_share(top["achieved_tpm"] / capacity_tpm),
                    "throttled": fmt_share(top["throttled_share"]),
                },
            )

    plateau = max(measured, key=lambda stage: stage["achieved_tpm"])
    params = {
        "stage": plateau["label"],
        "achieved": fmt_tpm(plateau["achieved_tpm"]),
        "capacity": fmt_tpm(capacity_tpm),
        "share": fmt_share(plateau["achieved_tpm"] / capacity_tpm),
    }
    if plateau["achieved_tpm"] >= target:
        return Check("capacity_delivered", "pass", "The achieved plateau at stage {stage} reaches {achieved} of {capacity} TPM ({share}).", params)

    peak_offered = max((stage["offered_fraction"] or 0.0) for stage in measured)
    pushed_back = any((stage["throttled_share"] or 0.0) > rule.max_throttled_share for stage in measured)
    if peak_offered + _EPSILON < rule.min_peak_offered_fraction and not pushed_back:
        return Check(
            "capacity_delivered",
            "inconclusive",
            "The plan never reached capacity: the highest stage offered {peak} of capacity and the deployment never throttled.",
            {"peak": fmt_share(peak_offered)},
        )
    return Check("capacity_delivered", "fail", "Under-delivers: {achieved} of {capacity} TPM ({share}) at best, at stage {stage}.", params)


def _early_throttling_check(stages: list[dict[str, Any]], policy: Policy) -> Check:
    rule = policy.throttling
    below = [stage for stage in stages if stage["offered_fraction"] is not None and stage["offered_fraction"] <= rule.max_offered_fraction + _EPSILON]
    if not below:
        return Check("no_early_throttling", "skipped", "No stage offered {limit} of capacity or less.", {"limit": fmt_share(rule.max_offered_fraction)})
    offending = [stage for stage in below if (stage["throttled_share"] or 0.0) > rule.max_throttled_share]
    if not offending:
        return Check(
            "no_early_throttling",
            "pass",
            "No stage at or below {limit} of capacity had more than {share} 429s.",
            {"limit": fmt_share(rule.max_offered_fraction), "share": fmt_share(rule.max_throttled_share)},
        )
    first = min(offending, key=lambda stage: stage["offered_fraction"])
    return Check(
        "no_early_throttling",
        "fail",
        "Early throttling: {throttled} 429s at stage {stage}, offered {offered} of capacity (limit {share} at or below {limit}).",
        {
            "throttled": fmt_share(first["throttled_share"]),
            "stage": first["label"],
            "offered": fmt_share(first["offered_fraction"]),
            "share": fmt_share(rule.max_throttled_share),
            "limit": fmt_share(rule.max_offered_fraction),
        },
    )


def _latency_checks(stages: list[dict[str, Any]], policy: Policy) -> list[Check]:
    rule = policy.latency
    eligible = [
        stage
        for stage in stages
        if stage["offered_fraction"] is not None and stage["offered_fraction"] <= rule.max_offered_fraction + _EPSILON and stage["ok_requests"] > 0
    ]
    checks = []
    objectives = (
        ("latency_ttft_p95", rule.ttft_p95_max_s, "ttft_p95_s", True),
        ("latency_speed_p50", rule.speed_p50_min_tps, "speed_p50_tps", False),
    )
    for name, limit, key, is_maximum in objectives:
        if limit is None:
            continue
        if not eligible:
            checks.append(Check(name, "inconclusive", "No stage with successful requests was offered at most {limit} of capacity.", {"limit": fmt_share(rule.max_offered_fraction)}))
            continue
        values = [(stage, stage[key]) for stage in eligible if stage[key] is not None]
        broken = [(stage, value) for stage, value in values if (value > limit if is_maximum else value < limit)]
        if broken:
            stage, value = broken[0]
            template = "TTFT p95 {value} s at stage {stage} exceeds the objective {limit} s." if is_maximum else "Generation speed p50 {value} tokens/s at stage {stage} is below the objective {limit} tokens/s."
            checks.append(Check(name, "fail", template, {"value": f"{value:.3g}", "stage": stage["label"], "limit": f"{limit:g}"}))
        else:
            template = "TTFT p95 is within {limit} s at every stage up to capacity." if is_maximum else "Generation speed p50 is at least {limit} tokens/s at every stage up to capacity."
            checks.append(Check(name, "pass", template, {"limit": f"{limit:g}"}))
    return checks


# Parts of the enough_data detail, translated with the detail when it is rendered.
_TOO_FEW = "{stage}: {count} successful requests (need {minimum})"
_TOO_SHORT = "{stage}: lasts {duration:.0f} s, less than {factor:g} × its longest request ({longest:.1f} s)"


def _data_check(stages: list[dict[str, Any]], policy: Policy) -> Check:
    rule = policy.data
    problems: list[tuple[str, dict[str, Any]]] = []
    for stage in stages:
        if stage["ok_requests"] < rule.min_successful_requests:
            problems.append(
                (_TOO_FEW, {"stage": stage["label"], "count": stage["ok_requests"], "minimum": rule.min_successful_requests})
            )
        longest = stage["longest_request_s"]
        if longest and stage["duration_s"] < rule.min_duration_per_longest_request * longest:
            problems.append(
                (_TOO_SHORT, {"stage": stage["label"], "duration": stage["duration_s"], "factor": rule.min_duration_per_longest_request, "longest": longest})
            )
    if problems:
        return Check("enough_data", "inconclusive", "Too little data: {problems}.", {"problems": problems})
    return Check("enough_data", "pass", "Every stage has at least {minimum} successful requests and lasts at least {factor:g} × its longest request.", {"minimum": rule.min_successful_requests, "factor": rule.min_duration_per_longest_request})


def _generator_check(health: dict[str, Any], policy: Policy) -> Check:
    rule = policy.generator
    if not health.get("samples"):
        return Check("generator_health", "skipped", "No generator-health samples were recorded.")
    cpu = health.get("cpu_p95_worst_worker_percent")
    late = health.get("late_dropped_share")
    if cpu is not None and cpu >= rule.max_cpu_percent:
        return Check(
            "generator_health",
            "inconclusive",
            "The load generator fell behind: CPU p95 {cpu:.0f} % (limit {limit:.0f} %). Add workers and run again.",
            {"cpu": cpu, "limit": rule.max_cpu_percent},
        )
    if late is not None and late > rule.max_late_dropped_share:
        return Check(
            "generator_health",
            "inconclusive",
            "The load generator fell behind: {share} of dispatches were late or dropped (limit {limit}). Add workers and run again.",
            {"share": fmt_share(late), "limit": fmt_share(rule.max_late_dropped_share)},
        )
    return Check("generator_health", "pass", "The load generator kept its schedule (CPU p95 {cpu}, late or dropped {share}).", {"cpu": "-" if cpu is None else f"{cpu:.0f} %", "share": fmt_share(late)})


def _completion_check(partial: bool, stop_reason: str | None, not_reached: list[str]) -> Check:
    # The stop reason from run.json is an English phrase, kept as written.
    reason: Any = stop_reason or [("interrupted or a worker was lost", {})]
    if partial and not_reached:
        return Check(
            "run_complete",
            "inconclusive",
            "The run ended early ({reason}); stages not reached: {stages}. Capacity is judged only on a full run.",
            {"reason": reason, "stages": ", ".join(not_reached)},
        )
    if partial:
        return Check("run_complete", "inconclusive", "The run ended early ({reason}), so capacity is judged only on a full run.", {"reason": reason})
    if not_reached:
        return Check(
            "run_complete",
            "inconclusive",
            "The records end before the plan does; stages not reached: {stages}. Capacity is judged only on a full run.",
            {"stages": ", ".join(not_reached)},
        )
    return Check("run_complete", "pass", "The run completed.")


def evaluate_checks(
    stages: list[dict[str, Any]],
    capacity_tpm: float,
    health: dict[str, Any],
    policy: Policy,
    *,
    partial: bool,
    stop_reason: str | None = None,
    not_reached: list[str] | None = None,
) -> list[Check]:
    """Run every check on the stage metrics; each stage dict needs offered_fraction and duration_s.

    A partial run, or one whose records miss planned stages, fails on capacity only when the
    deployment answered with 429s. Without them a healthy deployment would look the same, so the
    capacity check is downgraded to inconclusive.
    """
    checks = [
        _capacity_check(stages, capacity_tpm, policy),
        _early_throttling_check(stages, policy),
        *_latency_checks(stages, policy),
        _data_check(stages, policy),
        _generator_check(health, policy),
    ]
    completion = _completion_check(partial, stop_reason, not_reached or [])
    checks.append(completion)
    pushed_back = any((stage["throttled_share"] or 0.0) > policy.capacity.max_throttled_share for stage in stages)
    if completion.status == "inconclusive" and checks[0].status == "fail" and not pushed_back:
        checks[0] = Check("capacity_delivered", "inconclusive", checks[0].template, checks[0].params)
    return checks


def combine_checks(checks: list[Check]) -> Verdict:
    """Generator trouble makes any result inconclusive; otherwise fail beats inconclusive beats pass."""
    statuses = {check.name: check.status for check in checks}
    if statuses.get("generator_health") == "inconclusive":
        return "inconclusive"
    if "fail" in statuses.values():
        return "fail"
    if "inconclusive" in statuses.values():
        return "inconclusive"
    return "pass"

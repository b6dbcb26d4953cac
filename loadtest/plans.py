"""Load plans in PTU terms: the stages a run goes through and the capacity-search algorithm.

Everything here is plain computation; loadtest/controller.py runs a plan against the clock.

Capacity is the deployment's binding limit expressed in tokens per minute: the TPM capacity, or the
QPM capacity × expected tokens per request, whichever is lower. Stage loads are fractions of it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from ptu_verify.errors import InputError
from ptu_verify.requests import RequestSpec

from .options import ACCEPTANCE_STAGES, DEFAULT_STAGES, LoadOptions, parse_fractions

__all__ = [
    "PLAN_DEFAULTS",
    "CapacitySearch",
    "NominalCapacity",
    "PlanSpec",
    "PlannedStage",
    "build_plan",
    "estimate_plan",
    "resolve_capacity",
    "stage_qpm",
    "trace_timing",
]

logger = logging.getLogger(__name__)

# (stage duration s, warm-up s) per plan kind; step: 6 × 150 s = 15 min, acceptance: 5 × 105 s < 9 min.
PLAN_DEFAULTS: dict[str, tuple[float, float]] = {
    "step": (150.0, 30.0),
    "search": (90.0, 30.0),
    "acceptance": (105.0, 25.0),
    "rate": (86400.0, 0.0),
    "trace": (0.0, 0.0),
    "users": (86400.0, 0.0),
}
SEARCH_START_FRACTION = 1.25
SEARCH_GROWTH = 1.5
SEARCH_MAX_THROTTLED_SHARE = 0.01
# The first probes after a plateau P is known sit at P × 0.96 and P × 1.03. They are far enough from P
# that one 429 more or less does not flip them, and close enough that one more step closes a 5 % bracket.
SEARCH_BELOW_PLATEAU = 0.96
SEARCH_ABOVE_PLATEAU = 1.03


@dataclass(frozen=True)
class NominalCapacity:
    """The deployment's nominal capacity for one workload."""

    tpm: float | None
    qpm: float | None
    tokens_per_request: float

    @property
    def binding_limit(self) -> str:
        """``tpm`` or ``qpm``: the limit a growing load reaches first."""
        if self.tpm is None:
            return "qpm"
        if self.qpm is None:
            return "tpm"
        return "qpm" if self.qpm * self.tokens_per_request < self.tpm else "tpm"

    @property
    def binding_tpm(self) -> float:
        """The binding limit in tokens per minute."""
        candidates = [value for value in (self.tpm, None if self.qpm is None else self.qpm * self.tokens_per_request) if value is not None]
        return min(candidates)

    def with_tokens_per_request(self, tokens_per_request: float) -> NominalCapacity:
        """Return the same capacity for a different mean request size."""
        return NominalCapacity(self.tpm, self.qpm, tokens_per_request)


@dataclass(frozen=True)
class PlannedStage:
    """A stage before it is placed on the clock. ``fraction`` is of the binding capacity."""

    label: str
    duration_s: float
    warmup_s: float
    fraction: float | None = None
    offered_tpm: float | None = None
    offered_qpm: float | None = None
    kind: str = "measured"  # measured | burst | trace | users


@dataclass
class PlanSpec:
    """A plan: its kind, arrival process, capacity and static stages (search adds stages as it goes)."""

    kind: str
    arrival: str
    capacity: NominalCapacity | None
    tokens_per_request: float
    stages: list[PlannedStage] = field(default_factory=list)
    stage_duration_s: float = 0.0
    warmup_s: float = 0.0
    burst: PlannedStage | None = None

    @property
    def open_loop(self) -> bool:
        """True unless the plan is closed-loop users."""
        return self.kind != "users"


def resolve_capacity(model: str | None, ptu: int | None, tokens_per_request: float, catalog_path: str | None = None) -> NominalCapacity | None:
    """Return the nominal capacity of ``ptu`` PTUs of ``model``, or None when either is not given."""
    if model is None or ptu is None:
        return None
    if ptu < 1:
        raise InputError(f"Invalid --ptu {ptu}: give the number of PTUs of the deployment (1 or more).")
    from ptu_verify.catalog import load_catalog

    try:
        spec = load_catalog(catalog_path).resolve(model).spec
    except KeyError:
        raise InputError(f"Unknown --model {model!r}: give a model version or family from `ptu-verify catalog`.") from None
    capacity = spec.capacity(ptu)
    return NominalCapacity(tpm=float(capacity.total_tpm), qpm=float(capacity.qpm), tokens_per_request=tokens_per_request)


def stage_qpm(offered_tpm: float, tokens_per_request: float) -> float:
    """Convert offered tokens per minute into arrivals per minute."""
    return offered_tpm / tokens_per_request if tokens_per_request > 0 else 0.0


def _measured_stage(label: str, fraction: float, capacity: NominalCapacity, duration_s: float, warmup_s: float) -> PlannedStage:
    offered_tpm = fraction * capacity.binding_tpm
    return PlannedStage(
        label=label,
        duration_s=duration_s,
        warmup_s=warmup_s,
        fraction=fraction,
        offered_tpm=offered_tpm,
        offered_qpm=stage_qpm(offered_tpm, capacity.tokens_per_request),
    )


def stage_label(prefix: str, index: int, fraction: float) -> str:
    """Return a stage label such as ``step3-90%``."""
    return f"{prefix}{index}-{fraction * 100:.0f}%"


def build_plan(options: LoadOptions, tokens_per_request: float, *, run_time_s: float | None = None, trace_duration_s: float | None = None) -> PlanSpec:
    """Build the plan chosen by ``--plan`` from validated options; raise InputError when it lacks inputs."""
    kind = options.plan
    default_duration_s, default_warmup_s = PLAN_DEFAULTS[kind]
    duration_s = options.stage_duration_s if options.stage_duration_s is not None else default_duration_s
    warmup_s = options.warmup_s if options.warmup_s is not None else default_warmup_s
    if kind in ("step", "search", "acceptance") and warmup_s >= duration_s:
        raise InputError(f"Invalid --warmup {warmup_s:g}: it must be shorter than --stage-duration {duration_s:g}.")
    capacity = resolve_capacity(options.model, options.ptu, tokens_per_request)
    arrival = options.arrival
    plan = PlanSpec(kind=kind, arrival=arrival, capacity=capacity, tokens_per_request=tokens_per_request, stage_duration_s=duration_s, warmup_s=warmup_s)

    if kind in ("step", "search", "acceptance") and capacity is None:
        raise InputError(f"--plan {kind} needs the nominal capacity: give --model (e.g. qwen-plus-2025-04-28) and --ptu (e.g. 8).")

    if kind == "users":
        plan.arrival = "closed"
        plan.stages = [PlannedStage(label="users", duration_s=run_time_s or duration_s, warmup_s=warmup_s, kind="users")]
    elif kind == "rate":
        plan.stages = [_rate_stage(options, tokens_per_request, run_time_s or duration_s, warmup_s, capacity)]
    elif kind in ("step", "acceptance"):
        assert capacity is not None
        default_fractions = DEFAULT_STAGES if kind == "step" else ACCEPTANCE_STAGES
        fractions = parse_fractions(options.stages or default_fractions)
        prefix = "step" if kind == "step" else "accept"
        plan.stages = [_measured_stage(stage_label(prefix, index, fraction), fraction, capacity, duration_s, warmup_s) for index, fraction in enumerate(fractions, 1)]
    elif kind == "trace":
        if not options.trace:
            raise InputError("--plan trace needs --trace PATH: a trace file with request timestamps.")
        plan.arrival = "trace"
        plan.stages = [PlannedStage(label="trace", duration_s=trace_duration_s or 0.0, warmup_s=warmup_s, kind="trace")]

    if options.burst_credit and kind != "users":
        if capacity is None:
            raise InputError("--burst-credit runs at capacity, so it needs --model and --ptu.")
        plan.burst = PlannedStage(
            label="burst-credit",
            duration_s=options.burst_credit_max_s,
            warmup_s=options.burst_credit_max_s,
            fraction=1.0,
            offered_tpm=capacity.binding_tpm,
            offered_qpm=stage_qpm(capacity.binding_tpm, tokens_per_request),
            kind="burst",
        )
    return plan


def _rate_stage(options: LoadOptions, tokens_per_request: float, duration_s: float, warmup_s: float, capacity: NominalCapacity | None) -> PlannedStage:
    if options.arrival_qpm is not None and options.offered_tpm is not None:
        raise InputError("Give either --arrival-qpm or --offered-tpm, not both.")
    if options.arrival_qpm is not None:
        offered_qpm = options.arrival_qpm
        offered_tpm = offered_qpm * tokens_per_request
    elif options.offered_tpm is not None:
        offered_tpm = options.offered_tpm
        offered_qpm = stage_qpm(offered_tpm, tokens_per_request)
    else:
        raise InputError("--plan rate needs --arrival-qpm N (requests per minute) or --offered-tpm N (tokens per minute).")
    fraction = offered_tpm / capacity.binding_tpm if capacity is not None else None
    return PlannedStage(label="rate", duration_s=duration_s, warmup_s=warmup_s, fraction=fraction, offered_tpm=offered_tpm, offered_qpm=offered_qpm)


def estimate_plan(plan: PlanSpec, search_max_stages: int) -> tuple[float | None, float | None]:
    """Return (duration s, total tokens) a plan will use at most, or None where it cannot be known.

    The token estimate is the offered load over the stage durations; a search plan is counted as
    ``search_max_stages`` stages at 1.25 × capacity, an upper bound.
    """
    stages = list(plan.stages)
    if plan.burst is not None:
        stages.insert(0, plan.burst)
    if plan.kind == "search":
        assert plan.capacity is not None
        duration_s = plan.stage_duration_s * search_max_stages
        tokens = SEARCH_START_FRACTION * plan.capacity.binding_tpm * duration_s / 60.0
        if plan.burst is not None:
            duration_s += plan.burst.duration_s
            tokens += plan.capacity.binding_tpm * plan.burst.duration_s / 60.0
        return duration_s, tokens
    if plan.kind in ("users", "rate") and plan.stages[0].duration_s >= PLAN_DEFAULTS["rate"][0]:
        return None, None
    duration_s = sum(stage.duration_s for stage in stages)
    if plan.kind == "users" or any(stage.offered_tpm is None for stage in stages):
        return duration_s, None
    return duration_s, sum(float(stage.offered_tpm or 0.0) * stage.duration_s / 60.0 for stage in stages)


@dataclass
class SearchStep:
    """One completed search stage."""

    fraction: float
    throttled_share: float
    achieved_tpm: float
    attempts: int


class CapacitySearch:
    """Find the highest offered load (fraction of nominal capacity) whose 429 share stays ≤ 1 %.

    1. Overload probe at 1.25 × capacity. If it is not throttled, grow × 1.5 until a stage is.
    2. A throttled stage delivers the achieved plateau P (what the deployment serves when saturated).
       The next probes sit just below and just above P (P × 0.96, P × 1.03).
    3. Then step up from the highest good load in 3 % steps (bisecting when that leaves the bracket)
       until the bracket [highest good, lowest throttled] is narrower than the tolerance (5 % of the
       plateau, or of nominal capacity before a plateau is known) or the stage budget runs out.

    A stage counts as throttled when its 429 count exceeds 1 % of its attempts by more than one
    binomial standard error, so a single 429 in a short stage does not end the search early.

    On a deployment that behaves like a token bucket this takes 4 stages (overload, below and above
    the plateau, one bisection); a noisy limiter adds about one bisection per misjudged stage.
    """

    def __init__(self, capacity_tpm: float, tolerance: float = 0.05, max_stages: int = 8, max_throttled_share: float = SEARCH_MAX_THROTTLED_SHARE) -> None:
        self.capacity_tpm = capacity_tpm
        self.tolerance = tolerance
        self.max_stages = max_stages
        self.max_throttled_share = max_throttled_share
        self.steps: list[SearchStep] = []
        self.good: float | None = None
        self.bad: float | None = None

    def observe(self, fraction: float, throttled_share: float, achieved_tpm: float, attempts: int) -> None:
        """Record the outcome of a stage run at ``fraction`` of capacity."""
        self.steps.append(SearchStep(fraction, throttled_share, achieved_tpm, attempts))
        bad = [step.fraction for step in self.steps if not self._is_good(step)]
        self.bad = min(bad) if bad else None
        # A good stage above a throttled one is noise; the bracket keeps the lower, throttled bound.
        good = [step.fraction for step in self.steps if self._is_good(step) and (self.bad is None or step.fraction < self.bad)]
        self.good = max(good) if good else None

    def _is_good(self, step: SearchStep) -> bool:
        # Throttled only when the 429 count exceeds the allowed share by one binomial standard error:
        # one 429 among 45 requests (2.2 %) does not show that the true share is above 1 %, while
        # among 5,000 requests the bound is 1.14 %.
        if step.attempts <= 0:
            return False
        allowed = self.max_throttled_share * step.attempts
        margin = math.sqrt(allowed * (1.0 - self.max_throttled_share))
        return step.throttled_share * step.attempts <= allowed + margin

    @property
    def plateau_fraction(self) -> float | None:
        """Return the estimated sustained capacity as a fraction of nominal capacity.

        The median achieved load of the throttled stages, raised to the highest load a good stage
        achieved (a deployment that served a load without 429s has at least that capacity).
        NOTE: behind a sliding-window limiter an overloaded stage is admitted in bursts of one window.
        A short stage can therefore misread its achieved load by up to half, which later good
        stages correct.
        """
        values = sorted(step.achieved_tpm / self.capacity_tpm for step in self.steps if not self._is_good(step) and step.achieved_tpm > 0)
        if not values:
            return None
        middle = len(values) // 2
        median = values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2
        served = [step.achieved_tpm / self.capacity_tpm for step in self.steps if self._is_good(step)]
        return max([median, *served])

    @property
    def done(self) -> bool:
        """True when the bracket is narrow enough or the stage budget is spent."""
        if len(self.steps) >= self.max_stages:
            return True
        return self._bracket_closed()

    def _bracket_closed(self) -> bool:
        # The tolerance is a fraction of the capacity actually found (the plateau), or of nominal capacity.
        if self.good is None or self.bad is None:
            return False
        reference = max(self.plateau_fraction or 1.0, self.good)
        return self.bad - self.good <= self.tolerance * reference

    def next_fraction(self) -> float | None:
        """Return the load of the next stage, or None when the search is done."""
        if self.done:
            return None
        if not self.steps:
            return SEARCH_START_FRACTION
        plateau = self.plateau_fraction
        if self.bad is None:
            assert self.good is not None
            return self.good * SEARCH_GROWTH
        if self.good is None:
            below = plateau * SEARCH_BELOW_PLATEAU if plateau else None
            if below is not None and below < self.bad and not self._tried(below):
                return below
            return self.bad * 0.7
        low, high = self.good, self.bad
        # Probe around the plateau, then creep up from the highest good load in 3 % steps. Every
        # throttled stage so far put capacity near the plateau, so halving a wide bracket wastes stages.
        candidates = [low * SEARCH_ABOVE_PLATEAU]
        if plateau:
            candidates = [plateau * SEARCH_BELOW_PLATEAU, plateau * SEARCH_ABOVE_PLATEAU, *candidates]
        for candidate in candidates:
            if low < candidate < high and not self._tried(candidate):
                return candidate
        return (low + high) / 2

    def _tried(self, fraction: float) -> bool:
        """True when a stage already ran within 1 % of ``fraction``."""
        return any(abs(step.fraction - fraction) <= 0.01 * fraction for step in self.steps)

    def result(self) -> dict[str, Any]:
        """Return the search outcome for plan.json (fractions and TPM)."""
        plateau = self.plateau_fraction
        good_step = next((step for step in reversed(self.steps) if step.fraction == self.good), None)
        return {
            "max_throttled_share": self.max_throttled_share,
            "tolerance": self.tolerance,
            "stages": len(self.steps),
            "sustained_fraction": self.good,
            "sustained_offered_tpm": None if self.good is None else self.good * self.capacity_tpm,
            "sustained_achieved_tpm": None if good_step is None else good_step.achieved_tpm,
            "lowest_throttled_fraction": self.bad,
            "plateau_fraction": plateau,
            "plateau_tpm": None if plateau is None else plateau * self.capacity_tpm,
            "converged": self._bracket_closed(),
            "steps": [step.__dict__ for step in self.steps],
        }


def search_stage(index: int, fraction: float, capacity: NominalCapacity, duration_s: float, warmup_s: float) -> PlannedStage:
    """Return search stage ``index`` at ``fraction`` of capacity."""
    return _measured_stage(stage_label("search", index, fraction), fraction, capacity, duration_s, warmup_s)


def spec_tokens(spec: RequestSpec) -> int:
    """Return a request's token estimate: expected input tokens (or the template count) + max_tokens."""
    if spec.expected_input_tokens is not None:
        input_tokens = spec.expected_input_tokens
    else:
        from ptu_verify.tokens import prompt_tokens

        input_tokens = prompt_tokens(spec.messages)
    return int(input_tokens) + int(spec.max_tokens)


def trace_timing(specs: list[RequestSpec], speedup: float, target_tpm: float | None) -> tuple[float, float, float]:
    """Return (time scale, replay duration s, recorded mean TPM) for replaying a trace.

    The time scale multiplies every trace offset: 1/speedup, or recorded TPM / target TPM with
    --trace-target-tpm. Tokens per request are estimated as input + max_tokens, an upper bound
    on what the server will count.
    """
    if not specs:
        raise InputError("The trace contains no requests; check --trace.")
    offsets = [float(spec.trace_offset_s or 0.0) for spec in specs]
    span_s = max(offsets) - min(offsets)
    total_tokens = sum(spec_tokens(spec) for spec in specs)
    recorded_tpm = total_tokens * 60.0 / span_s if span_s > 0 else float("inf")
    if target_tpm is not None:
        if span_s <= 0:
            raise InputError("--trace-target-tpm needs a trace whose requests have different timestamps.")
        time_scale = recorded_tpm / target_tpm
    else:
        time_scale = 1.0 / speedup
    return time_scale, max(offsets) * time_scale + 1.0, recorded_tpm

"""Load-generator health: CPU, event-loop lag, requests in flight and open-loop dispatch counts.

A generator that cannot keep its schedule makes the server look slow. Every worker samples its own
health each second (HealthSample lines) and counts, per stage, the dispatches that left more than
100 ms late or were dropped at the in-flight cap. A run where late + dropped exceed 1 % of due
dispatches, or where the event loop stalled for more than 100 ms in over 5 % of the samples (and at
least 3), is marked "generator fell behind".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import gevent
import psutil

from ptu_verify.records import HEALTH_SCHEMA, HealthSample

__all__ = [
    "BEHIND_SHARE",
    "CPU_WARNING_PERCENT",
    "LATE_THRESHOLD_S",
    "DispatchCounters",
    "GeneratorVerdict",
    "HealthMonitor",
    "StageCounts",
    "assess_generator",
]

logger = logging.getLogger(__name__)

CPU_WARNING_PERCENT = 85.0
LATE_THRESHOLD_S = 0.1
BEHIND_SHARE = 0.01
LAGGING_SAMPLES_SHARE = 0.05
LAGGING_SAMPLES_MIN = 3
_LAG_TICK_S = 0.05
_WARNING_REPEAT_S = 30.0


@dataclass
class StageCounts:
    """Open-loop dispatch counts of one stage on one worker."""

    dispatched: int = 0  # arrivals that came due, sent or not
    late: int = 0  # sent more than LATE_THRESHOLD_S after the scheduled time
    dropped: int = 0  # not sent because the in-flight cap was reached

    def as_dict(self) -> dict[str, int]:
        """Return the counts as a JSON-ready dict."""
        return {"dispatched": self.dispatched, "late": self.late, "dropped": self.dropped}


@dataclass
class DispatchCounters:
    """Dispatch counts per stage and since the last health sample."""

    by_stage: dict[str, StageCounts] = field(default_factory=dict)
    current_stage: str | None = None
    _interval: StageCounts = field(default_factory=StageCounts)

    def count(self, stage: str, *, late: bool = False, dropped: bool = False) -> None:
        """Count one due arrival of ``stage``."""
        totals = self.by_stage.setdefault(stage, StageCounts())
        for counts in (totals, self._interval):
            counts.dispatched += 1
            counts.late += int(late)
            counts.dropped += int(dropped)

    def take_interval(self) -> StageCounts:
        """Return the counts since the previous call and start a new interval."""
        interval, self._interval = self._interval, StageCounts()
        return interval


class HealthMonitor:
    """Sample one worker's health every second and pass each HealthSample to ``emit``."""

    def __init__(
        self,
        worker_id: str,
        counters: DispatchCounters,
        in_flight: Callable[[], int],
        emit: Callable[[HealthSample], None],
        interval_s: float = 1.0,
    ) -> None:
        self.worker_id = worker_id
        self._counters = counters
        self._in_flight = in_flight
        self._emit = emit
        self._interval_s = interval_s
        self._process = psutil.Process()
        self._max_lag_s = 0.0
        self._last_warning_at = 0.0
        self.max_cpu_percent = 0.0
        self._greenlets: list[gevent.Greenlet] = []

    def start(self) -> None:
        """Start the lag probe and the sampler greenlets."""
        if self._greenlets:
            return
        self._process.cpu_percent(None)
        self._greenlets = [gevent.spawn(self._probe_lag), gevent.spawn(self._sample_loop)]

    def stop(self) -> None:
        """Stop sampling and emit one last sample."""
        if not self._greenlets:
            return
        gevent.killall(self._greenlets, block=False)
        self._greenlets = []
        self._emit(self.sample())

    def sample(self) -> HealthSample:
        """Build the sample of the interval that ends now."""
        cpu_percent = float(self._process.cpu_percent(None))
        lag_s, self._max_lag_s = self._max_lag_s, 0.0
        interval = self._counters.take_interval()
        self.max_cpu_percent = max(self.max_cpu_percent, cpu_percent)
        now = time.time()
        if cpu_percent >= CPU_WARNING_PERCENT and now - self._last_warning_at >= _WARNING_REPEAT_S:
            self._last_warning_at = now
            logger.warning(
                "Load generator %s uses %.0f %% CPU; its timings may be late. Use more worker processes (--processes N) or a lighter transport (--transport fast).",
                self.worker_id,
                cpu_percent,
            )
        return {
            "schema": HEALTH_SCHEMA,
            "worker_id": self.worker_id,
            "at": now,
            "cpu_percent": cpu_percent,
            "loop_lag_s": round(lag_s, 4),
            "in_flight": self._in_flight(),
            "dispatched": interval.dispatched,
            "late_dispatches": interval.late,
            "dropped_dispatches": interval.dropped,
            "stage": self._counters.current_stage,
        }

    def _probe_lag(self) -> None:
        # A greenlet asking to wake after _LAG_TICK_S wakes late by as long as others hold the loop.
        while True:
            before = time.perf_counter()
            gevent.sleep(_LAG_TICK_S)
            lag_s = time.perf_counter() - before - _LAG_TICK_S
            self._max_lag_s = max(self._max_lag_s, lag_s)

    def _sample_loop(self) -> None:
        next_at = time.perf_counter() + self._interval_s
        while True:
            gevent.sleep(max(0.0, next_at - time.perf_counter()))
            next_at += self._interval_s
            self._emit(self.sample())


@dataclass(frozen=True)
class GeneratorVerdict:
    """Whether the load generators kept up, with the figures behind the verdict."""

    behind: bool
    reasons: list[str]
    dispatched: int
    late: int
    dropped: int
    samples: int
    lagging_samples: int
    max_cpu_percent: float
    by_stage: dict[str, dict[str, int]]

    def as_dict(self) -> dict[str, Any]:
        """Return the verdict as a JSON-ready dict (the ``generator`` field of run.json)."""
        return {
            "behind": self.behind,
            "reasons": self.reasons,
            "dispatched": self.dispatched,
            "late": self.late,
            "dropped": self.dropped,
            "samples": self.samples,
            "lagging_samples": self.lagging_samples,
            "max_cpu_percent": self.max_cpu_percent,
            "by_stage": self.by_stage,
        }


def assess_generator(by_stage: Mapping[str, Mapping[str, int]], samples: Iterable[Mapping[str, Any]]) -> GeneratorVerdict:
    """Decide whether the generators fell behind, from dispatch counts per stage and health samples."""
    dispatched = sum(int(counts.get("dispatched", 0)) for counts in by_stage.values())
    late = sum(int(counts.get("late", 0)) for counts in by_stage.values())
    dropped = sum(int(counts.get("dropped", 0)) for counts in by_stage.values())
    sample_count = lagging = 0
    max_cpu = 0.0
    for sample in samples:
        sample_count += 1
        max_cpu = max(max_cpu, float(sample.get("cpu_percent") or 0.0))
        if float(sample.get("loop_lag_s") or 0.0) > LATE_THRESHOLD_S:
            lagging += 1

    reasons: list[str] = []
    if dispatched and (late + dropped) / dispatched > BEHIND_SHARE:
        reasons.append(f"{late} late and {dropped} dropped of {dispatched} scheduled dispatches (more than {BEHIND_SHARE:.0%})")
    if lagging >= LAGGING_SAMPLES_MIN and lagging / sample_count > LAGGING_SAMPLES_SHARE:
        reasons.append(f"event loop stalled more than {LATE_THRESHOLD_S * 1000:.0f} ms in {lagging} of {sample_count} health samples")
    return GeneratorVerdict(
        behind=bool(reasons),
        reasons=reasons,
        dispatched=dispatched,
        late=late,
        dropped=dropped,
        samples=sample_count,
        lagging_samples=lagging,
        max_cpu_percent=max_cpu,
        by_stage={stage: dict(counts) for stage, counts in by_stage.items()},
    )

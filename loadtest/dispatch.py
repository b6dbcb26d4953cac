"""Open-loop dispatch: send each request at its scheduled time, whether or not earlier ones finished.

One Dispatcher greenlet per worker walks through stage orders. For every arrival it waits until the
scheduled wall-clock time, builds the request, and spawns a greenlet that sends it. An arrival is
counted late when it leaves more than 100 ms after its scheduled time (building the request
included), and dropped when the worker already has ``max_in_flight`` open-loop requests running.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import gevent
from gevent.event import Event
from gevent.pool import Group
from gevent.queue import Queue

from ptu_verify.requests import RequestSpec

from .health import LATE_THRESHOLD_S, DispatchCounters

__all__ = ["Dispatcher", "StageOrder", "arrival_times", "trace_arrivals"]

logger = logging.getLogger(__name__)

SendFunction = Callable[[RequestSpec, str, float], Any]


@dataclass(frozen=True)
class StageOrder:
    """One worker's part of one stage: its arrival rate between two wall-clock times.

    For ``arrival == "trace"`` the worker replays every ``slots``-th request of its trace starting at
    index ``slot``, at ``start_at + trace_offset_s × time_scale``; ``qpm`` is informational.
    """

    label: str
    start_at: float
    end_at: float
    qpm: float
    arrival: str = "poisson"  # poisson | constant | trace
    slot: int = 0
    slots: int = 1
    time_scale: float = 1.0

    def as_message(self) -> dict[str, Any]:
        """Return the order as a dict for a Locust message."""
        return asdict(self)

    @classmethod
    def from_message(cls, data: dict[str, Any]) -> StageOrder:
        """Rebuild an order from :meth:`as_message` output."""
        return cls(**data)


def arrival_times(order: StageOrder, rng: random.Random) -> Iterator[float]:
    """Yield the scheduled Unix times of the arrivals of a poisson or constant stage order."""
    rate_per_s = order.qpm / 60.0
    if rate_per_s <= 0 or order.end_at <= order.start_at:
        return
    if order.arrival == "constant":
        # Workers sharing a stage interleave: worker k of n starts k/n of an interval later.
        interval_s = 1.0 / rate_per_s
        first_at = order.start_at + interval_s * order.slot / max(order.slots, 1)
        index = 0
        while (at := first_at + index * interval_s) < order.end_at - 1e-9:
            yield at
            index += 1
        return
    at = order.start_at
    while True:
        at += rng.expovariate(rate_per_s)
        if at >= order.end_at:
            return
        yield at


def trace_arrivals(specs: list[RequestSpec], order: StageOrder) -> Iterator[tuple[float, RequestSpec]]:
    """Yield (scheduled time, request) for this worker's share of a trace."""
    for index, spec in enumerate(specs):
        if index % max(order.slots, 1) != order.slot:
            continue
        yield order.start_at + float(spec.trace_offset_s or 0.0) * order.time_scale, spec


class Dispatcher:
    """Run stage orders on one worker, spawning one greenlet per request."""

    def __init__(
        self,
        send: SendFunction,
        next_spec: Callable[[], RequestSpec],
        counters: DispatchCounters,
        max_in_flight: int,
        seed: int | None = None,
        trace_specs: list[RequestSpec] | None = None,
    ) -> None:
        self._send = send
        self._next_spec = next_spec
        self._counters = counters
        self._max_in_flight = max_in_flight
        self._rng = random.Random(seed)
        self._trace_specs = trace_specs or []
        self._orders: Queue[StageOrder] = Queue()
        self._active = Group()
        self._stopped = Event()
        self._wakeup = Event()
        self._cuts: dict[str, float] = {}
        self._greenlet: gevent.Greenlet | None = None

    @property
    def in_flight(self) -> int:
        """Open-loop requests running now."""
        return len(self._active)

    def add(self, order: StageOrder) -> None:
        """Queue a stage order; orders run one after the other, each from its own start time."""
        self._orders.put(order)
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    def cut(self, label: str, end_at: float) -> None:
        """End stage ``label`` early, at ``end_at`` (used by the burst-credit phase)."""
        self._cuts[label] = end_at
        self._wakeup.set()

    def stop(self) -> None:
        """Stop dispatching; requests already sent keep running (see :meth:`drain`)."""
        self._stopped.set()
        if self._greenlet is not None:
            self._greenlet.kill(block=True)

    def drain(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the requests in flight; return True when none is left."""
        self._active.join(timeout=timeout_s)
        return len(self._active) == 0

    def kill_in_flight(self) -> None:
        """Abort the requests still running."""
        self._active.kill(block=True, timeout=5)

    def _run(self) -> None:
        while not self._stopped.is_set():
            order = self._orders.get()
            self._run_order(order)

    def _arrivals(self, order: StageOrder) -> Iterator[tuple[float, RequestSpec | None]]:
        if order.arrival == "trace":
            yield from trace_arrivals(self._trace_specs, order)
            return
        for at in arrival_times(order, self._rng):
            yield at, None

    def _end_of(self, order: StageOrder) -> float:
        return min(order.end_at, self._cuts.get(order.label, order.end_at))

    def _sleep_until(self, at: float, order: StageOrder) -> None:
        # Wakes early when the stage is cut short.
        while True:
            remaining_s = min(at, self._end_of(order)) - time.time()
            if remaining_s <= 0:
                return
            self._wakeup.clear()
            self._wakeup.wait(remaining_s)

    def _run_order(self, order: StageOrder) -> None:
        self._sleep_until(order.start_at, order)
        self._counters.current_stage = order.label
        logger.info("Stage %s: %.1f requests per minute on this worker until %s", order.label, order.qpm, time.strftime("%H:%M:%S", time.localtime(order.end_at)))
        for scheduled_at, trace_spec in self._arrivals(order):
            self._sleep_until(scheduled_at, order)
            if self._stopped.is_set() or scheduled_at >= self._end_of(order):
                return
            if len(self._active) >= self._max_in_flight:
                self._counters.count(order.label, dropped=True)
                continue
            spec = trace_spec if trace_spec is not None else self._next_spec()
            late = time.time() - scheduled_at > LATE_THRESHOLD_S
            self._counters.count(order.label, late=late)
            self._active.spawn(self._send, spec, order.label, scheduled_at)
        self._sleep_until(order.end_at, order)

"""Running a plan against the wall clock, on the master or the single local process.

The controller places stages on the clock, sends each worker its share of every stage (a StageOrder
with absolute start and end times, so all workers follow one schedule), reads the records as they
arrive to end the burst-credit phase, to recalibrate tokens per request and to steer the capacity
search, enforces --max-total-tokens and --max-duration, writes plan.json and stops the run at the end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

import gevent

from ptu_verify.records import PLAN_SCHEMA, PlanInfo, PlanStage

from .dispatch import StageOrder
from .options import LoadOptions
from .plans import CapacitySearch, PlannedStage, PlanSpec, search_stage, stage_qpm
from .recorder import RunDirectory

__all__ = ["RECALIBRATION_THRESHOLD", "OrderDelivery", "PlanController"]

logger = logging.getLogger(__name__)

# Distributed timing: orders leave 0.5 s before their stage starts, and the last second of a stage is left
# out of decisions because workers ship records every 0.5 s. A single process needs far less.
DISTRIBUTED_TIMING = (0.5, 1.0)
LOCAL_TIMING = (0.1, 0.2)
RECALIBRATION_THRESHOLD = 0.2  # recalibrate when observed tokens per request differ by more than 20 %
RECALIBRATION_MIN_REQUESTS = 10
_POLL_S = 0.2


class OrderDelivery(Protocol):
    """Delivery of stage orders to the load generators."""

    def slots(self) -> list[str]:
        """Return the ids of the load generators that share the load."""
        ...

    def send_order(self, worker_id: str, order: StageOrder) -> None: ...

    def send_cut(self, label: str, end_at: float) -> None: ...


class PlanController:
    """Run one plan: stage orders, plan.json, burst credit, recalibration, search and safety limits."""

    def __init__(
        self,
        options: LoadOptions,
        plan: PlanSpec,
        run_directory: RunDirectory,
        delivery: OrderDelivery,
        request_stop: Callable[[str], None],
        *,
        expected_tokens_per_request: float,
        start_lead_s: float = 1.0,
        run_time_s: float | None = None,
        distributed: bool = False,
    ) -> None:
        self.options = options
        self.plan = plan
        self.run_directory = run_directory
        self.delivery = delivery
        self._request_stop = request_stop
        self._start_lead_s = start_lead_s
        self._run_time_s = run_time_s
        self._order_lead_s, self._evaluation_lag_s = DISTRIBUTED_TIMING if distributed else LOCAL_TIMING
        self.completed = False
        self.stop_reason: str | None = None
        self.started_at: float | None = None
        self.planned_end_at: float | None = None
        self._greenlets: list[gevent.Greenlet] = []
        capacity = plan.capacity
        self.info: PlanInfo = {
            "schema": PLAN_SCHEMA,
            "plan": plan.kind,
            "arrival": plan.arrival,
            "capacity_tpm": capacity.tpm if capacity else None,
            "capacity_qpm": capacity.qpm if capacity else None,
            "tokens_per_request": plan.tokens_per_request,
            "stages": [],
            "expected_tokens_per_request": expected_tokens_per_request,
            "binding_limit": capacity.binding_limit if capacity else None,
            "binding_capacity_tpm": capacity.binding_tpm if capacity else None,
            "workers": 0,
            "calibration": None,
        }

    # ----- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the plan and the safety-limit watcher."""
        self.started_at = time.time()
        self._greenlets = [gevent.spawn(self._run_guarded), gevent.spawn(self._watch_limits)]

    def stop(self) -> None:
        """Stop the plan greenlets (idempotent); called when the run stops for any reason."""
        current = gevent.getcurrent()
        for greenlet in self._greenlets:
            if greenlet is not current:
                greenlet.kill(block=False)
        self._greenlets = []

    def _finish(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self._request_stop(reason)

    def _run_guarded(self) -> None:
        try:
            self._run()
        except Exception:
            logger.exception("The load plan failed; stopping the run with the records collected so far")
            self.stop_reason = "plan error"
            self._request_stop("plan error")

    def _watch_limits(self) -> None:
        options = self.options
        assert self.started_at is not None
        while True:
            gevent.sleep(_POLL_S)
            if options.max_total_tokens is not None and self.run_directory.recent.total_tokens >= options.max_total_tokens:
                logger.warning("--max-total-tokens %.0f reached (%d tokens recorded); stopping the run", options.max_total_tokens, self.run_directory.recent.total_tokens)
                self._finish("max-total-tokens reached")
                return
            if options.max_duration_s is not None and time.time() - self.started_at >= options.max_duration_s:
                logger.warning("--max-duration %.0f s reached; stopping the run", options.max_duration_s)
                self._finish("max-duration reached")
                return

    # ----- plan execution --------------------------------------------------------------------

    def _run(self) -> None:
        slots = self.delivery.slots()
        self.info["workers"] = len(slots)
        at = time.time() + self._start_lead_s

        if not self.plan.open_loop:
            stage = self.plan.stages[0]
            end_at = at + (self._run_time_s if self._run_time_s else stage.duration_s)
            self._place(stage, at, end_at)
            self._write_plan()
            return

        if self.plan.burst is not None:
            at = self._run_burst(self.plan.burst, at)

        if self.plan.kind == "search":
            self._run_search(at)
        else:
            self._run_static(at)

        self.completed = True
        logger.info("Load plan %s completed", self.plan.kind)
        self._finish("plan completed")

    def _place(self, stage: PlannedStage, start_at: float, end_at: float | None = None) -> PlanStage:
        end = end_at if end_at is not None else start_at + stage.duration_s
        placed: PlanStage = {
            "label": stage.label,
            "start_at": round(start_at, 3),
            "measure_start_at": round(min(start_at + stage.warmup_s, end), 3),
            "end_at": round(end, 3),
            "offered_tpm": stage.offered_tpm,
            "offered_qpm": stage.offered_qpm,
            "fraction_of_capacity": stage.fraction,
            "users": None,
        }
        if stage.kind == "users":
            placed["users"] = None  # filled by the locustfile from -u
        if stage.kind == "burst":
            placed["measure_start_at"] = placed["end_at"]
        self.info["stages"].append(placed)
        return placed

    def _write_plan(self) -> None:
        self.run_directory.write_plan(self.info)

    def _order_stage(self, placed: PlanStage) -> None:
        """Send every worker its share of a placed stage, shortly before it starts."""
        gevent.sleep(max(0.0, placed["start_at"] - self._order_lead_s - time.time()))
        slots = self.delivery.slots()
        arrival = self.plan.arrival
        time_scale = float(self.info.get("time_scale", 1.0))
        for index, worker_id in enumerate(slots):
            order = StageOrder(
                label=placed["label"],
                start_at=placed["start_at"],
                end_at=placed["end_at"],
                qpm=float(placed["offered_qpm"] or 0.0) / len(slots),
                arrival=arrival,
                slot=index,
                slots=len(slots),
                time_scale=time_scale,
            )
            self.delivery.send_order(worker_id, order)

    def _sleep_until(self, at: float) -> None:
        gevent.sleep(max(0.0, at - time.time()))

    def _run_burst(self, burst: PlannedStage, at: float) -> float:
        """Run at capacity until the first 429 or the time limit; return the time the phase ended."""
        placed = self._place(burst, at)
        self._place_static_preview(placed["end_at"])
        self._order_stage(placed)
        self._sleep_until(placed["start_at"])
        while time.time() < placed["end_at"]:
            gevent.sleep(_POLL_S)
            if self.run_directory.recent.summarize(placed["start_at"], time.time() + 1).throttled:
                cut_at = round(time.time() + self._order_lead_s, 3)
                self.delivery.send_cut(placed["label"], cut_at)
                placed["end_at"] = placed["measure_start_at"] = cut_at
                logger.info("Burst credit used up after %.1f s (first 429)", cut_at - placed["start_at"])
                break
        else:
            logger.info("Burst-credit phase reached its limit of %.0f s without a 429", burst.duration_s)
        self.info["burst_credit"] = {"ended_at": placed["end_at"], "throttled": placed["end_at"] < placed["start_at"] + burst.duration_s}
        del self.info["stages"][1:]
        return placed["end_at"]

    def _place_static_preview(self, at: float) -> None:
        """Write plan.json with the static stages placed after ``at`` (a burst phase may move them)."""
        if self.plan.kind == "search":
            self._write_plan()
            return
        for stage in self.plan.stages:
            at = self._place(stage, at)["end_at"]
        self._write_plan()

    def _run_static(self, at: float) -> None:
        placed_stages = [self._place(stage, at + sum(s.duration_s for s in self.plan.stages[:index])) for index, stage in enumerate(self.plan.stages)]
        self.planned_end_at = placed_stages[-1]["end_at"]
        self._write_plan()
        for index, placed in enumerate(placed_stages):
            self._order_stage(placed)
            if index == 0 and self.plan.kind in ("step", "acceptance") and len(placed_stages) > 1:
                self._sleep_until(placed["end_at"] - self._order_lead_s - 0.05)
                if self._recalibrate(placed):
                    self._update_stages(placed_stages[1:])
                    self._write_plan()
            self._sleep_until(placed["end_at"] - self._order_lead_s - 0.05)
        self._sleep_until(placed_stages[-1]["end_at"])

    def _run_search(self, at: float) -> None:
        capacity = self.plan.capacity
        assert capacity is not None
        options = self.options
        search = CapacitySearch(capacity.binding_tpm, tolerance=options.search_tolerance, max_stages=options.search_max_stages)
        index = 0
        while (fraction := search.next_fraction()) is not None:
            index += 1
            stage = search_stage(index, fraction, capacity, self.plan.stage_duration_s, self.plan.warmup_s)
            placed = self._place(stage, at)
            self._write_plan()
            self._order_stage(placed)
            decide_at = placed["end_at"] - self._order_lead_s - 0.05
            self._sleep_until(decide_at)
            if index == 1 and self._recalibrate(placed):
                capacity = self.plan.capacity
                assert capacity is not None
                search.capacity_tpm = capacity.binding_tpm
            summary = self.run_directory.recent.summarize(placed["measure_start_at"], decide_at - self._evaluation_lag_s)
            search.observe(fraction, summary.throttled_share, summary.achieved_tpm, summary.attempts)
            logger.info(
                "Search stage %s: offered %.0f TPM, achieved %.0f TPM, 429 share %.1f %% of %d attempts",
                placed["label"],
                placed["offered_tpm"] or 0.0,
                summary.achieved_tpm,
                summary.throttled_share * 100,
                summary.attempts,
            )
            at = placed["end_at"]
            self.info["search"] = search.result()
        self._write_plan()
        self._sleep_until(at)

    # ----- recalibration ---------------------------------------------------------------------

    def _recalibrate(self, placed: PlanStage) -> bool:
        """Replace the expected tokens per request by the observed mean when they differ by > 20 %."""
        summary = self.run_directory.recent.summarize(placed["start_at"], time.time())
        observed = summary.tokens_per_ok_request
        expected = self.plan.tokens_per_request
        if observed is None or summary.ok < RECALIBRATION_MIN_REQUESTS or expected <= 0:
            return False
        if abs(observed / expected - 1.0) <= RECALIBRATION_THRESHOLD:
            return False
        logger.warning(
            "Observed %.0f tokens per successful request in stage %s, expected %.0f; later stages use the observed value",
            observed,
            placed["label"],
            expected,
        )
        self.plan.tokens_per_request = observed
        if self.plan.capacity is not None:
            self.plan.capacity = self.plan.capacity.with_tokens_per_request(observed)
        self.info["tokens_per_request"] = observed
        self.info["calibration"] = {
            "expected_tokens_per_request": expected,
            "observed_tokens_per_request": observed,
            "observed_requests": summary.ok,
            "from_stage": placed["label"],
            "binding_capacity_tpm": self.plan.capacity.binding_tpm if self.plan.capacity else None,
        }
        self.info["binding_capacity_tpm"] = self.plan.capacity.binding_tpm if self.plan.capacity else None
        return True

    def _update_stages(self, placed_stages: list[PlanStage]) -> None:
        capacity = self.plan.capacity
        for placed in placed_stages:
            fraction = placed["fraction_of_capacity"]
            if fraction is None or capacity is None:
                continue
            offered_tpm = fraction * capacity.binding_tpm
            placed["offered_tpm"] = offered_tpm
            placed["offered_qpm"] = stage_qpm(offered_tpm, self.plan.tokens_per_request)

"""The per-process load session and the closed-loop Locust user.

Each Locust process that generates load (the single local process or every worker) has one
LoadSession: the streaming client, the workload, the open-loop dispatcher, the health monitor and the
sink its records go to. Closed-loop users (``--plan users``) and open-loop dispatches both send through
:meth:`LoadSession.send`, which fires Locust's request events and hands every record to the sink.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import gevent
from locust import User, task

from ptu_verify.records import HealthSample, RequestRecord
from ptu_verify.requests import RequestSpec

from .client import ClientConfig, StreamClient
from .dispatch import Dispatcher
from .health import DispatchCounters, HealthMonitor
from .options import LoadOptions, worker_seed
from .recorder import FLUSH_INTERVAL_S, RunDirectory

__all__ = ["LoadSession", "LocalSink", "PTUUser", "RecordSink", "RequestFailed", "ShippingSink", "current_session", "fire_request_events", "set_session"]

logger = logging.getLogger(__name__)


class RequestFailed(Exception):
    """A failed attempt as shown in Locust's failures table: outcome, HTTP status and error code."""


class RecordSink(Protocol):
    """Destination of a load-generating process's records and health samples."""

    def add_records(self, records: list[RequestRecord]) -> None: ...

    def add_health(self, sample: HealthSample) -> None: ...

    def close(self) -> None: ...


class LocalSink:
    """Sink of a single-process run: straight into the run directory."""

    def __init__(self, run_directory: RunDirectory, worker_id: str) -> None:
        self._run_directory = run_directory
        self._worker_id = worker_id

    def add_records(self, records: list[RequestRecord]) -> None:
        self._run_directory.add_records(list(records))

    def add_health(self, sample: HealthSample) -> None:
        self._run_directory.add_health(self._worker_id, [sample])

    def close(self) -> None:
        self._run_directory.records.flush()


class ShippingSink:
    """Sink of a worker: batches sent to the master as ``ptu_batch`` messages every FLUSH_INTERVAL_S.

    Locust messages travel over the master connection, so this works across machines; a worker that
    dies loses only the batch it had not sent yet.
    """

    def __init__(self, send_message: Callable[[str, dict[str, Any]], None], worker_id: str, interval_s: float = FLUSH_INTERVAL_S) -> None:
        self._send_message = send_message
        self._worker_id = worker_id
        self._records: list[RequestRecord] = []
        self._health: list[HealthSample] = []
        self.records_sent = 0
        self._greenlet = gevent.spawn(self._ship_loop, interval_s)

    def add_records(self, records: list[RequestRecord]) -> None:
        self._records.extend(records)

    def add_health(self, sample: HealthSample) -> None:
        self._health.append(sample)

    def ship(self) -> None:
        """Send the queued records and samples now."""
        if not self._records and not self._health:
            return
        records, self._records = self._records, []
        health, self._health = self._health, []
        self._send_message("ptu_batch", {"worker_id": self._worker_id, "records": records, "health": health})
        self.records_sent += len(records)

    def close(self) -> None:
        self._greenlet.kill(block=False)
        self.ship()

    def _ship_loop(self, interval_s: float) -> None:
        while True:
            gevent.sleep(interval_s)
            try:
                self.ship()
            except Exception:
                logger.exception("Sending records to the master failed; they are lost and sending continues")


def describe_failure(record: Mapping[str, Any]) -> str:
    """Return the failure text Locust groups by, e.g. ``throttled HTTP 429 Throttling.AllocationQuota``."""
    parts = [str(record.get("outcome"))]
    if record.get("status_code") is not None:
        parts.append(f"HTTP {record['status_code']}")
    if record.get("error_code"):
        parts.append(str(record["error_code"]))
    return " ".join(parts)


def fire_request_events(events: Any, record: Mapping[str, Any]) -> None:
    """Report one attempt to Locust: the whole stream as the request, TTFT as its own entry.

    response_time is the end of the stream in ms (not the arrival of the headers) and
    response_length is the output token count, so Locust's tables read in tokens.
    """
    variant = str(record.get("variant") or "default")
    ok = record.get("outcome") == "ok"
    events.request.fire(
        request_type=str(record.get("api")),
        name=variant,
        response_time=float(record.get("e2e_s") or 0.0) * 1000.0,
        response_length=int(record.get("output_tokens") or 0),
        exception=None if ok else RequestFailed(describe_failure(record)),
        context={"stage": record.get("stage"), "request_id": record.get("request_id")},
    )
    if ok and record.get("ttft_s") is not None:
        events.request.fire(
            request_type="TTFT",
            name=variant,
            response_time=float(record["ttft_s"]) * 1000.0,
            response_length=0,
            exception=None,
            context={"stage": record.get("stage")},
        )


class LoadSession:
    """Everything one load-generating process needs to send requests and record them."""

    def __init__(self, environment: Any, options: LoadOptions, *, run_id: str, worker_id: str, sink: RecordSink, api_key: str | None) -> None:
        from ptu_verify.workloads import load_workload

        self.environment = environment
        self.options = options
        self.worker_id = worker_id
        self.sink = sink
        # Each worker draws its own prompts and arrival times. The same seed everywhere would send
        # identical prompts (flattering cached prefixes) and line up every worker's Poisson arrivals.
        seed = worker_seed(options.seed, worker_id)
        self.workload = load_workload(options.workload, seed=seed)
        self.client = StreamClient(
            ClientConfig(
                api=options.api,  # type: ignore[arg-type]
                transport=options.transport,  # type: ignore[arg-type]
                base_url=options.host,
                deployment_code=options.deployment_code,
                api_key=api_key,
                request_timeout_s=options.request_timeout_s,
                thinking=True if options.thinking else None,
                run_id=run_id,
                worker_id=worker_id,
                retry_429=options.retry_429,
                max_attempts=options.max_attempts,
            )
        )
        self.counters = DispatchCounters()
        if not options.open_loop:
            self.counters.current_stage = "users"
        self.in_flight = 0
        self.stopping = False
        self.finished = False
        self._random = random.Random(seed)
        self._trace_specs: list[RequestSpec] | None = None
        self.dispatcher = Dispatcher(self.send, self.next_spec, self.counters, options.max_in_flight, seed=seed, trace_specs=self._load_trace())
        self.health = HealthMonitor(worker_id, self.counters, lambda: self.in_flight, sink.add_health)

    def _load_trace(self) -> list[RequestSpec] | None:
        if self.options.plan != "trace" or not self.options.trace:
            return None
        from ptu_verify.workloads import load_trace

        specs: list[RequestSpec] = load_trace(self.options.trace, seed=self.options.seed)
        return specs

    def next_spec(self) -> RequestSpec:
        """Return the workload's next request."""
        return self.workload.next_request()

    def wait_time_s(self) -> float:
        """Return the closed-loop pause before a user's next request."""
        low, high = self.options.wait_time_s
        return low if high == low else self._random.uniform(low, high)

    def send(self, spec: RequestSpec, stage: str, scheduled_at: float | None) -> list[RequestRecord]:
        """Send one request, report every attempt to Locust and to the sink."""
        self.in_flight += 1
        try:
            records = self.client.send(spec, stage=stage, scheduled_at=scheduled_at)
        finally:
            self.in_flight -= 1
        for record in records:
            fire_request_events(self.environment.events, record)
        self.sink.add_records(records)
        return records

    def finish(self, drain_timeout_s: float) -> dict[str, dict[str, int]]:
        """Stop sending, wait up to ``drain_timeout_s`` for requests in flight, flush; return dispatch counts."""
        if self.finished:
            return {stage: counts.as_dict() for stage, counts in self.counters.by_stage.items()}
        self.stopping = True
        self.dispatcher.stop()
        deadline = time.perf_counter() + drain_timeout_s
        while self.in_flight > 0 and time.perf_counter() < deadline:
            gevent.sleep(0.05)
        if self.in_flight:
            logger.warning("%d requests were still in flight after %.0f s of draining; they are not recorded", self.in_flight, drain_timeout_s)
        self.dispatcher.kill_in_flight()
        self.health.stop()
        self.sink.close()
        self.client.close()
        self.finished = True
        return {stage: counts.as_dict() for stage, counts in self.counters.by_stage.items()}


_session: LoadSession | None = None


def set_session(session: LoadSession | None) -> None:
    """Install the process's load session (the locustfile does this at test start)."""
    global _session
    _session = session


def current_session() -> LoadSession | None:
    """Return the process's load session, or None before the test starts."""
    return _session


class PTUUser(User):
    """A closed-loop user: send a request, wait ``--wait-time``, repeat (``--plan users``).

    With an open-loop plan the users stay idle; the dispatcher sends the load instead.
    """

    def wait_time(self) -> float:
        session = current_session()
        return session.wait_time_s() if session is not None else 1.0

    @task
    def chat(self) -> None:
        """Send the workload's next request through the session."""
        session = current_session()
        if session is None or session.options.open_loop or session.stopping:
            gevent.sleep(1.0)
            return
        session.send(session.next_spec(), "users", None)

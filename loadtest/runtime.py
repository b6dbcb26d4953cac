"""Locust event handlers that tie a run together, in each of the three process roles.

- local (one process): preflight, run directory, load session and plan controller in one place.
- master: preflight, run directory and plan controller. Workers' records and health samples arrive as
  ``ptu_batch`` messages and are written to the master's run directory.
- worker: a load session whose sink ships batches to the master; it follows the master's stage
  orders and reports options it was started with that differ from the master's.

Messages (all Locust custom messages):
worker → master: ``ptu_hello`` (worker id, option mismatches), ``ptu_batch`` (records, health),
``ptu_final`` (dispatch counts, after the last batch).
master → worker: ``ptu_order`` (a StageOrder), ``ptu_cut`` (end a stage early), ``ptu_stop`` (drain and flush).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import gevent
from locust.runners import MasterRunner, WorkerRunner

from ptu_verify.errors import ExitCode, InputError
from ptu_verify.i18n import _
from ptu_verify.records import RUN_SCHEMA, RunInfo

from .controller import PlanController
from .dispatch import StageOrder
from .health import assess_generator
from .options import (
    LoadOptions,
    find_mismatches,
    is_loopback,
    load_options,
    snapshot_options,
)
from .plans import PlanSpec, build_plan, estimate_plan, trace_timing
from .preflight import check_api_key, run_preflight
from .recorder import RunDirectory, redact_host, software_versions
from .users import LoadSession, LocalSink, ShippingSink, set_session

__all__ = ["Runtime", "install"]

logger = logging.getLogger(__name__)

HELLO_TIMEOUT_S = 15.0
FINAL_GRACE_S = 5.0


def _exit_with_error(message: str) -> None:
    sys.stderr.write(_("Error: {message}").format(message=message) + "\n")
    sys.stderr.flush()
    sys.exit(int(ExitCode.USAGE))


class LocalDelivery:
    """Stage orders for the single local process."""

    def __init__(self, session: LoadSession) -> None:
        self._session = session

    def slots(self) -> list[str]:
        return [self._session.worker_id]

    def send_order(self, worker_id: str, order: StageOrder) -> None:
        self._session.dispatcher.add(order)

    def send_cut(self, label: str, end_at: float) -> None:
        self._session.dispatcher.cut(label, end_at)


class MasterDelivery:
    """Stage orders sent to workers as Locust messages."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._slots: list[str] | None = None

    def slots(self) -> list[str]:
        if self._slots is None:
            self._slots = self._runtime.wait_for_workers()
        return self._slots

    def send_order(self, worker_id: str, order: StageOrder) -> None:
        client_id = self._runtime.worker_clients[worker_id]
        self._runtime.runner.send_message("ptu_order", order.as_message(), client_id=client_id)

    def send_cut(self, label: str, end_at: float) -> None:
        self._runtime.runner.send_message("ptu_cut", {"label": label, "end_at": end_at})


class Runtime:
    """The process-wide state of one Locust process running the ptu-verify locustfile."""

    def __init__(self) -> None:
        self.environment: Any = None
        self.runner: Any = None
        self.role = "local"
        self.options: LoadOptions | None = None
        self.own_options: dict[str, Any] = {}
        self.run_id = ""
        self.run_directory: RunDirectory | None = None
        self.plan: PlanSpec | None = None
        self.expected_tokens_per_request = 0.0
        self.plan_time_scale = 1.0
        self.session: LoadSession | None = None
        self.controller: PlanController | None = None
        self.run_info: RunInfo = {}
        self.preflight: dict[str, Any] | None = None
        self.worker_clients: dict[str, str] = {}  # worker id -> Locust client id
        self.finals: dict[str, dict[str, Any]] = {}
        self.mismatches: dict[str, dict[str, Any]] = {}
        self.started_at: float | None = None
        self.stop_requested: str | None = None
        self.finished = False

    # ----- init ------------------------------------------------------------------------------

    def on_init(self, environment: Any, runner: Any, **_kwargs: Any) -> None:
        """Validate options, run the preflight and create the run directory (master or local)."""
        self.environment = environment
        self.runner = runner
        if isinstance(runner, WorkerRunner):
            self.role = "worker"
            self.own_options = snapshot_options(environment.parsed_options)
            runner.register_message("ptu_order", self._on_order)
            runner.register_message("ptu_cut", self._on_cut)
            runner.register_message("ptu_stop", self._on_stop, concurrent=True)
            return
        if runner is None:
            return
        self.role = "master" if isinstance(runner, MasterRunner) else "local"

        try:
            self.options = options = load_options(environment.parsed_options, environment.host)
            key_problem = check_api_key(options)
            if key_problem:
                raise InputError(key_problem)
            self._prepare_plan(options)
            self._open_run(environment, runner, options)
        except InputError as error:
            _exit_with_error(error.message)

    def _open_run(self, environment: Any, runner: Any, options: LoadOptions) -> None:
        """Run the preflight, announce the plan and create the run directory; InputError on bad input."""
        parsed = environment.parsed_options
        self.run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
        parsed.ptu_run_id = self.run_id  # forwarded to workers with the other custom options
        run_dir = Path(options.run_dir or f"reports/locust-{self.run_id}")
        parsed.run_dir = str(run_dir)

        if not options.skip_preflight:
            result = run_preflight(options, options.api_key(), run_id=self.run_id)
            self.preflight = result.as_dict()
            if result.problem:
                raise InputError(_("Preflight failed, no load was sent.") + " " + result.problem)

        self._announce_plan(options)
        self.run_directory = RunDirectory(run_dir)
        if isinstance(runner, MasterRunner):
            runner.register_message("ptu_hello", self._on_hello)
            runner.register_message("ptu_batch", self._on_batch)
            runner.register_message("ptu_final", self._on_final)
        self.run_info = self._initial_run_info(options)
        self.run_directory.write_run_info(self.run_info)
        logger.info("Run %s writes to %s", self.run_id, run_dir)
        # The steps above block the gevent loop for seconds (tokenizer, preflight). Without a fresh loop
        # clock, Locust's -t timer, scheduled right after this, fires that much too early.
        gevent.get_hub().loop.update_now()

    def _prepare_plan(self, options: LoadOptions) -> None:
        from ptu_verify.workloads import load_workload

        workload = load_workload(options.workload, seed=options.seed)
        self.expected_tokens_per_request = float(workload.expected_tokens_per_request())
        run_time_s = getattr(self.environment.parsed_options, "run_time", None) or options.max_duration_s
        trace_duration_s = None
        time_scale = 1.0
        trace_offered: tuple[float, float] | None = None
        if options.plan == "trace" and options.trace:
            from ptu_verify.workloads import load_trace

            specs = load_trace(options.trace, seed=options.seed)
            time_scale, trace_duration_s, trace_tpm = trace_timing(specs, options.speedup, options.trace_target_tpm)
            trace_offered = (trace_tpm / time_scale, len(specs) * 60.0 / trace_duration_s)
            logger.info("Trace of %d requests: mean %.0f TPM as recorded, replayed with time scale %.3f", len(specs), trace_tpm, time_scale)
        self.plan = build_plan(options, self.expected_tokens_per_request, run_time_s=run_time_s, trace_duration_s=trace_duration_s)
        if trace_offered is not None:
            self.plan.stages[0] = dataclasses.replace(self.plan.stages[0], offered_tpm=trace_offered[0], offered_qpm=trace_offered[1])
        self.plan_time_scale = time_scale

    def _announce_plan(self, options: LoadOptions) -> None:
        """Print the plan's duration and token estimate; required before loading a non-loopback host."""
        assert self.plan is not None
        duration_s, tokens = estimate_plan(self.plan, options.search_max_stages)
        if duration_s is not None:
            duration_text = _("{minutes:.1f} min").format(minutes=duration_s / 60)
        else:
            duration_text = _("until stopped (-t, --max-duration or Ctrl+C)")
        if tokens is not None:
            tokens_text = _("about {tokens:,.0f} tokens").format(tokens=tokens)
        else:
            tokens_text = _("tokens not estimable for this plan")
        message = _("Plan {plan} against {host} ({code}): {duration}, {tokens}.").format(
            plan=self.plan.kind, host=redact_host(options.host), code=options.deployment_code, duration=duration_text, tokens=tokens_text
        )
        if options.max_total_tokens is not None:
            message += " " + _("Stops at {tokens:,.0f} tokens (--max-total-tokens).").format(tokens=options.max_total_tokens)
        if not is_loopback(options.host):
            sys.stderr.write(message + "\n")
            sys.stderr.flush()
        logger.info(message)

    def _initial_run_info(self, options: LoadOptions) -> RunInfo:
        info: RunInfo = {
            "schema": RUN_SCHEMA,
            "run_id": self.run_id,
            "command": list(sys.argv),
            "versions": software_versions(),
            "host": redact_host(options.host),
            "model": options.model,
            "ptu": options.ptu,
            "deployment_code": options.deployment_code,
            "api": options.api,
            "transport": options.transport,
            "workload": options.workload,
            "plan": options.plan,
            "started_at": time.time(),
            "ended_at": None,
            "partial": True,  # stays true unless the run ends cleanly, so a killed run reads as partial
            "workers": [],
            "preflight": self.preflight,
            "stop_reason": None,
            "api_key_env": options.api_key_env,
        }
        return info

    # ----- test start ------------------------------------------------------------------------

    def on_test_start(self, environment: Any, **_kwargs: Any) -> None:
        """Start the load session (local, worker) and the plan controller (local, master)."""
        if self.role == "worker":
            self._start_worker(environment)
            return
        if self.options is None or self.run_directory is None or self.plan is None:
            return
        if self.started_at is not None:
            logger.error("A second test in the same Locust process is not supported; restart locust for a new run")
            return
        options = self.options
        self.started_at = time.time()
        run_time_s = getattr(environment.parsed_options, "run_time", None)

        if self.role == "local":
            self.session = LoadSession(environment, options, run_id=self.run_id, worker_id="local", sink=LocalSink(self.run_directory, "local"), api_key=options.api_key())
            set_session(self.session)
            # Imports, tokenizer and session live as long as the process. Freezing keeps them out of the
            # garbage collector's full passes, which otherwise paused every stream for 30 ms and more
            # under load (docs/benchmarks.md, measurement fidelity).
            gc.freeze()
            self.session.health.start()
            delivery: Any = LocalDelivery(self.session)
            self.run_info["workers"] = ["local"]
        else:
            delivery = MasterDelivery(self)

        self.controller = PlanController(
            options,
            self.plan,
            self.run_directory,
            delivery,
            self.request_stop,
            expected_tokens_per_request=self.expected_tokens_per_request,
            start_lead_s=1.0 if self.role == "local" else 2.0,
            run_time_s=run_time_s,
            distributed=self.role == "master",
        )
        self.controller.info["time_scale"] = self.plan_time_scale
        self.controller.start()
        if self.plan.kind == "users":
            gevent.spawn(self._fill_users)

    def _fill_users(self) -> None:
        """Write the user count into the users stage of plan.json once spawning is planned."""
        assert self.controller is not None and self.run_directory is not None
        gevent.sleep(1.5)
        stages = self.controller.info["stages"]
        if stages:
            stages[0]["users"] = getattr(self.environment.parsed_options, "num_users", None)
            self.run_directory.write_plan(self.controller.info)

    def request_stop(self, reason: str) -> None:
        """Stop the run from inside (plan end, safety limits); records are kept."""
        if self.stop_requested:
            return
        self.stop_requested = reason
        logger.info("Stopping the run: %s", reason)
        if getattr(self.environment.parsed_options, "headless", False) or getattr(self.environment.parsed_options, "autostart", False):
            gevent.spawn(self.runner.quit)
        else:
            gevent.spawn(self.runner.stop)

    # ----- worker side -----------------------------------------------------------------------

    def _start_worker(self, environment: Any) -> None:
        if self.session is not None:
            return
        parsed = environment.parsed_options
        master_values = snapshot_options(parsed)
        self.mismatches = find_mismatches(self.own_options, master_values)
        worker_id = f"w{self.runner.worker_index}" if self.runner.worker_index >= 0 else self.runner.client_id
        try:
            options = load_options(parsed, environment.host)
        except InputError as error:
            logger.error("Worker %s cannot start: %s", worker_id, error.message)
            return
        if self.mismatches:
            logger.error("Worker %s was started with options that differ from the master's; it follows the master: %s", worker_id, self.mismatches)
        self.options = options
        self.run_id = str(getattr(parsed, "ptu_run_id", "") or "")
        sink = ShippingSink(self.runner.send_message, worker_id)
        self.session = LoadSession(environment, options, run_id=self.run_id, worker_id=worker_id, sink=sink, api_key=options.api_key())
        set_session(self.session)
        gc.freeze()  # as in on_test_start: long-lived objects leave the collector's scans
        self.session.health.start()
        self.runner.send_message("ptu_hello", {"worker_id": worker_id, "mismatches": self.mismatches, "api_key_set": options.api_key() is not None})

    def _on_order(self, environment: Any, msg: Any, **_kwargs: Any) -> None:
        if self.session is not None:
            self.session.dispatcher.add(StageOrder.from_message(msg.data))

    def _on_cut(self, environment: Any, msg: Any, **_kwargs: Any) -> None:
        if self.session is not None:
            self.session.dispatcher.cut(msg.data["label"], float(msg.data["end_at"]))

    def _on_stop(self, environment: Any, msg: Any, **_kwargs: Any) -> None:
        self._finish_worker(float(msg.data.get("drain_timeout_s", 0.0)))

    def _finish_worker(self, drain_timeout_s: float) -> None:
        session = self.session
        if session is None or session.finished:
            return
        by_stage = session.finish(drain_timeout_s)
        records_sent = session.sink.records_sent if isinstance(session.sink, ShippingSink) else 0
        self.runner.send_message("ptu_final", {"worker_id": session.worker_id, "by_stage": by_stage, "records_sent": records_sent})

    # ----- master side -----------------------------------------------------------------------

    def _on_hello(self, environment: Any, msg: Any, **_kwargs: Any) -> None:
        worker_id = str(msg.data["worker_id"])
        self.worker_clients[worker_id] = msg.node_id
        mismatches = msg.data.get("mismatches") or {}
        if mismatches:
            self.mismatches[worker_id] = mismatches
            details = ", ".join(f"--{name.replace('_', '-')} {values['worker']!r} (master {values['master']!r})" for name, values in mismatches.items())
            logger.error("Worker %s was started with options that differ from the master's: %s. It uses the master's values", worker_id, details)
            message = _(
                "Warning: worker {worker} was started with options that differ from the master's: {details}. "
                "It uses the master's values. Start workers without these options or with the same values."
            ).format(worker=worker_id, details=details)
            sys.stderr.write(message + "\n")
        if not msg.data.get("api_key_set", True):
            logger.error("Worker %s has no API key in its environment; its requests will fail with 401", worker_id)
        logger.info("Worker %s is ready to send load", worker_id)

    def _on_batch(self, environment: Any, msg: Any, **_kwargs: Any) -> None:
        if self.run_directory is None:
            return
        data = msg.data
        self.run_directory.add_records(data.get("records") or [])
        self.run_directory.add_health(str(data["worker_id"]), data.get("health") or [])

    def _on_final(self, environment: Any, msg: Any, **_kwargs: Any) -> None:
        self.finals[str(msg.data["worker_id"])] = msg.data

    def _awaited_workers(self) -> set[str]:
        """Return the workers still connected that have not sent their final batch."""
        awaited = set()
        for worker_id, client_id in self.worker_clients.items():
            client = self.runner.clients.get(client_id)
            if worker_id not in self.finals and client is not None and client.state != "missing":
                awaited.add(worker_id)
        return awaited

    def wait_for_workers(self) -> list[str]:
        """Wait until every connected worker sent ptu_hello; return the worker ids that share the load."""
        deadline = time.time() + HELLO_TIMEOUT_S
        while time.time() < deadline:
            expected = len(self.runner.clients.ready) + len(self.runner.clients.spawning) + len(self.runner.clients.running)
            if expected and len(self.worker_clients) >= expected:
                break
            gevent.sleep(0.1)
        if not self.worker_clients:
            logger.error("No worker reported ready within %.0f s; the plan runs without load generators", HELLO_TIMEOUT_S)
        workers = sorted(self.worker_clients)
        self.run_info["workers"] = workers
        return workers

    # ----- stop ------------------------------------------------------------------------------

    def on_test_stopping(self, environment: Any, **_kwargs: Any) -> None:
        """Drain, collect the last records and write the final run.json (master and local)."""
        if self.role == "worker":
            self._finish_worker(0.0)
            return
        self.finish()

    def on_quitting(self, environment: Any, **_kwargs: Any) -> None:
        """Finish when Locust quits without stopping first (SIGTERM, Ctrl+C)."""
        if self.role == "worker":
            self._finish_worker(0.0)
            return
        self.finish()

    def finish(self) -> None:
        """Stop the plan, wait for the last records, write run.json and close the run directory."""
        if self.finished or self.run_directory is None or self.options is None:
            return
        self.finished = True
        options = self.options
        controller = self.controller
        if controller is not None:
            controller.stop()
        drain_timeout_s = options.drain_timeout_s

        lost: list[str] = []
        by_stage: dict[str, dict[str, int]] = {}
        if self.role == "local" and self.session is not None:
            by_stage = self.session.finish(drain_timeout_s)
        elif self.role == "master" and self.worker_clients:
            self.runner.send_message("ptu_stop", {"drain_timeout_s": drain_timeout_s})
            deadline = time.time() + drain_timeout_s + FINAL_GRACE_S
            while time.time() < deadline and self._awaited_workers():
                gevent.sleep(0.1)
            lost = sorted(set(self.worker_clients) - set(self.finals))
            if lost:
                logger.error("Workers %s sent no final batch; their last records may be missing and the run is marked partial", ", ".join(lost))
            by_stage = _sum_stage_counts([final.get("by_stage") or {} for final in self.finals.values()])
            by_stage = _add_health_counts(by_stage, self.run_directory.health_samples, lost)

        self.run_directory.close()
        self._write_final_run_info(by_stage, lost)
        if getattr(self.environment.parsed_options, "csv_prefix", None):
            # Locust rewrites its CSV files once per CSV_STATS_INTERVAL_SEC; let it see the drained requests.
            from locust.stats import CSV_STATS_INTERVAL_SEC

            gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.2)

    def _write_final_run_info(self, by_stage: dict[str, dict[str, int]], lost: list[str]) -> None:
        assert self.run_directory is not None and self.options is not None
        now = time.time()
        verdict = assess_generator(by_stage, self.run_directory.health_samples)
        reason, complete = self._stop_reason(now)
        info = self.run_info
        info["ended_at"] = now
        info["partial"] = not complete or bool(lost)
        info["stop_reason"] = reason
        info["lost_workers"] = lost
        info["option_mismatches"] = self.mismatches
        info["generator"] = verdict.as_dict()
        info["generator_behind"] = verdict.behind
        info["records_written"] = self.run_directory.records.rows_written
        self.run_directory.write_run_info(info)
        if verdict.behind:
            logger.warning("The load generator fell behind (%s); treat latency figures of this run as inconclusive", "; ".join(verdict.reasons))
        logger.info("Run %s ended (%s): %d records in %s", self.run_id, reason, self.run_directory.records.rows_written, self.run_directory.path)

    def _stop_reason(self, now: float) -> tuple[str, bool]:
        """Return why the run stopped and whether that is its natural end.

        Plans users and rate have no end of their own: -t or --max-duration ends them normally.
        """
        controller = self.controller
        if controller is not None and controller.completed:
            return "plan completed", True
        open_ended = self.plan is not None and self.plan.kind in ("users", "rate")
        requested = controller.stop_reason if controller is not None else None
        if requested == "max-duration reached":
            return requested, open_ended
        if requested:
            return requested, False
        run_time_s = getattr(self.environment.parsed_options, "run_time", None)
        if run_time_s and self.started_at and now >= self.started_at + run_time_s - 1.0:
            return "run time limit (-t) reached", open_ended
        return "interrupted", False


def _sum_stage_counts(parts: list[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    total: dict[str, dict[str, int]] = {}
    for part in parts:
        for stage, counts in part.items():
            target = total.setdefault(stage, {"dispatched": 0, "late": 0, "dropped": 0})
            for key in target:
                target[key] += int(counts.get(key, 0))
    return total


def _add_health_counts(by_stage: dict[str, dict[str, int]], samples: list[dict[str, Any]], workers: list[str]) -> dict[str, dict[str, int]]:
    """Add the dispatch counts of lost workers, taken from the health samples they shipped."""
    lost = set(workers)
    for sample in samples:
        if sample.get("worker_id") not in lost:
            continue
        target = by_stage.setdefault(str(sample.get("stage")), {"dispatched": 0, "late": 0, "dropped": 0})
        target["dispatched"] += int(sample.get("dispatched", 0))
        target["late"] += int(sample.get("late_dispatches", 0))
        target["dropped"] += int(sample.get("dropped_dispatches", 0))
    return by_stage


_RUNTIME = Runtime()


def install(events: Any) -> Runtime:
    """Register the ptu-verify handlers on Locust's events and return the process runtime.

    Also loads the Qwen tokenizer now (1-2 s of CPU): loaded lazily inside a worker's first request it
    would block the event loop long enough for the master to declare the worker missing. Processes
    forked by ``--processes`` inherit it.
    """
    from ptu_verify.i18n import set_language
    from ptu_verify.tokens import count_tokens

    from .options import register_options

    set_language(None)  # PTU_VERIFY_LANG or the locale variables choose en or zh
    count_tokens("warm up")

    events.init_command_line_parser.add_listener(register_options)
    events.init.add_listener(_RUNTIME.on_init)
    events.test_start.add_listener(_RUNTIME.on_test_start)
    events.test_stopping.add_listener(_RUNTIME.on_test_stopping)
    events.quitting.add_listener(_RUNTIME.on_quitting)
    return _RUNTIME

"""The main job: pick the target, run Locust headless as a subprocess, show progress, analyse, render.

Locust runs as ``python -m locust -f <installed loadtest/locustfile.py>``, exactly what a user's
``locust -f`` runs, so a ``ptu-verify run`` and a hand-started Locust produce the same run directory.
Without a base URL the built-in simulator serves the run from a thread of this process.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any, Literal

from ..catalog import ModelSpec
from ..errors import InputError, RuntimeFailure
from ..i18n import _, get_language
from ..sizing import Prices
from .progress import RecordTail, compute_progress, format_plan_estimate, format_progress, read_plan

__all__ = [
    "RunOptions",
    "RunOutcome",
    "LoadSettings",
    "SIMULATOR_API_KEY",
    "DEFAULT_API_KEY_ENV",
    "ACCEPTANCE",
    "SIMULATOR_DEMO",
    "load_settings",
    "default_run_dir",
    "SIMULATOR_DEMO_POLICY",
    "locustfile_path",
    "build_locust_command",
    "run_load_test",
]

logger = logging.getLogger(__name__)

DEFAULT_API_KEY_ENV = "DASHSCOPE_API_KEY"
# A fake key for the built-in simulator; it reaches the Locust subprocess through the environment only.
SIMULATOR_API_KEY = "sk-simulated-local-0000"
# A progress line is due every 4 s and printed at the next poll, so lines are at most 5 s apart.
PROGRESS_INTERVAL_S = 4.0
POLL_INTERVAL_S = 1.0
# Time Locust gets to flush its records and exit after SIGTERM before it is killed.
STOP_GRACE_S = 20.0
# Time Locust may run past the end of its plan (or --max-duration) before it is stopped.
OVERRUN_GRACE_S = 90.0


@dataclass(frozen=True)
class LoadSettings:
    """Plan arguments handed to the Locust side; None leaves the Locust side's own default."""

    plan: str
    stages: tuple[float, ...] | None = None  # fractions of the purchased capacity
    stage_duration_s: float | None = None
    warmup_s: float | None = None
    arrival: str | None = None  # poisson | constant
    simulator_knobs: dict[str, Any] = field(default_factory=dict)


# Post-deployment check on a real deployment: the Locust side's acceptance preset, five shortened
# steps at 0.5, 0.75, 0.9, 1.0 and 1.1 of capacity, 105 s each with a 25 s warm-up (8 min 45 s of load).
ACCEPTANCE = LoadSettings(plan="acceptance")

# The out-of-the-box demo on the built-in simulator: five short steps through saturation,
# 5 × (5 s warm-up + 25 s measured) = 2 min 30 s. Arrivals are constant instead of Poisson, so the
# 100 % stage offers exactly the capacity and the verdict does not hinge on a random burst in a short
# stage. The simulator's limiter window is 12 s instead of Bailian's 60 s, so throttling settles
# within a 25 s stage; 12 s also makes the per-window budget of the default 8 PTU a whole number.
SIMULATOR_DEMO = LoadSettings(
    plan="step",
    stages=(0.5, 0.75, 1.0, 1.25, 1.5),
    stage_duration_s=30.0,
    warmup_s=5.0,
    arrival="constant",
    simulator_knobs={"window_s": 12.0},
)

# Analysis policy of the demo, written into the run directory: a 25 s stage at half capacity contains
# about 40 requests of the default workload (QPM-bound at 8 PTU), under the 100 that the default
# policy wants per stage.
SIMULATOR_DEMO_POLICY = """\
# Policy of the simulator demo (short stages); a real deployment uses the default policy.
[data]
min_successful_requests = 30

[confidence]
window_s = 5.0
"""


@dataclass(frozen=True)
class RunOptions:
    """Everything ``ptu-verify run`` was asked to do."""

    spec: ModelSpec
    ptu: int
    deployment_code: str | None = None
    base_url: str | None = None  # None: start the built-in simulator
    api: Literal["openai", "dashscope"] = "openai"
    transport: Literal["fast", "sdk"] = "fast"
    workload: str | None = None
    plan: str | None = None  # None: the demo plan on the simulator, "step" on a real deployment
    stages: tuple[float, ...] | None = None
    stage_duration_s: float | None = None
    warmup_s: float | None = None
    processes: int = 1
    out_dir: Path | None = None
    policy_path: Path | None = None
    catalog_path: Path | None = None
    target_tpm: float | None = None
    target_qpm: float | None = None
    headroom: float = 0.0
    prices: Prices | None = None
    seed: int | None = None
    max_duration_s: float | None = None
    max_total_tokens: int | None = None
    api_key_env: str = DEFAULT_API_KEY_ENV
    extra_locust_args: tuple[str, ...] = ()  # appended to the Locust command line unchanged
    simulator_settings: dict[str, Any] = field(default_factory=dict)  # SimulatorConfig fields, over the demo's

    @property
    def simulated(self) -> bool:
        """True when the run targets the built-in simulator."""
        return self.base_url is None


@dataclass(frozen=True)
class RunOutcome:
    """The result of a run: where it went, how it ended and the analysis summary."""

    run_dir: Path
    report_path: Path | None
    exit_code: int
    verdict: str | None
    partial: bool
    simulated: bool
    summary: Any = None  # ptu_verify.analysis summary object


def load_settings(options: RunOptions) -> LoadSettings:
    """Return the plan settings for this run: the user's values over the preset for the target."""
    if options.plan == "acceptance":
        preset = ACCEPTANCE
    elif options.plan is None and options.simulated:
        preset = SIMULATOR_DEMO
    else:
        preset = LoadSettings(plan=options.plan or "step")

    knobs = dict(SIMULATOR_DEMO.simulator_knobs) if options.simulated and preset is SIMULATOR_DEMO else {}
    knobs.update(options.simulator_settings)
    return LoadSettings(
        plan=preset.plan,
        stages=options.stages if options.stages is not None else preset.stages,
        stage_duration_s=options.stage_duration_s if options.stage_duration_s is not None else preset.stage_duration_s,
        warmup_s=options.warmup_s if options.warmup_s is not None else preset.warmup_s,
        arrival=preset.arrival,
        simulator_knobs=knobs,
    )


def default_run_dir(deployment_code: str, now: datetime | None = None, base: Path | None = None) -> Path:
    """Return reports/<UTC timestamp>-<deployment code>/ under ``base`` (the current directory)."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    root = (base or Path.cwd()) / "reports"
    candidate = root / f"{stamp}-{deployment_code}"
    suffix = 2
    while candidate.exists():
        candidate = root / f"{stamp}-{deployment_code}-{suffix}"
        suffix += 1
    return candidate


def locustfile_path() -> Path:
    """Return the installed loadtest/locustfile.py without importing the package (it patches with gevent)."""
    spec = importlib.util.find_spec("loadtest")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeFailure(_("The loadtest package is not installed; reinstall ptu-verify (pip install .)."))
    path = Path(next(iter(spec.submodule_search_locations))) / "locustfile.py"
    if not path.is_file():
        raise RuntimeFailure(_("{path} is missing; reinstall ptu-verify (pip install .).").format(path=path))
    return path


def _format_number(value: float) -> str:
    return f"{value:g}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def build_locust_command(options: RunOptions, settings: LoadSettings, *, host: str, deployment_code: str, run_dir: Path) -> list[str]:
    """Return the Locust command line; it never contains the API key, only the name of its variable."""
    command = [
        sys.executable, "-m", "locust",
        "-f", str(locustfile_path()),
        "--headless",
        "--host", host,
        "--deployment-code", deployment_code,
        "--api", options.api,
        "--transport", options.transport,
        "--run-dir", str(run_dir),
        "--plan", settings.plan,
        "--model", options.spec.version,
        "--ptu", str(options.ptu),
        "--api-key-env", options.api_key_env,
    ]  # fmt: skip

    if options.processes > 1:
        # Locust's master binds *:5557 by default; a private loopback port keeps parallel runs apart.
        port = str(_free_port())
        command += ["--processes", str(options.processes), "--master-bind-host", "127.0.0.1", "--master-bind-port", port, "--master-port", port]

    if options.workload:
        command += ["--workload", options.workload]
    if settings.stages is not None:
        command += ["--stages", ",".join(_format_number(value) for value in settings.stages)]
    if settings.stage_duration_s is not None:
        command += ["--stage-duration", _format_number(settings.stage_duration_s)]
    if settings.warmup_s is not None:
        command += ["--warmup", _format_number(settings.warmup_s)]
    if settings.arrival is not None:
        command += ["--arrival", settings.arrival]

    if options.max_duration_s is not None:
        command += ["--max-duration", _format_number(options.max_duration_s)]
    if options.max_total_tokens is not None:
        command += ["--max-total-tokens", str(options.max_total_tokens)]
    if options.seed is not None:
        command += ["--seed", str(options.seed)]
    return command + list(options.extra_locust_args)


class _StopRequest:
    """Set by SIGINT or SIGTERM while Locust runs; a second signal kills Locust at once."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signals = 0

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        self.event.set()


@contextmanager
def _signals_to(stop: _StopRequest) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, stop.handle) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _start_simulator(options: RunOptions, knobs: dict[str, Any]) -> Any:
    from ..simulator import SimulatorConfig, start_simulator

    config = SimulatorConfig.for_model(
        options.spec.version,
        options.ptu,
        deployment_code=options.deployment_code,
        catalog_path=options.catalog_path,
        seed=options.seed,
        api_key=SIMULATOR_API_KEY,
        **knobs,
    )
    return start_simulator(config)


def _check_api_key(options: RunOptions) -> None:
    if options.simulated or os.environ.get(options.api_key_env):
        return
    raise InputError(
        _(
            "The environment variable {name} is not set, and --base-url needs the deployment's API key in it. "
            "Set it (export {name}=sk-...) or name another variable with --api-key-env."
        ).format(name=options.api_key_env)
    )


def _locust_environment(options: RunOptions) -> dict[str, str]:
    environment = dict(os.environ)
    if options.simulated:
        environment[options.api_key_env] = SIMULATOR_API_KEY
    # Locust's own messages (preflight errors, the plan estimate) in the language of this command.
    environment["PTU_VERIFY_LANG"] = get_language()
    # Unbuffered, so the tail of locust.log shown after a failure is complete.
    environment.setdefault("PYTHONUNBUFFERED", "1")
    return environment


def _log_tail(path: Path, secret: str | None, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    tail = "\n".join(text.splitlines()[-lines:])
    return tail.replace(secret, "***") if secret else tail


def _stop_locust(process: subprocess.Popen[bytes], stop: _StopRequest) -> None:
    """Ask Locust to shut down (SIGTERM flushes its records); kill its process group if it hangs."""
    if process.poll() is not None:
        return
    logger.info("Stopping Locust (pid %s)", process.pid)
    process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while process.poll() is None and time.monotonic() < deadline and stop.signals < 2:
        time.sleep(0.1)
    if process.poll() is None:
        logger.error("Locust did not exit within %.0f s of SIGTERM; killing its process group %s", STOP_GRACE_S, process.pid)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


@dataclass
class _LocustResult:
    returncode: int
    interrupted: bool
    overran: bool


def _watch_locust(
    process: subprocess.Popen[bytes], run_dir: Path, options: RunOptions, stop: _StopRequest, echo: Callable[[str], None]
) -> _LocustResult:
    """Print progress every PROGRESS_INTERVAL_S until Locust exits, is interrupted or overruns its plan."""
    tail = RecordTail(run_dir)
    started = time.time()
    last_print = 0.0
    announced = False
    overran = False
    while process.poll() is None:
        stop.event.wait(POLL_INTERVAL_S)
        if stop.event.is_set():
            echo(_("Interrupted: stopping the load and analysing what was recorded…"))
            _stop_locust(process, stop)
            return _LocustResult(process.returncode, interrupted=True, overran=False)

        now = time.time()
        tail.poll()
        plan = read_plan(run_dir)
        if plan is not None and not announced:
            # The Locust side prints its estimate to locust.log only, so ``run`` prints it on screen.
            echo(format_plan_estimate(plan))
            announced = True
        if now - last_print >= PROGRESS_INTERVAL_S:
            echo(format_progress(compute_progress(tail.records, plan, now)))
            last_print = now

        deadline = _overrun_deadline(plan, options, started)
        if deadline is not None and now > deadline:
            logger.warning("Locust is still running %.0f s after its plan ended; stopping it", OVERRUN_GRACE_S)
            _stop_locust(process, stop)
            overran = True
    return _LocustResult(process.returncode, interrupted=False, overran=overran)


def _overrun_deadline(plan: Any, options: RunOptions, started: float) -> float | None:
    ends = [stage["end_at"] for stage in (plan or {}).get("stages", [])]
    candidates = []
    if ends:
        candidates.append(max(ends) + OVERRUN_GRACE_S)
    if options.max_duration_s is not None:
        candidates.append(started + options.max_duration_s + OVERRUN_GRACE_S)
    return min(candidates) if candidates else None


def _update_run_info(run_dir: Path, options: RunOptions, *, simulated: bool, partial: bool) -> None:
    """Add the orchestrator's facts to run.json: simulated target, partial run, model and PTUs."""
    path = run_dir / "run.json"
    try:
        info: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        logger.warning("%s is missing or unreadable; writing a minimal one", path)
        info = {"schema": "ptu-verify/run-v1", "started_at": time.time()}
    info["simulated"] = simulated
    info["partial"] = bool(info.get("partial")) or partial
    info.setdefault("model", options.spec.version)
    info.setdefault("ptu", options.ptu)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(info, indent=2, ensure_ascii=False), encoding="utf-8")
    temporary.replace(path)


def _analyse(options: RunOptions, run_dir: Path, *, policy_path: Path | None, partial: bool) -> tuple[Any, Path]:
    from ..analysis import AnalysisOptions, analyze_run
    from ..report import write_reports

    analysis_options = AnalysisOptions(
        model=options.spec.version,
        ptu=options.ptu,
        catalog_path=options.catalog_path,
        policy_path=policy_path,
        target_tpm=options.target_tpm,
        target_qpm=options.target_qpm,
        headroom=options.headroom,
        prices=options.prices or Prices(),
        partial=partial,
    )
    summary = analyze_run(run_dir, analysis_options)
    paths = write_reports(summary, run_dir, lang=get_language())
    return summary, paths["verdict.html"]


def _demo_policy(options: RunOptions, run_dir: Path) -> Path | None:
    """Write the demo policy into the run directory when the run is the simulator demo without --policy."""
    if options.policy_path is not None or not options.simulated or options.plan is not None:
        return options.policy_path
    path = run_dir / "demo-policy.toml"
    path.write_text(SIMULATOR_DEMO_POLICY, encoding="utf-8")
    logger.info("Simulator demo: analysing with the short-stage policy in %s", path)
    return path


def _has_records(run_dir: Path) -> bool:
    return any(path.stat().st_size > 0 for path in run_dir.glob("records*.jsonl"))


def _run_locust(options: RunOptions, settings: LoadSettings, *, host: str, deployment_code: str, run_dir: Path, echo: Callable[[str], None]) -> _LocustResult:
    command = build_locust_command(options, settings, host=host, deployment_code=deployment_code, run_dir=run_dir)
    log_path = run_dir / "locust.log"
    stop = _StopRequest()
    logger.info("Starting Locust: %s", " ".join(command))
    with _signals_to(stop), log_path.open("wb") as log:
        process = subprocess.Popen(command, env=_locust_environment(options), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            result = _watch_locust(process, run_dir, options, stop, echo)
        finally:
            _stop_locust(process, stop)
    logger.info("Locust exited with code %s", result.returncode)
    return result


def _check_locust_result(result: _LocustResult, options: RunOptions, run_dir: Path) -> None:
    """Raise when Locust recorded nothing: exit 2 after an option error or a failed preflight, exit 4 otherwise."""
    if _has_records(run_dir):
        return
    log_path = run_dir / "locust.log"
    secret = None if options.simulated else os.environ.get(options.api_key_env)
    if not result.interrupted and result.returncode == 2:
        raise InputError(
            _("Locust stopped before sending load (exit code 2: an invalid option or a failed preflight check). Its last output ({path}):\n{tail}").format(
                path=log_path, tail=_log_tail(log_path, secret)
            )
        )
    raise RuntimeFailure(
        _("Locust exited with code {code} and recorded no requests. Its last output ({path}):\n{tail}").format(
            code=result.returncode, path=log_path, tail=_log_tail(log_path, secret)
        )
    )


def _check_analysis_inputs(options: RunOptions) -> None:
    """Reject a bad --policy file or --headroom before any load is sent, not after the whole run."""
    from ..analysis.policy import load_policy
    from ..sizing import MAX_HEADROOM

    load_policy(options.policy_path)
    if not 0 <= options.headroom <= MAX_HEADROOM:
        raise InputError(
            _("--headroom must be between 0 and {max} (a fraction: 0.2 means 20 %), got {value}.").format(max=MAX_HEADROOM, value=options.headroom)
        )


def _check_run_inputs(options: RunOptions, settings: LoadSettings) -> None:
    """Reject a bad --base-url, a non-finite target and a warm-up that fills its stage before anything starts."""
    from loadtest.options import base_url_problem, default_warmup_s
    from loadtest.plans import PLAN_DEFAULTS

    if options.base_url is not None:
        problem = base_url_problem(options.base_url, "--base-url", options.api)
        if problem:
            raise InputError(problem)
    for name, value in (("--target-tpm", options.target_tpm), ("--target-qpm", options.target_qpm)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise InputError(_("{option} must be a finite number above 0, got {value}.").format(option=name, value=value))

    if settings.plan not in ("step", "search", "acceptance"):
        return
    duration_s = settings.stage_duration_s if settings.stage_duration_s is not None else PLAN_DEFAULTS[settings.plan][0]
    warmup_s = settings.warmup_s if settings.warmup_s is not None else default_warmup_s(settings.plan, settings.stage_duration_s)
    if warmup_s >= duration_s:
        raise InputError(
            _("--warmup {warmup} must be shorter than --stage-duration {duration}: lower --warmup or raise --stage-duration.").format(
                warmup=_format_number(warmup_s), duration=_format_number(duration_s)
            )
        )


def run_load_test(options: RunOptions, *, echo: Callable[[str], None] = print) -> RunOutcome:
    """Run the whole job and return its outcome; raises InputError (exit 2) or RuntimeFailure (exit 4)."""
    _check_run_inputs(options, load_settings(options))
    _check_api_key(options)
    _check_analysis_inputs(options)
    if not options.simulated and options.simulator_settings:
        raise InputError(_("--simulator settings apply to the built-in simulator only; remove them or remove --base-url."))
    if not options.simulated and not options.deployment_code:
        raise InputError(_("--deployment-code is required with --base-url: give the code shown in the Bailian console, e.g. qwen-plus-d824b8ad."))
    settings = load_settings(options)

    simulator: AbstractContextManager[Any] = _start_simulator(options, settings.simulator_knobs) if options.simulated else nullcontext()
    with simulator as sim:
        if sim is None:
            host, deployment_code = str(options.base_url), str(options.deployment_code)
        else:
            host = sim.openai_base_url if options.api == "openai" else sim.dashscope_base_url
            deployment_code = sim.config.deployment_code
            echo(
                _("SIMULATED: no network and no API key; the built-in simulator of {model} with {ptu} PTU serves {url}").format(
                    model=options.spec.version, ptu=options.ptu, url=host
                )
            )
        run_dir = options.out_dir or default_run_dir(deployment_code)
        run_dir.mkdir(parents=True, exist_ok=True)
        echo(_("Run directory: {path}").format(path=run_dir))

        result = _run_locust(options, settings, host=host, deployment_code=deployment_code, run_dir=run_dir, echo=echo)
        if sim is not None:
            (run_dir / "simulator.json").write_text(json.dumps(sim.stats(), indent=2, default=str), encoding="utf-8")

    _check_locust_result(result, options, run_dir)
    partial = result.interrupted
    _update_run_info(run_dir, options, simulated=options.simulated, partial=partial)
    policy_path = _demo_policy(options, run_dir)
    summary, report_path = _analyse(options, run_dir, policy_path=policy_path, partial=partial)
    return RunOutcome(
        run_dir=run_dir,
        report_path=report_path,
        exit_code=int(summary.exit_code),
        verdict=str(summary.verdict),
        # run.json may mark the run partial too (max-duration or -t before the plan's end).
        partial=bool(summary.partial),
        simulated=options.simulated,
        summary=summary,
    )

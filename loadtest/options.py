"""Command-line options of the locustfile, registered on Locust's own parser.

Every option is also readable from locust.conf (the long name without dashes, e.g. ``deployment-code``)
and from a ``LOCUST_*`` environment variable (``LOCUST_DEPLOYMENT_CODE``). Locust forwards the values of
custom options from the master to every worker in its spawn message; :func:`find_mismatches` compares
them with the values a worker was started with.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ptu_verify.errors import InputError
from ptu_verify.i18n import _

__all__ = [
    "API_PATHS",
    "OPTION_DESTS",
    "PLANS",
    "LoadOptions",
    "base_url_problem",
    "default_warmup_s",
    "find_mismatches",
    "load_options",
    "option_defaults",
    "parse_fractions",
    "parse_wait_time",
    "register_options",
    "snapshot_options",
]

PLANS = ("users", "rate", "step", "search", "trace", "acceptance")
OPEN_LOOP_PLANS = ("rate", "step", "search", "trace", "acceptance")
DEFAULT_STAGES = "0.5,0.75,0.9,1.0,1.1,1.25"
ACCEPTANCE_STAGES = "0.5,0.75,0.9,1.0,1.1"

# (flags, keyword arguments) of every option; dest is derived from the first long flag.
_OPTION_SPECS: list[tuple[str, dict[str, Any]]] = [
    ("--deployment-code", {"metavar": "CODE", "help": "Deployment code sent as the model name, e.g. qwen-plus-d824b8ad."}),
    ("--api", {"choices": ["openai", "dashscope"], "default": "openai", "help": "API of --host: openai (…/compatible-mode/v1) or dashscope (…/api/v1)."}),
    ("--transport", {"choices": ["fast", "sdk"], "default": "fast", "help": "fast: geventhttpclient with our SSE parser; sdk: the official openai or dashscope client."}),
    ("--workload", {"metavar": "NAME|PATH", "default": "smoke", "help": "Built-in workload name or workload file."}),
    ("--run-dir", {"metavar": "DIR", "help": "Directory for records.jsonl, run.json, plan.json and health files (default reports/locust-<UTC time>)."}),
    ("--api-key-env", {"metavar": "NAME", "default": "DASHSCOPE_API_KEY", "help": "Environment variable that holds the API key. The key itself is never a flag."}),
    ("--thinking", {"action": "store_true", "default": False, "help": "Send enable_thinking=true (thinking models)."}),
    ("--request-timeout", {"type": float, "metavar": "SECONDS", "default": 120.0, "help": "Timeout of one request attempt, in seconds."}),
    ("--retry-429", {"action": "store_true", "default": False, "help": "Retry throttled attempts with the server's hint or backoff; every attempt is recorded."}),
    ("--max-attempts", {"type": int, "metavar": "N", "default": 3, "help": "Attempts per request with --retry-429."}),
    ("--seed", {"type": int, "metavar": "N", "default": None, "help": "Random seed of the workload and the arrival process."}),
    ("--model", {"metavar": "MODEL", "help": "Model version or family, for the nominal capacity of the plans (catalog name)."}),
    ("--ptu", {"type": int, "metavar": "N", "help": "PTUs of the deployment, for the nominal capacity of the plans."}),
    ("--skip-preflight", {"action": "store_true", "default": False, "help": "Do not send the preflight request before the load starts."}),
    ("--wait-time", {"metavar": "SECONDS|MIN-MAX", "default": "0", "help": "Closed-loop users (--plan users): pause between requests, constant or uniform in MIN-MAX seconds."}),
    ("--plan", {"choices": list(PLANS), "default": "users", "help": "users: closed-loop Locust users; rate, step, search, trace, acceptance: open-loop arrivals."}),
    ("--arrival", {"choices": ["poisson", "constant"], "default": "poisson", "help": "Open-loop arrival process."}),
    ("--arrival-qpm", {"type": float, "metavar": "N", "help": "--plan rate: arrivals per minute."}),
    ("--offered-tpm", {"type": float, "metavar": "N", "help": "--plan rate: offered tokens per minute, converted with the workload's expected tokens per request."}),
    ("--max-in-flight", {"type": int, "metavar": "N", "default": 1000, "help": "Open-loop plans: requests in flight per worker; arrivals beyond it are dropped and counted."}),
    ("--stages", {"metavar": "F1,F2,…", "help": f"--plan step: fractions of nominal capacity (default {DEFAULT_STAGES})."}),
    ("--stage-duration", {"type": float, "metavar": "SECONDS", "help": "Length of one stage including its warm-up (step 150, search 90, acceptance 105)."}),
    ("--warmup", {"type": float, "metavar": "SECONDS", "help": "Warm-up part of each stage, excluded from statistics (step 30, search 30, acceptance 25; without --warmup at most a quarter of --stage-duration)."}),
    ("--burst-credit", {"action": "store_true", "default": False, "help": "Start with a phase at capacity until the first 429 (or --burst-credit-max), excluded from statistics."}),
    ("--burst-credit-max", {"type": float, "metavar": "SECONDS", "default": 120.0, "help": "Time limit of the burst-credit phase, in seconds."}),
    ("--search-tolerance", {"type": float, "metavar": "FRACTION", "default": 0.05, "help": "--plan search: stop when the bracket is narrower than this fraction of capacity."}),
    ("--search-max-stages", {"type": int, "metavar": "N", "default": 8, "help": "--plan search: maximum number of stages."}),
    ("--trace", {"metavar": "PATH", "help": "--plan trace: trace file whose timestamps are replayed."}),
    ("--speedup", {"type": float, "metavar": "X", "default": 1.0, "help": "--plan trace: replay X times faster than recorded."}),
    ("--trace-target-tpm", {"type": float, "metavar": "N", "help": "--plan trace: rescale the trace's timing so its mean load is N tokens per minute."}),
    ("--max-total-tokens", {"type": float, "metavar": "N", "help": "Stop cleanly once the recorded requests used this many tokens."}),
    ("--max-duration", {"type": float, "metavar": "SECONDS", "help": "Stop cleanly after this many seconds."}),
    ("--drain-timeout", {"type": float, "metavar": "SECONDS", "default": 30.0, "help": "At the end, wait this long for requests in flight before stopping."}),
]


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


OPTION_DESTS: tuple[str, ...] = tuple(_dest(flag) for flag, _kwargs in _OPTION_SPECS)


def register_options(parser: Any) -> None:
    """Add the ptu-verify options to Locust's argument parser (a configargparse parser)."""
    group = parser.add_argument_group("ptu-verify", "Options of the ptu-verify locustfile (also LOCUST_* variables and locust.conf).")
    for flag, kwargs in _OPTION_SPECS:
        env_var = "LOCUST_" + _dest(flag).upper()
        group.add_argument(flag, env_var=env_var, **kwargs)


def option_defaults() -> dict[str, Any]:
    """Return the default value of every ptu-verify option."""
    return {_dest(flag): kwargs.get("default") for flag, kwargs in _OPTION_SPECS}


def snapshot_options(parsed: argparse.Namespace | None) -> dict[str, Any]:
    """Return the current values of the ptu-verify options in Locust's parsed options."""
    values = vars(parsed) if parsed is not None else {}
    return {dest: values.get(dest) for dest in OPTION_DESTS}


def find_mismatches(own: dict[str, Any], master: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return the options a worker was started with that differ from the master's values.

    A worker option left at its default is not a mismatch: that is how options given only on the
    master reach the workers.
    """
    defaults = option_defaults()
    mismatches: dict[str, dict[str, Any]] = {}
    for dest in OPTION_DESTS:
        worker_value = own.get(dest)
        if worker_value == defaults[dest] or worker_value is None:
            continue
        if worker_value != master.get(dest):
            mismatches[dest] = {"worker": worker_value, "master": master.get(dest)}
    return mismatches


def parse_fractions(text: str, option: str = "--stages") -> list[float]:
    """Parse ``0.5,0.75,1`` into fractions; raise InputError naming the option on bad input."""
    fractions: list[float] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise InputError(f"Invalid {option} value {part!r}: expected comma-separated numbers such as {DEFAULT_STAGES}.") from None
        if value <= 0:
            raise InputError(f"Invalid {option} value {part!r}: fractions of capacity must be positive.")
        fractions.append(value)
    if not fractions:
        raise InputError(f"Invalid {option} value {text!r}: give at least one fraction, e.g. {DEFAULT_STAGES}.")
    return fractions


def parse_wait_time(text: str) -> tuple[float, float]:
    """Parse ``--wait-time``: ``2`` is a constant 2 s, ``1-3`` uniform between 1 and 3 s."""
    try:
        if "-" in text.strip().lstrip("-"):
            low_text, high_text = text.split("-", 1)
            low, high = float(low_text), float(high_text)
        else:
            low = high = float(text)
    except ValueError:
        raise InputError(f"Invalid --wait-time {text!r}: give seconds (2) or a range (1-3).") from None
    if low < 0 or high < low:
        raise InputError(f"Invalid --wait-time {text!r}: the range must be non-negative and MIN ≤ MAX.")
    return low, high


@dataclass(frozen=True)
class LoadOptions:
    """The ptu-verify options of one Locust process, validated."""

    host: str
    deployment_code: str
    api: str
    transport: str
    workload: str
    run_dir: str | None
    api_key_env: str
    thinking: bool
    request_timeout_s: float
    retry_429: bool
    max_attempts: int
    seed: int | None
    model: str | None
    ptu: int | None
    skip_preflight: bool
    wait_time_s: tuple[float, float]
    plan: str
    arrival: str
    arrival_qpm: float | None
    offered_tpm: float | None
    max_in_flight: int
    stages: str | None
    stage_duration_s: float | None
    warmup_s: float | None
    burst_credit: bool
    burst_credit_max_s: float
    search_tolerance: float
    search_max_stages: int
    trace: str | None
    speedup: float
    trace_target_tpm: float | None
    max_total_tokens: float | None
    max_duration_s: float | None
    drain_timeout_s: float

    @property
    def open_loop(self) -> bool:
        """True for plans that dispatch requests at scheduled times instead of closed-loop users."""
        return self.plan in OPEN_LOOP_PLANS

    def api_key(self) -> str | None:
        """Return the API key from the environment variable named by --api-key-env."""
        return os.environ.get(self.api_key_env) or None


def is_loopback(url: str) -> bool:
    """True when ``url`` points at this machine (127.0.0.0/8, ::1 or localhost)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


API_PATHS = {"openai": "/compatible-mode/v1", "dashscope": "/api/v1"}

# Share of a stage that a default warm-up may take when --stage-duration is set and --warmup is not.
DEFAULT_WARMUP_SHARE = 0.25


def base_url_problem(url: str, option: str, api: str | None = None) -> str | None:
    """Return why ``url`` cannot be an API base URL (of ``api``, when given), or None when it can."""
    parts = urlsplit(url)
    example = "https://dashscope.aliyuncs.com" + API_PATHS[api or "openai"]
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        return _("{option} {url} is not a usable URL: give http:// or https://, a host and the API path, e.g. {example}.").format(
            option=option, url=url, example=example
        )
    if api is not None and not parts.path.rstrip("/").endswith(API_PATHS[api]):
        return _("{option} {url}: the {api} API is served under a path ending in {path}; use e.g. {example}, or choose the other --api.").format(
            option=option, url=url, api=api, path=API_PATHS[api], example=example
        )
    return None


def default_warmup_s(plan: str, stage_duration_s: float | None) -> float:
    """Return the warm-up of ``plan`` when --warmup is not given: the plan's default, at most a quarter of the stage."""
    from .plans import PLAN_DEFAULTS

    plan_default_s = PLAN_DEFAULTS.get(plan, (0.0, 0.0))[1]
    if stage_duration_s is None:
        return plan_default_s
    return min(plan_default_s, DEFAULT_WARMUP_SHARE * stage_duration_s)


def _positive(name: str, value: float | None) -> None:
    if value is not None and value <= 0:
        raise InputError(f"Invalid {name} {value}: it must be greater than 0.")


def _scaled_warmup_s(values: dict[str, Any]) -> float | None:
    """Scale the plan's default warm-up down to a short --stage-duration; None keeps the plan's default."""
    if values.get("stage_duration") is None:
        return None
    return default_warmup_s(values.get("plan") or "users", values["stage_duration"])


def _float_or(value: Any, default: float) -> float:
    return default if value is None else float(value)


def load_options(parsed: argparse.Namespace, host: str | None) -> LoadOptions:
    """Validate Locust's parsed options into LoadOptions; raise InputError naming the bad option."""
    values = vars(parsed)
    if not host:
        raise InputError(_("Missing --host: give the API base URL, e.g. http://127.0.0.1:8000/compatible-mode/v1 (openai) or …/api/v1 (dashscope)."))
    deployment_code = values.get("deployment_code")
    if not deployment_code:
        raise InputError(_("Missing --deployment-code: give the deployment code shown in the Bailian console, e.g. qwen-plus-d824b8ad."))
    host_problem = base_url_problem(host, "--host")
    if host_problem:
        raise InputError(host_problem)

    for name in ("request_timeout", "arrival_qpm", "offered_tpm", "stage_duration", "speedup", "trace_target_tpm", "max_total_tokens", "max_duration", "burst_credit_max"):
        _positive("--" + name.replace("_", "-"), values.get(name))
    if values.get("max_in_flight", 1) < 1:
        raise InputError(f"Invalid --max-in-flight {values.get('max_in_flight')}: it must be at least 1.")
    if values.get("warmup") is not None and values["warmup"] < 0:
        raise InputError(f"Invalid --warmup {values['warmup']}: it must be 0 or more seconds.")
    if values.get("drain_timeout", 0) < 0:
        raise InputError(f"Invalid --drain-timeout {values['drain_timeout']}: it must be 0 or more seconds.")
    if not 0 < values.get("search_tolerance", 0.05) < 1:
        raise InputError(f"Invalid --search-tolerance {values['search_tolerance']}: give a fraction between 0 and 1, e.g. 0.05.")

    return LoadOptions(
        host=host.rstrip("/"),
        deployment_code=deployment_code,
        api=values.get("api") or "openai",
        transport=values.get("transport") or "fast",
        workload=values.get("workload") or "smoke",
        run_dir=values.get("run_dir"),
        api_key_env=values.get("api_key_env") or "DASHSCOPE_API_KEY",
        thinking=bool(values.get("thinking")),
        request_timeout_s=float(values.get("request_timeout") or 120.0),
        retry_429=bool(values.get("retry_429")),
        max_attempts=int(values.get("max_attempts") or 3),
        seed=values.get("seed"),
        model=values.get("model"),
        ptu=values.get("ptu"),
        skip_preflight=bool(values.get("skip_preflight")),
        wait_time_s=parse_wait_time(str(values.get("wait_time") or "0")),
        plan=values.get("plan") or "users",
        arrival=values.get("arrival") or "poisson",
        arrival_qpm=values.get("arrival_qpm"),
        offered_tpm=values.get("offered_tpm"),
        max_in_flight=int(values.get("max_in_flight") or 1000),
        stages=values.get("stages"),
        stage_duration_s=values.get("stage_duration"),
        warmup_s=values["warmup"] if values.get("warmup") is not None else _scaled_warmup_s(values),
        burst_credit=bool(values.get("burst_credit")),
        burst_credit_max_s=float(values.get("burst_credit_max") or 120.0),
        search_tolerance=float(values.get("search_tolerance") or 0.05),
        search_max_stages=int(values.get("search_max_stages") or 8),
        trace=values.get("trace"),
        speedup=float(values.get("speedup") or 1.0),
        trace_target_tpm=values.get("trace_target_tpm"),
        max_total_tokens=values.get("max_total_tokens"),
        max_duration_s=values.get("max_duration"),
        drain_timeout_s=_float_or(values.get("drain_timeout"), 30.0),
    )


def print_help() -> None:
    """Print the help of the ptu-verify options.

    Locust 2.47 prints ``--help`` before it imports the locustfile, so these options are missing
    from ``locust -f loadtest/locustfile.py --help``; ``python -m loadtest.options`` shows them.
    """
    import configargparse

    parser = configargparse.ArgumentParser(prog="locust -f loadtest/locustfile.py", description="ptu-verify options of the Locust locustfile.")
    register_options(parser)
    parser.print_help()


if __name__ == "__main__":
    print_help()


def worker_seed(seed: int | None, worker_id: str) -> int | None:
    """Return the seed of one worker: ``seed`` itself for a single process, a stable mix otherwise."""
    if seed is None or worker_id == "local":
        return seed
    return zlib.crc32(f"{seed}:{worker_id}".encode())

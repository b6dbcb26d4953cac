"""Files that cross from the load side to the analysis side: records, run metadata, plan, health.

Every file in a run directory (RUN_DIR):

- ``records*.jsonl``: one RequestRecord per request attempt, one JSON object per line;
- ``run.json``: RunInfo, the run's metadata;
- ``plan.json``: PlanInfo, the load schedule;
- ``health*.jsonl``: HealthSample lines, one per worker per second.

The schemas are versioned by their ``schema`` field and documented in docs/records.md.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TypedDict

if sys.version_info >= (3, 11):
    from typing import NotRequired
else:  # pragma: no cover - Python 3.10
    from typing_extensions import NotRequired

__all__ = [
    "RECORD_SCHEMA",
    "RUN_SCHEMA",
    "PLAN_SCHEMA",
    "HEALTH_SCHEMA",
    "OUTCOMES",
    "THROTTLE_CODES",
    "Outcome",
    "RequestRecord",
    "RunInfo",
    "PlanStage",
    "PlanInfo",
    "HealthSample",
    "JsonlReadResult",
    "read_jsonl",
    "record_files",
    "health_files",
]

RECORD_SCHEMA = "ptu-verify/record-v1"
RUN_SCHEMA = "ptu-verify/run-v1"
PLAN_SCHEMA = "ptu-verify/plan-v1"
HEALTH_SCHEMA = "ptu-verify/health-v1"

Outcome = Literal["ok", "throttled", "http_error", "stream_error", "truncated", "timeout", "connection_error", "client_error"]
OUTCOMES: tuple[str, ...] = ("ok", "throttled", "http_error", "stream_error", "truncated", "timeout", "connection_error", "client_error")

# Error codes that mean "throttled", in either API. A record is throttled when its status is 429
# or its error code is one of these, even inside an HTTP 200 stream.
THROTTLE_CODES: dict[str, str] = {
    "Throttling.AllocationQuota": "token_limit",
    "insufficient_quota": "token_limit",
    "Throttling.RateQuota": "request_limit",
    "limit_requests": "request_limit",
    "Throttling.BurstRate": "burst",
    "limit_burst_rate": "burst",
    "Throttling": "throttling",
}


class RequestRecord(TypedDict):
    """One request attempt, as written by the load side. Times are seconds; ``*_at`` are Unix timestamps."""

    schema: str
    run_id: str
    worker_id: str
    request_id: str | None  # the server's request id (x-request-id), None when no response arrived
    client_request_id: str  # our own id for the attempt, unique per run
    api: Literal["openai", "dashscope"]
    transport: Literal["fast", "sdk"]
    deployment_code: str
    workload: str
    variant: str
    stage: str
    started_at: float  # Unix time the request was sent
    scheduled_at: float | None  # Unix time an open-loop plan meant to send it
    ttft_s: float | None  # send -> first generated token of any kind (content, reasoning or tool call)
    ttfa_s: float | None  # send -> first content token (after any reasoning)
    e2e_s: float | None  # send -> end of stream or error
    input_tokens: int | None
    output_tokens: int | None  # includes reasoning tokens
    reasoning_tokens: int | None
    cached_tokens: int | None
    image_tokens: int | None
    tokens_estimated: bool  # output_tokens came from our tokenizer because the server sent no usage
    max_tokens: int | None
    chunks: int  # SSE events that carried generated text
    gen_speed_tps: float | None  # (output_tokens - 1) / (last token time - first token time)
    finish_reason: str | None
    status_code: int | None  # HTTP status, or the :HTTP_STATUS/<code> of an in-stream error frame
    outcome: Outcome
    error_code: str | None
    error_message: str | None  # truncated, never contains a secret
    retry_after_s: float | None
    attempt: int  # 1 for the first attempt of a user request, 2… for --retry-429 retries
    user_latency_s: float | None  # with retries: first attempt's send -> this attempt's end
    # Gaps between token-carrying events (one event may carry several tokens, so not per-token latency).
    chunk_gap_mean_s: NotRequired[float | None]
    chunk_gap_max_s: NotRequired[float | None]


class RunInfo(TypedDict, total=False):
    """run.json: metadata of one run (no secrets)."""

    schema: str
    run_id: str
    command: list[str]
    versions: dict[str, str]
    host: str  # API base URL with any credentials removed
    model: str | None
    ptu: int | None
    deployment_code: str
    api: str
    transport: str
    workload: str
    plan: str
    simulated: bool
    started_at: float
    ended_at: float | None
    partial: bool  # the run was interrupted or a worker was lost
    workers: list[str]
    # Written by the Locust side (docs/records.md):
    api_key_env: str  # name of the variable the key was read from, never the key
    preflight: dict[str, Any] | None  # outcome of the preflight request
    stop_reason: str | None  # plan completed, run time limit (-t) reached, max-duration reached, interrupted, …
    lost_workers: list[str]  # workers that sent no final batch
    option_mismatches: dict[str, dict[str, Any]]  # worker id -> option -> {worker, master}
    generator: dict[str, Any]  # load-generator verdict: behind, reasons, dispatch counts per stage
    generator_behind: bool  # "generator fell behind": latency figures are inconclusive
    records_written: int


class PlanStage(TypedDict):
    """One stage of the load schedule. Requests started in [measure_start_at, end_at) are measured."""

    label: str
    start_at: float
    measure_start_at: float
    end_at: float
    offered_tpm: float | None
    offered_qpm: float | None
    fraction_of_capacity: float | None
    users: int | None


class PlanInfo(TypedDict, total=False):
    """plan.json: the plan kind, the capacity it was built for and its stages."""

    schema: str
    plan: str  # users | rate | step | search | trace | acceptance
    arrival: str  # poisson | constant | trace | closed
    capacity_tpm: float | None
    capacity_qpm: float | None
    tokens_per_request: float | None
    stages: list[PlanStage]
    # Written by the Locust side (docs/plans.md):
    expected_tokens_per_request: float  # the workload's estimate before any recalibration
    binding_limit: str | None  # tpm | qpm
    binding_capacity_tpm: float | None  # the binding limit in tokens per minute; stage fractions refer to it
    workers: int
    calibration: dict[str, Any] | None  # expected vs observed tokens per request, when recalibrated
    search: dict[str, Any]  # capacity-search result (--plan search)
    burst_credit: dict[str, Any]  # end of the burst-credit phase (--burst-credit)
    time_scale: float  # trace plans: factor applied to every trace offset


class HealthSample(TypedDict):
    """One second of one worker's load-generator health."""

    schema: str
    worker_id: str
    at: float
    cpu_percent: float
    loop_lag_s: float
    in_flight: int
    dispatched: int  # open-loop dispatches due in this second
    late_dispatches: int  # dispatched more than 100 ms after their scheduled time
    dropped_dispatches: int  # not sent because the in-flight cap was reached
    stage: str | None


class JsonlReadResult(TypedDict):
    """Rows read from JSON Lines files and the lines that could not be parsed."""

    rows: list[dict[str, Any]]
    skipped_lines: int


def _iter_lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        yield from handle


def read_jsonl(paths: list[Path]) -> JsonlReadResult:
    """Read JSON objects from JSON Lines files; a line that fails to parse is skipped and counted.

    A killed writer can leave a truncated last line; that must never make a run unreadable.
    """
    rows: list[dict[str, Any]] = []
    skipped = 0
    for path in paths:
        for line in _iter_lines(path):
            stripped = line.strip()
            if not stripped:
                continue
            try:
                value = json.loads(stripped)
            except ValueError:
                skipped += 1
                continue
            if isinstance(value, dict):
                rows.append(value)
            else:
                skipped += 1
    return {"rows": rows, "skipped_lines": skipped}


def record_files(run_dir: Path) -> list[Path]:
    """Return the record files of a run directory: records.jsonl and records-<worker>.jsonl."""
    return sorted(run_dir.glob("records*.jsonl"))


def health_files(run_dir: Path) -> list[Path]:
    """Return the generator-health files of a run directory."""
    return sorted(run_dir.glob("health*.jsonl"))

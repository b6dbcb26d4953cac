"""Ground truth: what the simulator did with every request, served as GET /sim/stats."""

from __future__ import annotations

import collections
import time
from typing import Any, TypedDict

__all__ = ["RequestEntry", "SimOutcome", "Stats"]

# ok: served to the end (faults such as stalls or malformed chunks do not change this);
# throttled: returned 429; http_error: another error status before any stream;
# stream_error: an in-band error event ended the stream; connection_reset: the server reset the
# connection mid-stream; client_disconnect: the client went away before the end.
SimOutcome = str


class RequestEntry(TypedDict):
    """One request as the server saw it. ``*_at`` are Unix seconds taken when the bytes were written."""

    request_id: str
    api: str  # openai | dashscope
    stream: bool
    arrived_at: float
    first_token_at: float | None
    finished_at: float | None
    input_tokens: int | None
    cached_tokens: int | None
    image_tokens: int | None
    output_tokens: int
    reasoning_tokens: int
    max_tokens: int | None
    finish_reason: str | None
    outcome: SimOutcome
    status: int | None  # HTTP status, or the :HTTP_STATUS of an in-band error event
    error_code: str | None
    faults: list[str]


class Stats:
    """Per-request entries, totals and per-second series since start-up or the last reset."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything recorded so far."""
        self.entries: list[RequestEntry] = []
        self.started_at = time.time()
        self._series: dict[int, dict[str, int]] = collections.defaultdict(
            lambda: {"admitted_requests": 0, "input_tokens": 0, "output_tokens": 0, "throttled": 0}
        )

    def new_entry(self, request_id: str, api: str, stream: bool) -> RequestEntry:
        """Create and keep the entry of a request that just arrived."""
        entry: RequestEntry = {
            "request_id": request_id,
            "api": api,
            "stream": stream,
            "arrived_at": time.time(),
            "first_token_at": None,
            "finished_at": None,
            "input_tokens": None,
            "cached_tokens": None,
            "image_tokens": None,
            "output_tokens": 0,
            "reasoning_tokens": 0,
            "max_tokens": None,
            "finish_reason": None,
            "outcome": "pending",
            "status": None,
            "error_code": None,
            "faults": [],
        }
        self.entries.append(entry)
        return entry

    def record_admitted(self, input_tokens: int) -> None:
        """Count an admitted request and its input tokens in the current second."""
        bucket = self._series[int(time.time())]
        bucket["admitted_requests"] += 1
        bucket["input_tokens"] += input_tokens

    def record_output(self, tokens: int) -> None:
        """Count generated output tokens in the current second."""
        self._series[int(time.time())]["output_tokens"] += tokens

    def record_throttle(self) -> None:
        """Count a 429 in the current second."""
        self._series[int(time.time())]["throttled"] += 1

    def totals(self) -> dict[str, Any]:
        """Return request and token totals over all entries."""
        by_code: dict[str, int] = collections.Counter()
        outcomes: dict[str, int] = collections.Counter()
        input_tokens = output_tokens = 0
        for entry in self.entries:
            outcomes[entry["outcome"]] += 1
            if entry["outcome"] == "throttled" and entry["error_code"]:
                by_code[entry["error_code"]] += 1
            if entry["outcome"] not in ("throttled", "http_error"):
                input_tokens += entry["input_tokens"] or 0
            output_tokens += entry["output_tokens"]
        requests = len(self.entries)
        throttled = outcomes.get("throttled", 0)
        ok = outcomes.get("ok", 0)
        return {
            "requests": requests,
            "ok": ok,
            "throttled": throttled,
            "throttled_by_code": dict(by_code),
            "errors": requests - ok - throttled - outcomes.get("pending", 0),
            "in_flight": outcomes.get("pending", 0),
            "outcomes": dict(outcomes),
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
        }

    def series(self) -> list[dict[str, int]]:
        """Return one row per Unix second with admitted requests, input/output tokens and 429s."""
        return [{"second": second, **values} for second, values in sorted(self._series.items())]

    def as_json(self, extra: dict[str, Any], include_requests: bool = True) -> dict[str, Any]:
        """Return the /sim/stats document."""
        document = {
            "started_at": self.started_at,
            "now": time.time(),
            **extra,
            "totals": self.totals(),
            "series": self.series(),
        }
        if include_requests:
            document["requests"] = self.entries
        return document

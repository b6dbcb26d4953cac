"""Timing of one request attempt and the RequestRecord built from it.

Rules (docs/measurement.md explains why):

- The clock is ``time.perf_counter``. The transport reads it right before sending and right after each
  read from the socket, before any parsing. Every event parsed from one read gets that read's time.
- TTFT is send → first event that carried a generated token (content, reasoning or a tool call);
  TTFA is send → first content token. Role-only, empty, usage-only and comment events never count.
- Output tokens come from the server's usage (the last one seen, never a sum); without usage they are
  estimated with the Qwen tokenizer and the record is flagged with ``tokens_estimated``.
- Generation speed is (output_tokens − 1) / (last token time − first token time). Chunk gaps are
  gaps between token-carrying events, which may hold several tokens each: they are not per-token latency.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Literal, cast

from loadtest.protocol import Api, StreamError, StreamUpdate, Usage
from ptu_verify.records import RECORD_SCHEMA, THROTTLE_CODES, Outcome, RequestRecord
from ptu_verify.tokens import count_tokens, prompt_tokens

__all__ = [
    "ERROR_MESSAGE_MAX_CHARS",
    "AttemptContext",
    "AttemptMeasurement",
    "classify_error",
    "install_log_scrubber",
    "parse_retry_after",
    "scrub_secrets",
]

logger = logging.getLogger(__name__)

ERROR_MESSAGE_MAX_CHARS = 300

# Completion marker a stream must end with to count as complete.
EndMarker = Literal["done", "finish_reason"]


@dataclass
class AttemptContext:
    """Fields of a record that come from the caller, not from the stream."""

    run_id: str
    worker_id: str
    api: Api
    transport: Literal["fast", "sdk"]
    deployment_code: str
    workload: str
    variant: str
    stage: str
    max_tokens: int | None
    messages: list[dict[str, Any]]
    thinking: bool | None
    scheduled_at: float | None
    attempt: int
    api_key: str | None
    end_marker: EndMarker


_SECRET_PATTERNS = [
    (re.compile(r"(?i)(authorization\s*[:=]\s*)(?:bearer\s+)?[^\s,;'\"}]+"), r"\1***"),
    (re.compile(r"(?i)\bbearer\s+[^\s,;'\"}]+"), "Bearer ***"),
    (re.compile(r"(?i)([?&;\s]api[_-]?key=)[^&\s'\"]+"), r"\1***"),
    (re.compile(r"(?i)(^api[_-]?key=)[^&\s'\"]+"), r"\1***"),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"), "sk-***"),
]


def scrub_secrets(text: str, api_key: str | None = None) -> str:
    """Remove the API key, Authorization values, ``api_key=`` parameters and sk- keys from ``text``."""
    if api_key:
        text = text.replace(api_key, "***")
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class _KeyLogFilter(logging.Filter):
    """Log filter that replaces the API key in every record a handler emits (the SDKs log raw server messages at DEBUG)."""

    def __init__(self, api_key: str) -> None:
        super().__init__()
        self.api_key = api_key

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.api_key in message:
            record.msg = scrub_secrets(message, self.api_key)
            record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text and self.api_key in record.exc_text:
            record.exc_text = scrub_secrets(record.exc_text, self.api_key)
        return True


def install_log_scrubber(api_key: str | None) -> None:
    """Scrub ``api_key`` from the output of the root logger's handlers, where every logger's records end up."""
    if not api_key:
        return
    for handler in logging.getLogger().handlers:
        if not any(isinstance(existing, _KeyLogFilter) and existing.api_key == api_key for existing in handler.filters):
            handler.addFilter(_KeyLogFilter(api_key))


def _clean_message(message: str | None, api_key: str | None) -> str | None:
    if message is None:
        return None
    text = scrub_secrets(message, api_key)
    if len(text) > ERROR_MESSAGE_MAX_CHARS:
        text = text[: ERROR_MESSAGE_MAX_CHARS - 1] + "…"
    return text


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Return the server's retry hint in seconds from ``retry-after-ms`` or ``Retry-After``, or None."""
    lowered = {key.lower(): value for key, value in headers.items()}
    milliseconds = lowered.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000.0)
        except ValueError:
            pass
    seconds = lowered.get("retry-after")
    if not seconds:
        return None
    try:
        return max(0.0, float(seconds))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(seconds).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def classify_error(status_code: int | None, error_code: str | None) -> Outcome:
    """Return ``throttled`` for status 429 or a throttling code, else ``http_error``."""
    if status_code == 429 or (error_code is not None and error_code in THROTTLE_CODES):
        return "throttled"
    return "http_error"


@dataclass
class AttemptMeasurement:
    """Collects the timestamps and stream content of one attempt, then builds its record.

    Transports call ``mark_sent`` just before writing the request, ``on_response`` with the status and
    headers, ``on_updates`` after every socket read, then either ``mark_stream_end`` or ``fail``.
    """

    context: AttemptContext
    first_send_perf: float | None = None  # perf_counter of the first attempt's send, for user latency
    client_request_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    started_at: float | None = None
    sent_perf: float | None = None
    end_perf: float | None = None
    status_code: int | None = None
    request_id: str | None = None
    retry_after_s: float | None = None
    http_error: StreamError | None = None  # error body of a non-2xx response
    stream_error: StreamError | None = None  # first error event inside a 200 stream
    failure: tuple[Outcome, str | None, str | None] | None = None  # transport-level failure

    first_token_perf: float | None = None
    first_answer_perf: float | None = None
    last_token_perf: float | None = None
    chunks: int = 0
    gap_sum_s: float = 0.0
    gap_max_s: float | None = None
    usage: Usage | None = None
    finish_reason: str | None = None
    saw_done: bool = False
    text_parts: list[str] = field(default_factory=list)

    # -- transport callbacks

    def mark_sent(self) -> None:
        """Note the send time: call right before the request bytes go out.

        A transport may call it again from its HTTP library's pre-send hook, which runs after the
        SDK built the request. The later, more exact time then replaces the first.
        """
        previous = self.sent_perf
        self.started_at = time.time()
        self.sent_perf = time.perf_counter()
        if self.first_send_perf is None or self.first_send_perf == previous:
            self.first_send_perf = self.sent_perf

    def on_response(self, status_code: int, headers: Mapping[str, str]) -> None:
        """Note the response status and the headers we keep (request id, retry hint)."""
        self.status_code = status_code
        lowered = {key.lower(): value for key, value in headers.items()}
        self.request_id = lowered.get("x-request-id") or lowered.get("x-dashscope-request-id") or self.request_id
        self.retry_after_s = parse_retry_after(headers)

    def on_http_error(self, error: StreamError, request_id: str | None) -> None:
        """Note the error body of a non-2xx response."""
        self.http_error = error
        self.request_id = self.request_id or request_id

    def on_updates(self, updates: list[StreamUpdate], read_perf: float) -> None:
        """Apply the events parsed from one read; they all share ``read_perf``."""
        for update in updates:
            self._apply(update, read_perf)

    def _apply(self, update: StreamUpdate, at: float) -> None:
        if update.request_id and not self.request_id:
            self.request_id = update.request_id
        if update.error is not None:
            if self.stream_error is None:
                self.stream_error = update.error
            return
        if update.usage is not None:
            self.usage = update.usage  # running usage: the last one wins, never a sum
        if update.finish_reason is not None:
            self.finish_reason = update.finish_reason
        if update.done:
            self.saw_done = True

        if not update.generated:
            return
        self.chunks += 1
        self.text_parts.extend((update.reasoning, update.content, update.tool_text))
        if self.first_token_perf is None:
            self.first_token_perf = at
        if update.content and self.first_answer_perf is None:
            self.first_answer_perf = at
        if self.last_token_perf is not None:
            gap = at - self.last_token_perf
            self.gap_sum_s += gap
            self.gap_max_s = gap if self.gap_max_s is None else max(self.gap_max_s, gap)
        self.last_token_perf = at

    def mark_stream_end(self, at: float | None = None) -> None:
        """Note that the stream ended (with or without a completion marker) at perf_counter ``at``."""
        self.end_perf = time.perf_counter() if at is None else at

    def fail(self, outcome: Outcome, error_code: str | None, message: str | None) -> None:
        """Note a transport-level failure (timeout, connection error, our own error)."""
        if self.end_perf is None:
            self.end_perf = time.perf_counter()
        if self.failure is None:
            self.failure = (outcome, error_code, message)

    @property
    def stopped_early(self) -> bool:
        """True once an error event was read: the transport should stop reading."""
        return self.stream_error is not None

    # -- record

    def _outcome(self) -> tuple[Outcome, str | None, str | None, int | None]:
        """Return outcome, error code, error message and the status code to record."""
        status = self.status_code
        if self.http_error is not None or (status is not None and status >= 300):
            error = self.http_error or StreamError(None, None)
            return classify_error(status, error.code), error.code, error.message, status
        if self.stream_error is not None:
            error = self.stream_error
            frame_status = error.status_code if error.status_code is not None else status
            if classify_error(frame_status, error.code) == "throttled":
                return "throttled", error.code, error.message, frame_status
            return "stream_error", error.code, error.message, frame_status
        if self.failure is not None:
            outcome, code, message = self.failure
            return outcome, code, message, status
        complete = self.saw_done if self.context.end_marker == "done" else self.finish_reason is not None
        if not complete:
            marker = "[DONE]" if self.context.end_marker == "done" else "a finish_reason"
            return "truncated", "truncated", f"stream ended without {marker}", status
        return "ok", None, None, status

    def build_record(self) -> RequestRecord:
        """Return the record of this attempt. Call after the transport returned."""
        context = self.context
        outcome, error_code, error_message, status = self._outcome()
        end = self.end_perf if self.end_perf is not None else time.perf_counter()
        sent = self.sent_perf

        def since_send(at: float | None) -> float | None:
            return None if at is None or sent is None else at - sent

        usage = self.usage
        output_tokens, input_tokens, estimated = self._token_counts(usage)
        gen_speed = None
        if output_tokens is not None and output_tokens >= 2 and self.first_token_perf is not None and self.last_token_perf is not None:
            span = self.last_token_perf - self.first_token_perf
            if span > 0:
                gen_speed = (output_tokens - 1) / span

        user_latency = None if self.first_send_perf is None else end - self.first_send_perf
        record: RequestRecord = {
            "schema": RECORD_SCHEMA,
            "run_id": context.run_id,
            "worker_id": context.worker_id,
            "request_id": self.request_id,
            "client_request_id": self.client_request_id,
            "api": context.api,
            "transport": context.transport,
            "deployment_code": context.deployment_code,
            "workload": context.workload,
            "variant": context.variant,
            "stage": context.stage,
            "started_at": self.started_at if self.started_at is not None else time.time(),
            "scheduled_at": context.scheduled_at,
            "ttft_s": since_send(self.first_token_perf),
            "ttfa_s": since_send(self.first_answer_perf),
            "e2e_s": since_send(end),
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "reasoning_tokens": usage.reasoning_tokens if usage else None,
            "cached_tokens": usage.cached_tokens if usage else None,
            "image_tokens": usage.image_tokens if usage else None,
            "tokens_estimated": estimated,
            "max_tokens": context.max_tokens,
            "chunks": self.chunks,
            "gen_speed_tps": gen_speed,
            "finish_reason": self.finish_reason,
            "status_code": status,
            "outcome": outcome,
            "error_code": error_code,
            "error_message": _clean_message(error_message, context.api_key),
            "retry_after_s": self.retry_after_s,
            "attempt": context.attempt,
            "user_latency_s": user_latency,
            "chunk_gap_mean_s": self.gap_sum_s / (self.chunks - 1) if self.chunks >= 2 else None,
            "chunk_gap_max_s": self.gap_max_s,
        }
        return _scrub_record(record, context.api_key)

    def _token_counts(self, usage: Usage | None) -> tuple[int | None, int | None, bool]:
        """Return output tokens, input tokens and whether they were estimated."""
        if usage is not None and usage.output_tokens is not None:
            return usage.output_tokens, usage.input_tokens, False
        if self.chunks == 0:
            # Nothing generated, so 0 is exact. Input is unknown unless the usage reported it.
            return 0, usage.input_tokens if usage else None, False
        output = count_tokens("".join(self.text_parts))
        input_tokens = usage.input_tokens if usage and usage.input_tokens is not None else self._estimate_input()
        return max(output, 1), input_tokens, True

    def _estimate_input(self) -> int | None:
        try:
            return prompt_tokens(self.context.messages, thinking=self.context.thinking)
        except Exception:
            logger.debug("could not estimate prompt tokens", exc_info=True)
            return None


def _scrub_record(record: RequestRecord, api_key: str | None) -> RequestRecord:
    """Scrub secrets from every string field: server-provided text may echo the key."""
    fields: dict[str, Any] = dict(record)
    for key, value in fields.items():
        if isinstance(value, str) and key not in ("schema", "outcome"):
            fields[key] = scrub_secrets(value, api_key)
    return cast(RequestRecord, fields)

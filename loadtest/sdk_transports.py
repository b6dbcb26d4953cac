"""The ``sdk`` transports: the official openai and dashscope clients, for fidelity with the user's application.

Each SDK parses the stream itself, and its chunks go through the same interpreters as the fast
transport. The send time is stamped in the HTTP layer, after the SDK built the request. With openai, a
wrapped httpx2 transport also stamps every read of the body, so an event gets the time of the read
that completed it. With dashscope, a wrapped requests adapter does the same for the body reads.
What the SDKs hide from us:

- openai swallows ``[DONE]``, so a compat stream counts as complete when it has a finish_reason.
- openai drops SSE comments and dashscope ignores ``:HTTP_STATUS/<code>``, so an in-stream error frame
  is classified by its error code only. dashscope 2.0.2 reports such frames as status 400.
- dashscope 2.0.2 resends a request once when a pooled connection fails before any response byte
  arrived (``_send_with_retry``). That resend is invisible here; the openai client runs with
  ``max_retries=0``.

The whole-attempt deadline is a gevent.Timeout when sockets are gevent-patched (Locust workers). In
a plain process the SDKs' read timeout (request_timeout_s between bytes) and a check after every
chunk bound the attempt, so a stall is detected request_timeout_s after the last byte.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import gevent
import gevent.monkey

from loadtest.measure import AttemptMeasurement
from loadtest.protocol import (
    DashScopeInterpreter,
    OpenAIInterpreter,
    PreparedRequest,
    StreamError,
    StreamUpdate,
)

if TYPE_CHECKING:
    from loadtest.client import ClientConfig

__all__ = ["DashScopeSDKTransport", "OpenAISDKTransport"]

logger = logging.getLogger(__name__)

# The SDKs insist on a key; servers that need none (the simulator) never look at this one.
PLACEHOLDER_API_KEY = "no-key"


class _CurrentAttempt(threading.local):
    """The attempt being sent by this thread (by this greenlet under gevent), for the HTTP-layer hooks."""

    measurement: AttemptMeasurement | None = None
    last_read_perf: float | None = None  # perf_counter right after the latest read of response bytes


class _Deadline(Exception):
    """The attempt's request_timeout_s elapsed."""


@contextlib.contextmanager
def _deadline(timeout_s: float) -> Iterator[None]:
    """Bound the block with a gevent.Timeout when sockets are cooperative; otherwise do nothing."""
    if not gevent.monkey.is_module_patched("socket"):
        yield
        return
    timer = gevent.Timeout(timeout_s, _Deadline)
    timer.start()
    try:
        yield
    finally:
        timer.close()


def _fail_timeout(measurement: AttemptMeasurement, timeout_s: float) -> None:
    measurement.fail("timeout", "timeout", f"no complete response within request_timeout_s={timeout_s:g} s")


def _fail_connection(measurement: AttemptMeasurement, exc: BaseException) -> None:
    """Record a network failure: before the response it is a connection error, after it a cut stream."""
    message = f"{type(exc).__name__}: {exc}"
    if measurement.status_code is None:
        measurement.fail("connection_error", "connection_error", message)
    else:
        measurement.mark_stream_end()
        measurement.fail("truncated", "connection_lost", message)


class OpenAISDKTransport:
    """Streams with ``openai.OpenAI(max_retries=0)``, ``stream_options.include_usage`` always on."""

    def __init__(self, config: ClientConfig) -> None:
        import httpx2
        import openai

        self._openai = openai
        self._current = _CurrentAttempt()
        pool = max(1, config.connection_pool_size)
        inner = httpx2.HTTPTransport(limits=httpx2.Limits(max_connections=pool, max_keepalive_connections=pool))
        self._http = httpx2.Client(transport=_timed_httpx_transport(inner, self._current), timeout=httpx2.Timeout(config.request_timeout_s))
        self._client = openai.OpenAI(
            base_url=config.base_url,
            api_key=config.api_key or PLACEHOLDER_API_KEY,
            max_retries=0,  # the SDK would otherwise retry 429 and 5xx twice, hiding them
            timeout=config.request_timeout_s,
            http_client=self._http,
        )

    def close(self) -> None:
        """Close pooled connections."""
        self._client.close()

    def execute(
        self,
        prepared: PreparedRequest,
        measurement: AttemptMeasurement,
        interpreter: OpenAIInterpreter | DashScopeInterpreter,
        timeout_s: float,
    ) -> None:
        """Send ``prepared`` through the openai client and read its stream into ``measurement``."""
        openai = self._openai
        body = dict(prepared.body)
        known = {key: body.pop(key) for key in ("model", "messages", "stream_options", "max_tokens") if key in body}
        body.pop("stream", None)
        deadline_perf = time.perf_counter() + timeout_s

        measurement.mark_sent()
        self._current.measurement = measurement
        self._current.last_read_perf = None
        try:
            with _deadline(timeout_s):
                stream = self._client.chat.completions.create(stream=True, extra_body=body or None, **known)
                response = stream.response
                measurement.on_response(response.status_code, dict(response.headers))
                for chunk in stream:
                    # The SDK yields an event as soon as the read that completed it returned, so the
                    # latest read time is that event's read time, taken before the SDK parsed it.
                    read_at = self._current.last_read_perf or time.perf_counter()
                    update = interpreter.interpret_chunk(chunk.to_dict()) if isinstance(interpreter, OpenAIInterpreter) else None
                    if update is not None:
                        measurement.on_updates([update], read_at)
                    if measurement.stopped_early or read_at > deadline_perf:
                        break
                measurement.mark_stream_end(self._current.last_read_perf)
                stream.close()
                if not measurement.stopped_early and time.perf_counter() > deadline_perf:
                    _fail_timeout(measurement, timeout_s)
        except _Deadline:
            _fail_timeout(measurement, timeout_s)
        except openai.APIStatusError as exc:
            measurement.on_response(exc.status_code, dict(exc.response.headers))
            measurement.mark_stream_end()
            measurement.on_http_error(_openai_error(exc.body, exc.message), exc.request_id)
        except openai.APITimeoutError:
            _fail_timeout(measurement, timeout_s)
        except openai.APIConnectionError as exc:
            _fail_connection(measurement, exc.__cause__ or exc)
        except openai.APIError as exc:
            # Raised for an in-band {"error": …} event of a 200 stream.
            measurement.on_updates([StreamUpdate(error=_openai_error(exc.body, exc.message))], time.perf_counter())
            measurement.mark_stream_end()
        finally:
            self._current.measurement = None


def _timed_httpx_transport(inner: Any, current: _CurrentAttempt) -> Any:
    """Wrap an httpx2 transport to stamp the send time and the time of every read of the response body."""
    import httpx2

    class TimedStream(httpx2.SyncByteStream):
        def __init__(self, stream: Any) -> None:
            self._stream = stream

        def __iter__(self) -> Iterator[bytes]:
            for data in self._stream:
                current.last_read_perf = time.perf_counter()
                yield data

        def close(self) -> None:
            self._stream.close()

    class TimedTransport(httpx2.BaseTransport):
        def handle_request(self, request: Any) -> Any:
            # Runs after the SDK built the request, right before connect and send.
            if current.measurement is not None:
                current.measurement.mark_sent()
            response = inner.handle_request(request)
            response.stream = TimedStream(response.stream)
            return response

        def close(self) -> None:
            inner.close()

    return TimedTransport()


def _openai_error(body: object, fallback_message: str) -> StreamError:
    if isinstance(body, Mapping):
        code = body.get("code") or body.get("type")
        message = body.get("message")
        return StreamError(str(code) if code else None, str(message) if message else fallback_message)
    return StreamError(None, fallback_message)


class _ResponseInfo(threading.local):
    """HTTP status and headers of the current request, per thread (per greenlet under gevent)."""

    status_code: int | None = None
    headers: dict[str, str] | None = None


def _timed_adapter(pool_size: int, current: _CurrentAttempt) -> Any:
    """Return a requests adapter that marks the send time of the current attempt before each send."""
    from requests.adapters import HTTPAdapter

    class TimedAdapter(HTTPAdapter):
        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            if current.measurement is not None:
                current.measurement.mark_sent()
            response = super().send(request, *args, **kwargs)
            # requests reads a streamed body through raw.stream(); stamp every read it makes.
            raw_stream = response.raw.stream

            def timed_stream(*stream_args: Any, **stream_kwargs: Any) -> Iterator[bytes]:
                for data in raw_stream(*stream_args, **stream_kwargs):
                    current.last_read_perf = time.perf_counter()
                    yield data

            response.raw.stream = timed_stream
            return response

    return TimedAdapter(pool_connections=1, pool_maxsize=pool_size)


class DashScopeSDKTransport:
    """Streams with ``dashscope.Generation.call`` / ``MultiModalConversation.call`` (stream=True)."""

    def __init__(self, config: ClientConfig) -> None:
        import requests

        self._config = config
        self._current = _CurrentAttempt()
        self._session = requests.Session()
        adapter = _timed_adapter(max(1, config.connection_pool_size), self._current)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        # A response hook records the real HTTP status and headers, which the SDK's stream does not expose.
        self._info = _ResponseInfo()
        self._session.hooks["response"].append(self._on_response)

    def _on_response(self, response: Any, *args: Any, **kwargs: Any) -> None:
        self._info.status_code = response.status_code
        self._info.headers = dict(response.headers)

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

    def execute(
        self,
        prepared: PreparedRequest,
        measurement: AttemptMeasurement,
        interpreter: OpenAIInterpreter | DashScopeInterpreter,
        timeout_s: float,
    ) -> None:
        """Send ``prepared`` through the dashscope SDK and read its stream into ``measurement``."""
        import requests
        from dashscope import Generation, MultiModalConversation

        assert isinstance(interpreter, DashScopeInterpreter)
        call: Any = MultiModalConversation.call if prepared.multimodal else Generation.call
        kwargs = dict(prepared.body["parameters"])
        kwargs.update(
            model=prepared.body["model"],
            messages=prepared.body["input"]["messages"],
            api_key=self._config.api_key or PLACEHOLDER_API_KEY,
            stream=True,
            base_address=self._config.base_url,
            request_timeout=max(1, math.ceil(timeout_s)),
            session=self._session,
        )
        deadline_perf = time.perf_counter() + timeout_s
        self._info.status_code = None
        self._info.headers = None

        measurement.mark_sent()
        self._current.measurement = measurement
        self._current.last_read_perf = None
        try:
            with _deadline(timeout_s):
                for response in call(**kwargs):
                    read_at = self._current.last_read_perf or time.perf_counter()
                    self._take_response_info(measurement)
                    self._apply(response, measurement, interpreter, read_at)
                    if measurement.stopped_early or measurement.http_error is not None or read_at > deadline_perf:
                        break
                self._take_response_info(measurement)
                measurement.mark_stream_end(self._current.last_read_perf)
                if measurement.stream_error is None and measurement.http_error is None and time.perf_counter() > deadline_perf:
                    _fail_timeout(measurement, timeout_s)
        except _Deadline:
            _fail_timeout(measurement, timeout_s)
        except requests.Timeout:
            _fail_timeout(measurement, timeout_s)
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            self._take_response_info(measurement)
            _fail_connection(measurement, exc)
        finally:
            self._current.measurement = None

    def _take_response_info(self, measurement: AttemptMeasurement) -> None:
        if self._info.status_code is not None and measurement.status_code is None:
            measurement.on_response(self._info.status_code, self._info.headers or {})

    @staticmethod
    def _apply(response: Any, measurement: AttemptMeasurement, interpreter: DashScopeInterpreter, read_at: float) -> None:
        status = int(getattr(response, "status_code", 0) or 0)
        request_id = getattr(response, "request_id", None) or None
        if status == 200:
            obj = {"output": response.output, "usage": response.usage, "request_id": request_id}
            measurement.on_updates([interpreter.interpret_chunk(obj)], read_at)
            return

        error = StreamError(getattr(response, "code", None) or None, getattr(response, "message", None) or None)
        if measurement.status_code is not None and measurement.status_code < 300:
            # An error frame inside a 200 stream. The SDK reports it as 400, which is its own guess,
            # so the record keeps the HTTP status and the error code decides the outcome.
            measurement.on_updates([StreamUpdate(error=error)], read_at)
        else:
            if measurement.status_code is None and status:
                measurement.on_response(status, getattr(response, "headers", None) or {})
            measurement.on_http_error(error, request_id)
        measurement.mark_stream_end(read_at)

"""The ``fast`` transport: geventhttpclient (the client behind Locust's FastHttpUser) plus our SSE parser.

The body is read as it arrives, one socket read at a time, so every event is timed when its bytes are
read. A gevent.Timeout bounds the whole attempt (connect, send, stream), so a stall mid-stream ends as
``timeout`` at ``request_timeout_s``. It works in a gevent-patched Locust worker and in a plain
process, because geventhttpclient always uses gevent sockets.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Protocol
from urllib.parse import urlsplit

import gevent
from geventhttpclient import HTTPClient
from geventhttpclient.response import (
    HTTPConnectionClosed,
    HTTPParseError,
    HTTPSocketPoolResponse,
)

from loadtest.measure import AttemptMeasurement
from loadtest.protocol import (
    DashScopeInterpreter,
    OpenAIInterpreter,
    PreparedRequest,
    parse_error_body,
)
from loadtest.sse import SSEEvent, SSEParser

__all__ = ["DRAIN_TIMEOUT_S", "READ_BLOCK_BYTES", "FastTransport", "Transport"]

logger = logging.getLogger(__name__)

READ_BLOCK_BYTES = 64 * 1024
# After [DONE] the rest of the body (the last chunk marker) is read for at most this long, so the
# connection can go back to the pool. This time does not count in the attempt's e2e_s.
DRAIN_TIMEOUT_S = 1.0
# Cap on the bytes kept from an error response body.
ERROR_BODY_MAX_BYTES = 64 * 1024


class Transport(Protocol):
    """Sends one prepared request and feeds everything it observes into the measurement."""

    def execute(
        self,
        prepared: PreparedRequest,
        measurement: AttemptMeasurement,
        interpreter: OpenAIInterpreter | DashScopeInterpreter,
        timeout_s: float,
    ) -> None:
        """Run one attempt. Server and network faults are recorded in ``measurement``, not raised."""

    def close(self) -> None:
        """Close pooled connections."""


class _Deadline(Exception):
    """The attempt's request_timeout_s elapsed."""


def _read_available(response: HTTPSocketPoolResponse) -> tuple[bytes, float, bool]:
    """Return the body bytes available now (waiting for at least one), the read time, and whether the body is complete.

    ``response.read(n)`` waits until n bytes arrived, which would hold back events; this reads what
    one ``recv`` returns instead. It uses the response's buffer and socket, which geventhttpclient
    2.x keeps in ``_body_buffer`` and ``_sock``; tests/loadtest/test_client_compat.py fails if that changes.
    """
    buffer = response._body_buffer
    while True:
        if buffer:
            data = bytes(buffer)
            del buffer[:]
            return data, time.perf_counter(), response.message_complete
        if response.message_complete:
            return b"", time.perf_counter(), True
        sock = response._sock
        if sock is None:
            return b"", time.perf_counter(), False
        data = sock.recv(READ_BLOCK_BYTES)
        if not data:
            # EOF: a close-delimited body ends here; a chunked or sized body was cut short.
            try:
                response.feed(b"")
            except HTTPParseError:
                pass
            complete = response.message_complete
            if buffer:
                rest = bytes(buffer)
                del buffer[:]
                return rest, time.perf_counter(), complete
            _discard(response)
            return b"", time.perf_counter(), complete
        response.feed(data)


def _discard(response: HTTPSocketPoolResponse | None) -> None:
    """Close the response's connection instead of returning it to the pool."""
    if response is None:
        return
    sock, pool = response._sock, response._pool
    response._sock = None
    response._pool = None
    if sock is not None and pool is not None:
        pool.release_socket(sock)


class FastTransport:
    """Streams over a geventhttpclient connection pool for one base URL."""

    def __init__(self, base_url: str, *, pool_size: int, request_timeout_s: float) -> None:
        self._client = HTTPClient.from_url(
            base_url,
            concurrency=max(1, pool_size),
            connection_timeout=request_timeout_s,
            network_timeout=request_timeout_s,
            block_size=READ_BLOCK_BYTES,
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
        """Send ``prepared`` and read its stream into ``measurement`` within ``timeout_s``."""
        parts = urlsplit(prepared.url)
        request_uri = parts.path + (f"?{parts.query}" if parts.query else "")
        body = prepared.body_bytes()
        response: HTTPSocketPoolResponse | None = None
        deadline = gevent.Timeout(timeout_s, _Deadline)

        needs_drain = False

        measurement.mark_sent()
        deadline.start()
        try:
            response = self._client.request("POST", request_uri, body=body, headers=prepared.headers)
            measurement.on_response(response.status_code, dict(response.items()))
            if response.status_code != 200:
                self._read_error_body(response, measurement)
            elif "json" in str(response.get("content-type", "")).lower():
                self._read_json_body(response, measurement, interpreter)
            else:
                # text/event-stream, or a stream sent without a content type.
                needs_drain = self._read_stream(response, measurement, interpreter)
        except _Deadline:
            measurement.fail("timeout", "timeout", f"no complete response within request_timeout_s={timeout_s:g} s")
            _discard(response)
        except (HTTPConnectionClosed, ConnectionError, socket.gaierror) as exc:
            self._fail_connection(measurement, exc)
            _discard(response)
        except TimeoutError as exc:
            measurement.fail("timeout", "timeout", f"socket timed out: {exc}")
            _discard(response)
        except (HTTPParseError, OSError) as exc:
            self._fail_connection(measurement, exc)
            _discard(response)
        finally:
            deadline.close()
        if needs_drain and response is not None:
            _drain(response)

    @staticmethod
    def _fail_connection(measurement: AttemptMeasurement, exc: BaseException) -> None:
        """Record a network failure: before the response it is a connection error, after it a cut stream."""
        message = f"{type(exc).__name__}: {exc}"
        if measurement.status_code is None:
            measurement.fail("connection_error", "connection_error", message)
        else:
            measurement.mark_stream_end()
            measurement.fail("truncated", "connection_lost", message)

    @staticmethod
    def _read_error_body(response: HTTPSocketPoolResponse, measurement: AttemptMeasurement) -> None:
        chunks: list[bytes] = []
        size = 0
        while size < ERROR_BODY_MAX_BYTES:
            data, _, complete = _read_available(response)
            chunks.append(data)
            size += len(data)
            if complete or not data:
                break
        measurement.mark_stream_end()
        if not response.message_complete:
            _discard(response)
        error, request_id = parse_error_body(b"".join(chunks))
        measurement.on_http_error(error, request_id)

    @staticmethod
    def _read_stream(
        response: HTTPSocketPoolResponse,
        measurement: AttemptMeasurement,
        interpreter: OpenAIInterpreter | DashScopeInterpreter,
    ) -> bool:
        """Read events until the stream ends; return True when the body still needs draining after [DONE]."""
        parser = SSEParser()
        while True:
            data, read_at, complete = _read_available(response)
            if data:
                updates = []
                for event in parser.feed(data):
                    update = interpreter.interpret_event(event)
                    if update is not None:
                        updates.append(update)
                measurement.on_updates(updates, read_at)
            if measurement.saw_done:
                measurement.mark_stream_end(read_at)
                return not complete
            if measurement.stopped_early:
                # An error event ends the attempt; the server's rest of the stream is not awaited.
                measurement.mark_stream_end(read_at)
                _discard(response)
                return False
            if complete or not data:
                measurement.mark_stream_end(read_at)
                return False

    @staticmethod
    def _read_json_body(
        response: HTTPSocketPoolResponse,
        measurement: AttemptMeasurement,
        interpreter: OpenAIInterpreter | DashScopeInterpreter,
    ) -> None:
        """Read a 200 response that is not an event stream as one event (a server that ignored ``stream``)."""
        chunks: list[bytes] = []
        read_at = time.perf_counter()
        while True:
            data, read_at, complete = _read_available(response)
            chunks.append(data)
            if complete or not data:
                break
        text = b"".join(chunks).decode("utf-8", errors="replace")
        update = interpreter.interpret_event(SSEEvent(data=text))
        if update is not None:
            measurement.on_updates([update], read_at)
        if measurement.finish_reason is not None:
            measurement.saw_done = True  # a complete non-streaming response has no [DONE] to wait for
        measurement.mark_stream_end(read_at)


def _drain(response: HTTPSocketPoolResponse) -> None:
    """Read what is left of a finished stream so the connection can be reused; close it otherwise."""
    if response.message_complete:
        return
    try:
        with gevent.Timeout(DRAIN_TIMEOUT_S):
            while True:
                data, _, complete = _read_available(response)
                if complete or not data:
                    break
    except (gevent.Timeout, OSError, HTTPParseError):
        _discard(response)
        return
    if not response.message_complete:
        _discard(response)

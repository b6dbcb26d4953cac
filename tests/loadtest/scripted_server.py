"""A raw-socket HTTP server on 127.0.0.1 that replays scripted writes with exact bytes and timing.

Each connection reads one request, then performs the script's writes: ``(t_s, bytes)`` means "write
these bytes t_s seconds after the request was received". Every scripted response sends ``Connection: close``
and the server closes the socket after the last write, so clients never reuse a scripted connection.
The helpers build common scripts (SSE over chunked or close-delimited bodies); tests may also pass
raw bytes to check framing.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loadtest.client import ClientConfig, StreamClient
from ptu_verify.records import RequestRecord
from ptu_verify.requests import RequestSpec

Script = list[tuple[float, bytes]]


@dataclass
class ReceivedRequest:
    """One request as the server read it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    received_perf: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class ScriptedServer:
    """Serve ``respond(request, index)`` scripts; ``index`` counts requests from 0."""

    respond: Callable[[ReceivedRequest, int], Script]
    requests: list[ReceivedRequest] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ScriptedServer:  # noqa: PYI034
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            request = _read_request(conn)
            if request is None:
                return
            with self._lock:
                index = len(self.requests)
                self.requests.append(request)
            for at_s, data in self.respond(request, index):
                delay = request.received_perf + at_s - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                conn.sendall(data)
        except OSError as exc:  # the client went away (timeout tests close early)
            self.errors.append(repr(exc))
        finally:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()


def _read_request(conn: socket.socket) -> ReceivedRequest | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    received = time.perf_counter()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return ReceivedRequest(method, path, headers, body, received)


# ---------------------------------------------------------------- script builders


def head(status: int = 200, content_type: str = "text/event-stream", *, chunked: bool = True, extra: dict[str, str] | None = None) -> bytes:
    """Return a response head with Connection: close."""
    reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}
    lines = [f"HTTP/1.1 {status} {reason.get(status, 'Status')}", f"Content-Type: {content_type}", "Connection: close"]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    for name, value in (extra or {}).items():
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    """Return ``data`` as one HTTP/1.1 chunk."""
    return b"%x\r\n" % len(data) + data + b"\r\n"


LAST_CHUNK = b"0\r\n\r\n"


def sse_script(
    events: list[tuple[float, bytes]],
    *,
    status: int = 200,
    request_id: str = "req-0001",
    chunked: bool = True,
    finish: bool = True,
    extra_headers: dict[str, str] | None = None,
) -> Script:
    """Return a script: headers at t=0, each event's bytes at its time, then (if ``finish``) the body end."""
    headers = {"x-request-id": request_id, **(extra_headers or {})}
    script: Script = [(0.0, head(status, "text/event-stream;charset=UTF-8", chunked=chunked, extra=headers))]
    for at_s, data in events:
        script.append((at_s, chunk(data) if chunked else data))
    if finish and chunked:
        script.append((events[-1][0] if events else 0.0, LAST_CHUNK))
    return script


def json_script(status: int, body: dict[str, Any], *, request_id: str = "req-0001", extra_headers: dict[str, str] | None = None) -> Script:
    """Return a script sending a complete JSON response."""
    payload = json.dumps(body).encode()
    headers = {"x-request-id": request_id, "Content-Length": str(len(payload)), **(extra_headers or {})}
    return [(0.0, head(status, "application/json", chunked=False, extra=headers) + payload)]


def data_event(obj: Any) -> bytes:
    """Return ``data: <json>`` followed by a blank line (compat style)."""
    text = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


DONE = b"data: [DONE]\n\n"


def compat_chunk(delta: dict[str, Any], *, finish_reason: str | None = None, usage: dict[str, Any] | None = None) -> bytes:
    """Return one compat chat-completion chunk event."""
    obj: dict[str, Any] = {
        "id": "chatcmpl-req-0001",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "qwen-plus-test",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    if usage is not None:
        obj["usage"] = usage
    return data_event(obj)


def compat_usage(prompt_tokens: int, completion_tokens: int, *, reasoning_tokens: int | None = None, cached_tokens: int | None = None) -> bytes:
    """Return the usage-only chunk (``"choices": []``)."""
    usage: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}
    if cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    if reasoning_tokens is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    obj = {"id": "chatcmpl-req-0001", "object": "chat.completion.chunk", "created": 1700000000, "model": "qwen-plus-test", "choices": [], "usage": usage}
    return data_event(obj)


def native_event(
    event_id: int,
    *,
    content: Any = "",
    reasoning: str | None = None,
    finish_reason: str = "null",
    input_tokens: int = 20,
    output_tokens: int = 1,
    reasoning_tokens: int | None = None,
    image_tokens: int | None = None,
    request_id: str = "req-0001",
    with_usage: bool = True,
) -> bytes:
    """Return one native result event (no space after the colons, as DashScope sends it)."""
    message: dict[str, Any] = {"content": content, "role": "assistant"}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    usage: dict[str, Any] = {"input_tokens": input_tokens, "output_tokens": output_tokens, "total_tokens": input_tokens + output_tokens}
    if reasoning_tokens is not None:
        usage["output_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    if image_tokens is not None:
        usage["image_tokens"] = image_tokens
    obj: dict[str, Any] = {"output": {"choices": [{"message": message, "finish_reason": finish_reason}]}, "request_id": request_id}
    if with_usage:
        obj["usage"] = usage
    data = json.dumps(obj, ensure_ascii=False)
    return f"id:{event_id}\nevent:result\n:HTTP_STATUS/200\ndata:{data}\n\n".encode()


def native_error_event(code: str, message: str, *, status: int = 429, request_id: str = "req-0001") -> bytes:
    """Return an in-stream native error frame whose real status is only in the comment line."""
    data = json.dumps({"request_id": request_id, "code": code, "message": message})
    return f"id:1\nevent:error\n:HTTP_STATUS/{status}\ndata:{data}\n\n".encode()


# ---------------------------------------------------------------- client runs

FAKE_KEY = "sk-test-fake-0000"
DEFAULT_SPEC = RequestSpec(messages=[{"role": "user", "content": "你是谁？"}], max_tokens=256)


def send_requests(
    respond: Callable[[ReceivedRequest, int], Script],
    *,
    count: int = 1,
    spec: RequestSpec = DEFAULT_SPEC,
    **overrides: Any,
) -> tuple[list[RequestRecord], ScriptedServer]:
    """Start a scripted server, send ``spec`` ``count`` times with a StreamClient, return all records and the server.

    ``overrides`` are ClientConfig fields; the default is the fast transport over the compat API.
    """
    with ScriptedServer(respond) as server:
        api = overrides.get("api", "openai")
        options: dict[str, Any] = {
            "api": api,
            "transport": "fast",
            "base_url": server.base + ("/compatible-mode/v1" if api == "openai" else "/api/v1"),
            "deployment_code": "qwen-plus-test",
            "api_key": FAKE_KEY,
            "request_timeout_s": 10.0,
            "run_id": "run-1",
            "worker_id": "w1",
        }
        options.update(overrides)
        client = StreamClient(ClientConfig(**options))
        records: list[RequestRecord] = []
        try:
            for _ in range(count):
                records.extend(client.send(spec, stage="s1"))
        finally:
            client.close()
    return records, server

"""Simulator hardening: size limit, invalid bodies, slow clients, connection floods, loopback binding."""

from __future__ import annotations

import json
import re
import select
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from test_rel_support import (
    DEPLOYMENT,
    MODEL,
    child_env,
    cli_command,
    simulator,
    wait_for,
)

COMPAT_PATH = "/compatible-mode/v1/chat/completions"
NATIVE_PATH = "/api/v1/services/aigc/text-generation/generation"
PATHS = {"openai": COMPAT_PATH, "dashscope": NATIVE_PATH}
BODY_LIMIT = 4096


def _http(base_url: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout_s: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Send one HTTP/1.1 request over a raw socket and return status, headers and body (Connection: close)."""
    host, port = base_url.removeprefix("http://").split(":")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body is not None and "Transfer-Encoding" not in (headers or {}):
        lines.append(f"Content-Length: {len(body)}")
    payload = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        sock.sendall(payload)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    raw = b"".join(chunks)
    head, _separator, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {line.split(":", 1)[0].lower(): line.split(":", 1)[1].strip() for line in header_lines if ":" in line}
    if parsed.get("transfer-encoding") == "chunked":
        rest = _dechunk(rest)
    return int(status_line.split()[1]), parsed, rest


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_text, _separator, data = data.partition(b"\r\n")
        size = int(size_text, 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return out


def _error_code(api: str, body: bytes) -> str:
    """Return the error code from an error body, checking the API's error shape on the way."""
    payload = json.loads(body)
    if api == "openai":
        assert set(payload["error"]) == {"message", "type", "param", "code"}, payload
        return str(payload["error"]["code"])
    assert set(payload) == {"code", "message", "request_id"}, payload
    return str(payload["code"])


def _chat_body(api: str, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": "hi"}]
    if api == "openai":
        return {"model": DEPLOYMENT, "messages": messages, "max_tokens": 4, **extra}
    return {"model": DEPLOYMENT, "input": {"messages": messages}, "parameters": {"max_tokens": 4}, **extra}


def _healthy(base_url: str) -> bool:
    status, _headers, body = _http(base_url, "GET", "/health", timeout_s=5.0)
    return status == 200 and json.loads(body)["status"] == "ok"


@pytest.fixture(scope="module")
def sim() -> Any:
    with simulator(api_key=None, max_body_bytes=BODY_LIMIT) as running:
        yield running


BAD_BODIES: list[tuple[str, bytes, dict[str, str], int, dict[str, str]]] = [
    # name, body, extra headers, status, expected code per API
    ("over limit", json.dumps({"padding": "x" * (BODY_LIMIT * 2)}).encode(), {}, 413, {"openai": "request_too_large", "dashscope": "RequestTooLarge"}),
    ("over limit chunked", b"", {"Transfer-Encoding": "chunked"}, 413, {"openai": "request_too_large", "dashscope": "RequestTooLarge"}),
    ("not json", b"{not json", {}, 400, {"openai": "invalid_parameter_error", "dashscope": "InvalidParameter"}),
    ("not utf-8", b"\xff\xfe{", {}, 400, {"openai": "invalid_parameter_error", "dashscope": "InvalidParameter"}),
    ("json array", b"[]", {}, 400, {"openai": "invalid_parameter_error", "dashscope": "InvalidParameter"}),
    ("json null", b"null", {}, 400, {"openai": "invalid_parameter_error", "dashscope": "InvalidParameter"}),
    ("nested 3000 deep", b"[" * 1500 + b"]" * 1500, {}, 400, {"openai": "invalid_parameter_error", "dashscope": "InvalidParameter"}),
    ("messages not a list", json.dumps({"model": DEPLOYMENT, "messages": "hi", "input": {"messages": "hi"}}).encode(), {}, 400, {"openai": "invalid_parameter_error", "dashscope": "InvalidParameter"}),
    ("empty body", b"", {}, 400, {"openai": "invalid_parameter_error", "dashscope": "InvalidParameter"}),
]


def _chunked(payload: bytes, piece: int = 1000) -> bytes:
    parts = [payload[index : index + piece] for index in range(0, len(payload), piece)]
    return b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in parts) + b"0\r\n\r\n"


@pytest.mark.parametrize("api", ["openai", "dashscope"])
@pytest.mark.parametrize(("name", "body", "headers", "status", "codes"), BAD_BODIES, ids=[case[0] for case in BAD_BODIES])
def test_bad_body_rejected_in_protocol_shape(sim: Any, api: str, name: str, body: bytes, headers: dict[str, str], status: int, codes: dict[str, str]) -> None:
    if name == "over limit chunked":
        body = _chunked(b"x" * (BODY_LIMIT * 3))
    got_status, got_headers, got_body = _http(sim.base_url, "POST", PATHS[api], body, {"Content-Type": "application/json", **headers})
    assert got_status == status, got_body[:300]
    assert got_headers["content-type"].startswith("application/json")
    assert _error_code(api, got_body) == codes[api]
    assert _healthy(sim.base_url)


def test_nested_json_is_client_error(sim: Any) -> None:
    """JSON nested deeper than Python's recursion limit is invalid input (400), not a server crash (500)."""
    body = b"[" * 50_000 + b"]" * 50_000
    with simulator(api_key=None, max_body_bytes=200_000) as roomy:
        status, _headers, payload = _http(roomy.base_url, "POST", COMPAT_PATH, body, {"Content-Type": "application/json"})
        assert status == 400, payload[:200]
        assert _error_code("openai", payload) == "invalid_parameter_error"


def test_slow_client_does_not_block(sim: Any) -> None:
    """A client trickling its body one byte at a time blocks its own connection, not the server."""
    body = json.dumps(_chat_body("openai")).encode()
    host, port = sim.base_url.removeprefix("http://").split(":")
    head = f"POST {COMPAT_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as slow:
        slow.sendall(head.encode())
        served_meanwhile = 0
        for index, byte in enumerate(body):
            slow.sendall(bytes([byte]))
            if index % 10 == 0:
                # Other clients are served while the slow body is still arriving.
                assert _healthy(sim.base_url)
                status, _headers, _payload = _http(sim.base_url, "POST", COMPAT_PATH, json.dumps(_chat_body("openai")).encode(), {"Content-Type": "application/json"})
                assert status == 200
                served_meanwhile += 1
            time.sleep(0.002)  # pacing of the trickle, not synchronisation
        response = b""
        while b"\r\n\r\n" not in response:
            data = slow.recv(4096)
            if not data:
                break
            response += data
    assert response.startswith(b"HTTP/1.1 200"), response[:200]
    assert served_meanwhile >= 3


def test_connection_flood_survives(sim: Any) -> None:
    """300 idle connections plus 30 half-sent requests: /health and chat requests still get responses."""
    host, port = sim.base_url.removeprefix("http://").split(":")
    idle: list[socket.socket] = []
    try:
        for _index in range(300):
            idle.append(socket.create_connection((host, int(port)), timeout=10))
        for _index in range(30):
            half = socket.create_connection((host, int(port)), timeout=10)
            half.sendall(f"POST {COMPAT_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{{\"model\":".encode())
            idle.append(half)
        assert _healthy(sim.base_url)
        status, _headers, body = _http(sim.base_url, "POST", COMPAT_PATH, json.dumps(_chat_body("openai")).encode(), {"Content-Type": "application/json"})
        assert status == 200, body[:200]
    finally:
        for sock in idle:
            sock.close()
    assert _healthy(sim.base_url)
    # The 30 clients that went away mid-body end as client_disconnect, not as requests in flight forever.
    wait_for(lambda: sim.stats()["totals"]["in_flight"] == 0, 10.0, "no request in flight after the flood closed")
    assert sim.stats()["totals"]["outcomes"].get("client_disconnect", 0) >= 30


def test_simulator_defaults_to_loopback() -> None:
    from ptu_verify.simulator import SimulatorConfig

    config = SimulatorConfig.for_model(MODEL, ptu=8)
    assert config.host == "127.0.0.1"
    with simulator() as running:
        assert running.base_url.startswith("http://127.0.0.1:")


def test_simulate_command_listens_on_loopback(tmp_path: Path) -> None:
    process = subprocess.Popen(
        cli_command("simulate", "--model", MODEL, "--ptu", "8", "--port", "0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
        cwd=tmp_path,
    )
    try:
        assert process.stdout is not None
        ready, _writable, _errors = select.select([process.stdout], [], [], 30.0)
        assert ready, "the simulator printed no 'Listening on' line within 30 s"
        line = process.stdout.readline().decode()
        match = re.match(r"Listening on http://([\d.]+):(\d+)", line)
        assert match, line
        assert match.group(1) == "127.0.0.1"
        listening = [
            conn.laddr
            for conn in psutil.Process(process.pid).net_connections(kind="inet")
            if conn.status == psutil.CONN_LISTEN
        ]
        assert listening, "no listening socket"
        assert {address.ip for address in listening} == {"127.0.0.1"}
        assert _healthy(f"http://127.0.0.1:{match.group(2)}")
    finally:
        process.terminate()
        process.wait(timeout=15)

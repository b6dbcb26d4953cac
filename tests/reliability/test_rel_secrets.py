"""Secrets: a recognisable fake key in DASHSCOPE_API_KEY must appear in no file, console output or log.

The main paths run as subprocesses with the key in their environment. ``ptu-verify run`` meets a
simulator that checks the key, then ``analyze`` and ``compare`` read its run directory, and a second
run fails its preflight with 401. Locust and ``ptu-verify run`` also meet a server whose error
messages echo the Authorization header, the key and the request URL, as HTTP errors and as in-stream
error events.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from test_rel_support import (
    DEPLOYMENT,
    MODEL,
    SECRET_KEY,
    child_env,
    http_server,
    read_records,
    run_cli_process,
    run_locust,
    simulator,
)

# Parts of the key that must not leak either (a key cut by truncation is still a leak).
KEY_PARTS = (SECRET_KEY, SECRET_KEY[3:], "SECRET-0123456789")


def _leaks(text: str) -> list[str]:
    return [part for part in KEY_PARTS if part in text]


def _scan_tree(root: Path) -> dict[str, list[str]]:
    """Return {file: leaked parts} for every file under ``root`` (read as bytes, decoded leniently)."""
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            leaked = _leaks(path.read_bytes().decode("utf-8", errors="replace"))
            if leaked:
                found[str(path.relative_to(root))] = leaked
    return found


class _EchoHandler(BaseHTTPRequestHandler):
    """Handler that replies to chat requests with errors quoting the request's credentials and URL."""

    calls = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.lock:
            type(self).calls += 1
            call = type(self).calls
        authorization = self.headers.get("Authorization", "")
        key = authorization.removeprefix("Bearer ")
        url = f"http://{self.headers.get('Host')}{self.path}?api_key={key}"
        message = f"Upstream rejected {url} with headers Authorization: {authorization}; key={key} (raw key {key})"
        native = self.path.startswith("/api/v1/")
        if call % 2:
            if native:
                error_body = {"code": "InternalError", "message": message, "request_id": f"echo-{call}"}
            else:
                error_body = {"error": {"message": message, "type": "internal_error", "param": None, "code": "internal_error"}, "request_id": f"echo-{call}"}
            body = json.dumps(error_body).encode()
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.send_header("x-request-id", f"echo-{call}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("x-request-id", f"echo-{call}")
        self.end_headers()
        if native:
            error = {"code": "InternalError", "message": message, "request_id": f"echo-{call}"}
            self.wfile.write(f"id:1\nevent:error\n:HTTP_STATUS/500\ndata:{json.dumps(error)}\n\n".encode())
        else:
            chunk = {"id": "c", "object": "chat.completion.chunk", "model": DEPLOYMENT, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "ok "}, "finish_reason": None}]}
            error = {"error": {"message": message, "code": "internal_error"}}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\ndata: {json.dumps(error)}\n\n".encode())
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def echo_server() -> Iterator[str]:
    with http_server(_EchoHandler) as url:
        yield url


def _assert_no_leak(what: str, text: str) -> None:
    leaked = _leaks(text)
    assert not leaked, f"{what} contains {leaked}"


@pytest.mark.slow
def test_main_paths_never_leak_key(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with simulator(api_key=SECRET_KEY, capacity_factor=100.0, enforce_qpm=False, faults={"http_500": 0.2, "stream_error": 0.2}) as sim:
        run = run_cli_process(
            "run", "-m", MODEL, "--ptu", "8", "--base-url", sim.openai_base_url, "--deployment-code", DEPLOYMENT,
            "--plan", "users", "--max-duration", "2", "--out", str(run_dir), "--", "-u", "4", "-r", "4", "--skip-preflight",
            cwd=tmp_path,
        )  # fmt: skip
        # A preflight rejected with 401: the key in the environment is not the one the deployment wants.
        with simulator(api_key="sk-ptuverify-OTHER-9999999999") as other:
            rejected = run_cli_process(
                "run", "-m", MODEL, "--ptu", "8", "--base-url", other.openai_base_url, "--deployment-code", DEPLOYMENT,
                "--out", str(tmp_path / "rejected"), cwd=tmp_path,
            )  # fmt: skip
    assert run.returncode in (0, 1, 3), run.stderr[-3000:]
    assert len(read_records(run_dir)) >= 10
    assert rejected.returncode == 2, rejected.stderr[-3000:]
    assert "Traceback" not in rejected.stderr
    for text in ("401", "DASHSCOPE_API_KEY", "rejected", "Check the key"):
        assert text in rejected.stderr, rejected.stderr[-3000:]

    shutil.copytree(run_dir, tmp_path / "again")
    analysis = run_cli_process("analyze", str(run_dir), "--minute-windows", cwd=tmp_path)
    assert analysis.returncode in (0, 1, 3), analysis.stderr
    compared = run_cli_process("compare", str(run_dir), str(tmp_path / "again"), "--out", str(tmp_path / "compare"), cwd=tmp_path)
    assert compared.returncode in (0, 1), compared.stderr

    for name, result in {"run": run, "rejected run": rejected, "analyze": analysis, "compare": compared}.items():
        _assert_no_leak(f"{name} stdout", result.stdout)
        _assert_no_leak(f"{name} stderr", result.stderr)
    assert (run_dir / "locust.log").is_file()
    assert _scan_tree(tmp_path) == {}


@pytest.mark.slow
def test_echoed_credentials_are_scrubbed(tmp_path: Path, echo_server: str) -> None:
    run_dir = tmp_path / "run"
    load = run_locust(echo_server, run_dir, "-u", "2", "-r", "2", "-t", "2s", "--skip-preflight", "--request-timeout", "5")
    assert load.returncode in (0, 1), load.stderr[-3000:]
    records = read_records(run_dir)
    outcomes = {record["outcome"] for record in records}
    assert {"http_error", "stream_error"} <= outcomes, outcomes
    assert all(record["error_message"] for record in records if record["outcome"] != "ok")

    # The official SDKs, with Locust's debug logging on, against both APIs.
    sdk_runs = {}
    for api in ("openai", "dashscope"):
        host = echo_server if api == "openai" else echo_server.replace("/compatible-mode/v1", "/api/v1")
        sdk_dir = tmp_path / f"sdk-{api}"
        sdk_runs[api] = run_locust(
            host, sdk_dir, "-u", "2", "-r", "2", "-t", "1s", "--skip-preflight", "--request-timeout", "5",
            "--api", api, "--transport", "sdk", "--loglevel", "DEBUG",
        )  # fmt: skip
        assert sdk_runs[api].returncode in (0, 1), sdk_runs[api].stderr[-3000:]
        sdk_records = read_records(sdk_dir)
        assert {"http_error", "stream_error"} <= {record["outcome"] for record in sdk_records}, api

    # The preflight meets the same server: its failure message quotes the echoed error.
    preflight = run_cli_process(
        "run", "-m", MODEL, "--ptu", "8", "--base-url", echo_server, "--deployment-code", DEPLOYMENT, "--out", str(tmp_path / "preflight"), cwd=tmp_path
    )
    assert preflight.returncode == 2, preflight.stderr[-3000:]
    assert "Upstream rejected" in preflight.stderr, preflight.stderr[-3000:]

    analysis = run_cli_process("analyze", str(run_dir), "--model", MODEL, "--ptu", "8", cwd=tmp_path)
    assert analysis.returncode in (0, 1, 3), analysis.stderr
    assert "Upstream rejected" in (run_dir / "summary.json").read_text(encoding="utf-8")

    for name, result in {"locust": load, "preflight": preflight, "analyze": analysis, "openai sdk": sdk_runs["openai"], "dashscope sdk": sdk_runs["dashscope"]}.items():
        _assert_no_leak(f"{name} stdout", result.stdout)
        _assert_no_leak(f"{name} stderr", result.stderr)
    assert _scan_tree(tmp_path) == {}
    assert child_env()["DASHSCOPE_API_KEY"] == SECRET_KEY  # the key really was in every child's environment

"""Helpers shared by the reliability tests: simulators, Locust subprocesses, CLI subprocesses, polling.

This module contains no tests. It is imported by name (``from test_rel_support import ...``) because a
conftest.py here would shadow the ``conftest`` modules that other test folders import.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ptu_verify.records import read_jsonl, record_files

REPO = Path(__file__).resolve().parents[2]
LOCUSTFILE = REPO / "loadtest" / "locustfile.py"
# A recognisable fake key: the secrets tests search every output for it.
SECRET_KEY = "sk-ptuverify-SECRET-0123456789"
DEPLOYMENT = "qwen-plus-rel"
MODEL = "qwen-plus-2025-04-28"
# Short, fast responses so a few seconds of load give a few hundred requests on 2 cores.
FAST_SIM = {"natural_length_median": 24.0, "natural_length_sigma": 0.3, "speed_tps": 400.0, "ttft_base_s": 0.02, "prefill_s_per_token": 0.0, "seed": 7}


@contextmanager
def simulator(api_key: str | None = SECRET_KEY, ptu: int = 8, **knobs: Any) -> Iterator[Any]:
    """Run a qwen-plus simulator on 127.0.0.1 port 0 in a thread of this process."""
    from ptu_verify.simulator import SimulatorConfig, start_simulator

    settings = {**FAST_SIM, **knobs}
    config = SimulatorConfig.for_model(MODEL, ptu=ptu, deployment_code=DEPLOYMENT, api_key=api_key, **settings)
    with start_simulator(config) as running:
        yield running


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on 127.0.0.1 port 0 from a thread; yield the OpenAI-compatible base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/compatible-mode/v1"
    finally:
        server.shutdown()
        server.server_close()


def child_env(key: str | None = SECRET_KEY, **extra: str) -> dict[str, str]:
    """Return the environment of a child process: the fake key, no LOCUST_* or debug leftovers."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("LOCUST_", "PTU_VERIFY_"))}
    env.pop("DASHSCOPE_API_KEY", None)
    if key is not None:
        env["DASHSCOPE_API_KEY"] = key
    env["PYTHONUNBUFFERED"] = "1"
    env["PTU_VERIFY_LANG"] = "en"
    env.update(extra)
    return env


def locust_command(host: str, run_dir: Path, *args: str) -> list[str]:
    """Return a headless Locust command line against ``host`` writing to ``run_dir``."""
    return [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "--host", host, "--deployment-code", DEPLOYMENT, "--run-dir", str(run_dir),
        "--model", MODEL, "--ptu", "8", *args,
    ]  # fmt: skip


def run_locust(host: str, run_dir: Path, *args: str, timeout_s: float = 60.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run Locust to the end and return the finished process with its output."""
    return subprocess.run(
        locust_command(host, run_dir, *args),
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env or child_env(),
        cwd=run_dir.parent,
    )


def start_locust(host: str, run_dir: Path, *args: str, log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start Locust in its own process group with stdout and stderr going to ``log_path``."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            locust_command(host, run_dir, *args),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env or child_env(),
            cwd=run_dir.parent,
            start_new_session=True,
        )


def cli_command(*args: str) -> list[str]:
    """Return the command line of ``ptu-verify ARGS`` in a fresh interpreter."""
    return [sys.executable, "-m", "ptu_verify", *args]


def run_cli_process(*args: str, cwd: Path, timeout_s: float = 90.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``ptu-verify ARGS`` as a subprocess and return it with its output."""
    return subprocess.run(cli_command(*args), check=False, capture_output=True, text=True, timeout=timeout_s, env=env or child_env(), cwd=cwd)


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    """Return every parsable record of a run directory."""
    return read_jsonl(record_files(run_dir))["rows"]


def read_json(path: Path) -> dict[str, Any]:
    """Return a JSON file as a dict."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (nothing listens on it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

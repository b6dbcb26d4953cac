"""Helpers for the Locust tests: Locust subprocesses, run directories and polling."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ptu_verify.records import health_files, read_jsonl, record_files

REPO = Path(__file__).resolve().parents[2]
LOCUSTFILE = REPO / "loadtest" / "locustfile.py"
FAKE_KEY = "sk-test-fake-0000"
DEPLOYMENT = "qwen-plus-test"


def free_port() -> int:
    """Return a TCP port that was free a moment ago (for Locust's master port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def locust_env(**extra: str) -> dict[str, str]:
    """Return the environment of a Locust subprocess: a fake key, no LOCUST_* leftovers."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("LOCUST_")}
    env["DASHSCOPE_API_KEY"] = FAKE_KEY
    env["PYTHONUNBUFFERED"] = "1"
    env["PTU_VERIFY_LANG"] = "en"  # the tests match English messages
    env.update(extra)
    return env


def locust_command(host: str, run_dir: Path, *args: str, locustfile: Path = LOCUSTFILE) -> list[str]:
    """Return a headless Locust command line against ``host`` writing to ``run_dir``."""
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(locustfile),
        "--headless",
        "--only-summary",
        "--host",
        host,
        "--deployment-code",
        DEPLOYMENT,
        "--run-dir",
        str(run_dir),
        *args,
    ]


def run_locust(host: str, run_dir: Path, *args: str, timeout_s: float = 60, env: dict[str, str] | None = None, locustfile: Path = LOCUSTFILE) -> subprocess.CompletedProcess[str]:
    """Run Locust to completion and return the finished process (stdout and stderr captured)."""
    return subprocess.run(
        locust_command(host, run_dir, *args, locustfile=locustfile),
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env or locust_env(),
        cwd=run_dir.parent,
    )


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    """Return every record of a run directory."""
    return read_jsonl(record_files(run_dir))["rows"]


def read_health(run_dir: Path) -> list[dict[str, Any]]:
    """Return every health sample of a run directory."""
    return read_jsonl(health_files(run_dir))["rows"]


def read_json(path: Path) -> dict[str, Any]:
    """Return a JSON file as a dict."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail the test naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")

"""verdict.html in headless Chromium: it renders its charts and requests nothing from the network."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from ptu_verify.analysis import analyze_run
from ptu_verify.analysis.synthetic import SyntheticDeployment, write_synthetic_run
from ptu_verify.report import write_reports

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
# Chromium itself calls these (clock check, component updates, sign-in) even with background
# networking disabled. They reach only the local proxy below; any other host came from the page.
BROWSER_SERVICE_HOSTS = {"clients2.google.com", "update.googleapis.com", "accounts.google.com"}


def request_host(request_line: str) -> str:
    """Return the host of a proxy request line (``GET http://host/...`` or ``CONNECT host:443``)."""
    parts = request_line.split()
    if len(parts) < 2:
        return ""
    target = parts[1].split("://", 1)[-1]
    return target.split("/", 1)[0].rsplit(":", 1)[0]


class ConnectionCounter:
    """A TCP listener on 127.0.0.1 that counts connections; Chromium uses it as its proxy."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen()
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.requests: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                connection, _address = self.server.accept()
            except OSError:
                continue
            connection.settimeout(1.0)
            try:
                first_line = connection.recv(4096).split(b"\r\n", 1)[0].decode("latin-1")
            except OSError:
                first_line = "(no request line)"
            self.requests.append(first_line)
            connection.close()

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=2)
        self.server.close()


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_chromium_renders_offline(tmp_path: Path, lang: str) -> None:
    run_dir = write_synthetic_run(tmp_path / "run", SyntheticDeployment(capacity_factor=0.8))
    page = write_reports(analyze_run(run_dir), run_dir, lang=lang)["verdict.html"]
    counter = ConnectionCounter()
    try:
        result = subprocess.run(
            [
                str(CHROMIUM),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={tmp_path / 'profile'}",
                # Every request that leaves the page would go through this proxy and be counted.
                f"--proxy-server=http://127.0.0.1:{counter.port}",
                "--proxy-bypass-list=<-loopback>",
                "--virtual-time-budget=3000",
                "--dump-dom",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        counter.close()

    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("<svg") == 7
    assert "banner fail" in result.stdout
    page_requests = [line for line in counter.requests if request_host(line) not in BROWSER_SERVICE_HOSTS]
    assert page_requests == []

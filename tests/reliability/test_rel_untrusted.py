"""Untrusted text is inert in verdict.html and compare.html.

Server error messages, deployment codes, profile (workload) names, variant names and prompts carry
HTML and script payloads. Each report is parsed with html.parser and must contain no script element but
the report's own (as many as in a report of a benign run, none of them quoting a payload), no
event-handler attribute and no external URL. When Chromium is installed, the report is also loaded
headless and the DOM after scripts ran must show no payload's effect.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from test_rel_support import http_server, read_records, run_locust

from ptu_verify.analysis.synthetic import (
    SyntheticDeployment,
    SyntheticLoad,
    write_synthetic_run,
)

# Each payload, if it ran, would leave a mark that the headless browser check looks for.
PAYLOADS = (
    '<script>document.title="PWNED"</script>',
    '"><img src=x onerror="document.body.dataset.pwned=1">',
    "'><svg onload=alert(3)>",
    "</script><script>alert(4)</script>",
    '<a href="javascript:alert(5)">x</a>',
    '<iframe src="https://evil.example/"></iframe>',
    "{{ 7 * 7 }}",
)
EXTERNAL_URL = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)
URL_ATTRIBUTES = {"src", "href", "action", "formaction", "xlink:href", "poster", "background", "srcset"}


@dataclass
class HtmlFindings:
    """What a report's markup contains that could run or fetch something."""

    scripts: list[tuple[dict[str, str | None], str]] = field(default_factory=list)
    handlers: list[tuple[str, str]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    tags: set[str] = field(default_factory=set)
    text: list[str] = field(default_factory=list)


class _Inspector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.findings = HtmlFindings()
        self._script: dict[str, str | None] | None = None
        self._script_body: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.findings.tags.add(tag)
        for name, value in attrs:
            if name.startswith("on"):
                self.findings.handlers.append((tag, name))
            if name in URL_ATTRIBUTES and value and not value.startswith(("data:", "#")) and EXTERNAL_URL.match(value):
                self.findings.urls.append(value)
        if tag == "script":
            self._script = dict(attrs)
            self._script_body = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._script is not None:
            self.findings.scripts.append((self._script, "".join(self._script_body)))
            self._script = None

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self._script_body.append(data)
        else:
            self.findings.text.append(data)


def inspect_html(path: Path) -> HtmlFindings:
    """Parse a report and return its scripts, event handlers, external URLs, tags and text."""
    inspector = _Inspector()
    inspector.feed(path.read_text(encoding="utf-8"))
    inspector.close()
    return inspector.findings


def assert_inert(report: Path, baseline: Path, expect_texts: tuple[str, ...]) -> None:
    """Check that ``report`` runs and fetches nothing more than the benign ``baseline`` report does."""
    found = inspect_html(report)
    benign = inspect_html(baseline)
    assert len(found.scripts) == len(benign.scripts), [attrs for attrs, _body in found.scripts]
    for attrs, body in found.scripts:
        assert "src" not in attrs, attrs
        assert "alert(" not in body, body[:300]
        assert "pwned" not in body.lower(), body[:300]
    assert found.handlers == [], found.handlers
    assert sorted(set(found.urls)) == sorted(set(benign.urls)), found.urls
    assert not found.tags & {"iframe", "svg", "a", "img"} - benign.tags, found.tags - benign.tags
    text = "".join(found.text)
    # The payloads did reach the report, as text.
    for expected in expect_texts:
        assert expected in text, f"{expected!r} missing from the text of {report.name}"


def assert_inert_in_browser(report: Path) -> None:
    """Load the report in headless Chromium (when installed) and check that no payload ran."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        return
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--virtual-time-budget=2000", "--dump-dom", report.as_uri()],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0 or "<html" not in result.stdout:
        pytest.skip(f"headless Chromium did not run: {result.stderr[-300:]}")
    dom = result.stdout
    assert "<title>PWNED</title>" not in dom
    assert 'data-pwned="1"' not in dom
    assert "<iframe" not in dom


def _payload_text(index: int) -> str:
    return PAYLOADS[index % len(PAYLOADS)]


def _write_runs(base: Path, deployment_code: str, workload: str, variants: tuple[str, ...], message: str) -> tuple[Path, Path]:
    runs = []
    for seed in (0, 1):
        deployment = SyntheticDeployment(deployment_code=deployment_code)
        load = SyntheticLoad(fractions=(0.5, 1.0), stage_s=60.0, warmup_s=10.0, workload=workload, variants=variants, failure_share=0.1, failure_message=message, seed=seed)
        runs.append(write_synthetic_run(base / f"run{seed}", deployment, load))
    return runs[0], runs[1]


def _reports(run_cli: Any, first: Path, second: Path, out: Path) -> dict[str, Path]:
    for run_dir in (first, second):
        result = run_cli("analyze", str(run_dir))
        assert result.exit_code in (0, 1, 3), result.stderr
    compared = run_cli("compare", str(first), str(second), "--out", str(out / "compare"))
    assert compared.exit_code in (0, 1), compared.stderr
    return {
        "verdict": first / "verdict.html",
        "compare": out / "compare" / "compare.html",
    }


@pytest.fixture(scope="module")
def benign_reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from ptu_verify.cli import main

    base = tmp_path_factory.mktemp("benign")
    first, second = _write_runs(base, "qwen-plus-d824b8ad", "chat", ("short", "long"), "Internal server error")
    for run_dir in (first, second):
        main(["analyze", str(run_dir)])
    main(["compare", str(first), str(second), "--out", str(base / "compare")])
    return {"verdict": first / "verdict.html", "compare": base / "compare" / "compare.html"}


def test_reports_keep_untrusted_text_inert(tmp_path: Path, run_cli: Any, benign_reports: dict[str, Path]) -> None:
    workload = "w" + PAYLOADS[0]
    variants = ("v" + PAYLOADS[1], "v" + PAYLOADS[3])
    message = "m" + "".join(PAYLOADS)
    first, second = _write_runs(tmp_path, "d" + PAYLOADS[1], workload, variants, message)
    reports = _reports(run_cli, first, second, tmp_path)

    # "{{ 7 * 7 }}" stays literal: no template evaluates text from a run.
    assert_inert(reports["verdict"], benign_reports["verdict"], (workload, variants[0], variants[1], "d" + PAYLOADS[1], "{{ 7 * 7 }}"))
    assert_inert(reports["compare"], benign_reports["compare"], ("d" + PAYLOADS[1],))
    summary = json.loads((first / "summary.json").read_text(encoding="utf-8"))
    assert any(PAYLOADS[0] in message for failure in summary["failures"] for message in failure["sample_messages"])
    assert_inert_in_browser(reports["verdict"])
    assert_inert_in_browser(reports["compare"])


class _EvilHandler(BaseHTTPRequestHandler):
    """Handler that replies with errors whose messages and codes are HTML payloads, as HTTP errors and in-stream events."""

    calls = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.lock:
            type(self).calls += 1
            call = type(self).calls
        message = "server says " + _payload_text(call)
        if call % 2:
            body = json.dumps({"error": {"message": message, "type": "x", "param": None, "code": "c" + PAYLOADS[1]}, "request_id": f"evil-{call}"}).encode()
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(f"data: {json.dumps({'error': {'message': message, 'code': 'internal_error'}})}\n\n".encode())

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def evil_server() -> Iterator[str]:
    with http_server(_EvilHandler) as url:
        yield url


@pytest.mark.slow
def test_server_and_profile_text_inert_end_to_end(tmp_path: Path, run_cli: Any, evil_server: str, benign_reports: dict[str, Path]) -> None:
    profile = tmp_path / "evil.yaml"
    name = "w" + PAYLOADS[0]
    profile.write_text(
        json.dumps({"name": name, "description": PAYLOADS[1], "system_prompt": PAYLOADS[3] + " be brief", "input_tokens": 24, "output_tokens": 16}),
        encoding="utf-8",
    )
    run_dir = tmp_path / "run"
    load = run_locust(evil_server, run_dir, "-u", "2", "-r", "2", "-t", "2s", "--skip-preflight", "--workload", str(profile))
    assert load.returncode in (0, 1), load.stderr[-3000:]
    records = read_records(run_dir)
    assert {record["workload"] for record in records} == {name}
    assert {"http_error", "stream_error"} <= {record["outcome"] for record in records}
    shutil.copytree(run_dir, tmp_path / "again")

    reports = _reports(run_cli, run_dir, tmp_path / "again", tmp_path)
    assert_inert(reports["verdict"], benign_reports["verdict"], (name, "server says"))
    assert_inert(reports["compare"], benign_reports["compare"], ())
    # Prompt text is never copied into a report.
    assert "be brief" not in reports["verdict"].read_text(encoding="utf-8")
    assert_inert_in_browser(reports["verdict"])

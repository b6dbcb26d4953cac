"""Writing a run directory: records and health as JSON Lines, run.json and plan.json.

Records and health samples are appended in batches by a flusher greenlet every 0.5 s, so a process
killed with SIGKILL loses at most its last half second (the lines already written sit in the OS page
cache, which survives the process). The JSON files are replaced atomically (write, then rename).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import gevent

__all__ = [
    "FLUSH_INTERVAL_S",
    "JsonlWriter",
    "RecentRecords",
    "RunDirectory",
    "WindowSummary",
    "record_tokens",
    "redact_host",
    "software_versions",
    "write_json_atomic",
]

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.5


class JsonlWriter:
    """Append JSON objects to one file, one per line, flushed every FLUSH_INTERVAL_S by a greenlet."""

    def __init__(self, path: Path, flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        self.path = path
        self._flush_interval_s = flush_interval_s
        self._buffer: list[str] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = path.open("a", encoding="utf-8")
        self._greenlet = gevent.spawn(self._flush_loop)
        self.rows_written = 0

    def write(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Queue rows; they reach the file within one flush interval."""
        for row in rows:
            self._buffer.append(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")

    def flush(self) -> None:
        """Write the queued rows now."""
        if not self._buffer or self._handle.closed:
            return
        lines, self._buffer = self._buffer, []
        self._handle.write("".join(lines))
        self._handle.flush()
        self.rows_written += len(lines)

    def close(self) -> None:
        """Flush and close the file; later writes are dropped."""
        self._greenlet.kill(block=False)
        self.flush()
        self._handle.close()

    def _flush_loop(self) -> None:
        while True:
            gevent.sleep(self._flush_interval_s)
            try:
                self.flush()
            except OSError:
                logger.exception("Writing %s failed; the queued lines are lost and writing continues", self.path)


def record_tokens(record: Mapping[str, Any]) -> int:
    """Return input + output tokens of a record (0 for missing counts)."""
    return int(record.get("input_tokens") or 0) + int(record.get("output_tokens") or 0)


@dataclass(frozen=True)
class WindowSummary:
    """Outcome counts and throughput of the attempts that completed inside a time window."""

    start_at: float
    end_at: float
    attempts: int
    ok: int
    throttled: int
    ok_tokens: int
    ok_output_tokens: int

    @property
    def throttled_share(self) -> float:
        """Share of attempts that were throttled (0 when there were none)."""
        return self.throttled / self.attempts if self.attempts else 0.0

    @property
    def achieved_tpm(self) -> float:
        """Tokens per minute of the successful attempts."""
        duration_s = self.end_at - self.start_at
        return self.ok_tokens * 60.0 / duration_s if duration_s > 0 else 0.0

    @property
    def tokens_per_ok_request(self) -> float | None:
        """Mean input + output tokens of a successful attempt."""
        return self.ok_tokens / self.ok if self.ok else None


class RecentRecords:
    """The last few minutes of records, kept in memory so a running plan can read its own results.

    Windows are by completion time (started_at + e2e_s): at a steady load the completion rate equals the
    arrival rate, and a throttled response completes within milliseconds while a stream takes seconds.
    """

    def __init__(self, keep_s: float = 900.0) -> None:
        self._keep_s = keep_s
        self._rows: deque[tuple[float, str, int, int]] = deque()
        self.total_tokens = 0
        self.total_records = 0

    def add(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Add records (any order); counts used by --max-total-tokens include every outcome."""
        for record in records:
            started_at = float(record.get("started_at") or time.time())
            completed_at = started_at + float(record.get("e2e_s") or 0.0)
            tokens = record_tokens(record)
            self._rows.append((completed_at, str(record.get("outcome")), tokens, int(record.get("output_tokens") or 0)))
            self.total_tokens += tokens
            self.total_records += 1
        horizon = time.time() - self._keep_s
        while self._rows and self._rows[0][0] < horizon:
            self._rows.popleft()

    def summarize(self, start_at: float, end_at: float) -> WindowSummary:
        """Count the attempts that completed in [start_at, end_at)."""
        attempts = ok = throttled = ok_tokens = ok_output = 0
        for completed_at, outcome, tokens, output_tokens in self._rows:
            if not start_at <= completed_at < end_at:
                continue
            attempts += 1
            if outcome == "ok":
                ok += 1
                ok_tokens += tokens
                ok_output += output_tokens
            elif outcome == "throttled":
                throttled += 1
        return WindowSummary(start_at, end_at, attempts, ok, throttled, ok_tokens, ok_output)


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON to ``path`` through a temporary file and a rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def redact_host(url: str) -> str:
    """Return ``url`` without user info, query string or fragment (where credentials could hide)."""
    parts = urlsplit(url)
    hostname = parts.hostname or ""
    if ":" in hostname:
        hostname = f"[{hostname}]"
    netloc = hostname if parts.port is None else f"{hostname}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def software_versions() -> dict[str, str]:
    """Return the versions of Python and the packages that shape a measurement."""
    from importlib import metadata

    versions = {"python": sys.version.split()[0]}
    for package in ("ptu-verify", "locust", "gevent", "geventhttpclient", "openai", "dashscope"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


class RunDirectory:
    """The files of one run directory, written by the master or the single local process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.records = JsonlWriter(path / "records.jsonl")
        self.recent = RecentRecords()
        self._health: dict[str, JsonlWriter] = {}
        self.health_samples: list[dict[str, Any]] = []
        self.closed = False

    def add_records(self, records: list[Mapping[str, Any]]) -> None:
        """Queue records for records.jsonl and keep them for the running plan."""
        if self.closed:
            logger.warning("Dropped %d records that arrived after the run directory was closed", len(records))
            return
        self.records.write(records)
        self.recent.add(records)

    def add_health(self, worker_id: str, samples: list[Mapping[str, Any]]) -> None:
        """Queue health samples for health-<worker>.jsonl."""
        if self.closed or not samples:
            return
        writer = self._health.get(worker_id)
        if writer is None:
            safe_id = "".join(character if character.isalnum() or character in "-_." else "_" for character in worker_id)
            writer = self._health[worker_id] = JsonlWriter(self.path / f"health-{safe_id}.jsonl")
        writer.write(samples)
        self.health_samples.extend(dict(sample) for sample in samples)

    def write_run_info(self, info: Mapping[str, Any]) -> None:
        """Replace run.json."""
        write_json_atomic(self.path / "run.json", info)

    def write_plan(self, plan: Mapping[str, Any]) -> None:
        """Replace plan.json."""
        write_json_atomic(self.path / "plan.json", plan)

    def close(self) -> None:
        """Flush and close every JSON Lines file."""
        if self.closed:
            return
        self.closed = True
        self.records.close()
        for writer in self._health.values():
            writer.close()

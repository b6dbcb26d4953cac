"""Live progress of a running load test, computed from the growing records files.

The Locust side appends one RequestRecord per finished request attempt and flushes every second.
``RecordTail`` reads only the bytes added since the last poll and keeps an unterminated last line
for the next poll, so a line caught half-written is never lost or counted as broken.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..i18n import _
from ..records import PlanInfo, PlanStage, record_files

__all__ = [
    "RecordTail",
    "ProgressSnapshot",
    "compute_progress",
    "format_progress",
    "read_plan",
    "percentile",
    "plan_estimate",
    "format_plan_estimate",
]

logger = logging.getLogger(__name__)

# Achieved TPM is measured over the requests that ended in this trailing window, clipped to the stage.
ACHIEVED_WINDOW_S = 30.0
MIN_WINDOW_S = 5.0
# The window ends this long before now: a record reaches the file up to a second after its request
# ended (the writer flushes every second), and counting the unflushed tail as empty would understate TPM.
REPORTING_LAG_S = 2.0


@dataclass
class _FileCursor:
    offset: int = 0
    pending: bytes = b""


@dataclass
class RecordTail:
    """Incremental reader of ``records*.jsonl`` in a run directory; files may appear at any time."""

    run_dir: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    skipped_lines: int = 0
    _cursors: dict[Path, _FileCursor] = field(default_factory=dict)

    def poll(self) -> int:
        """Read the lines appended since the last poll; return how many records were added."""
        added = 0
        for path in record_files(self.run_dir):
            cursor = self._cursors.setdefault(path, _FileCursor())
            try:
                with path.open("rb") as handle:
                    handle.seek(cursor.offset)
                    chunk = handle.read()
            except FileNotFoundError:
                continue
            cursor.offset += len(chunk)
            lines = (cursor.pending + chunk).split(b"\n")
            cursor.pending = lines.pop()
            for line in lines:
                added += self._parse(line)
        return added

    def _parse(self, line: bytes) -> int:
        stripped = line.strip()
        if not stripped:
            return 0
        try:
            value = json.loads(stripped)
        except ValueError:
            self.skipped_lines += 1
            return 0
        if not isinstance(value, dict):
            self.skipped_lines += 1
            return 0
        self.records.append(value)
        return 1


def read_plan(run_dir: Path) -> PlanInfo | None:
    """Return plan.json of a run directory, or None while it is missing or half-written."""
    path = run_dir / "plan.json"
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(value, dict):
        return None
    plan: PlanInfo = value  # type: ignore[assignment]
    return plan


@dataclass(frozen=True)
class ProgressSnapshot:
    """The figures of the live progress line at one moment."""

    at: float  # Unix time of the snapshot
    stage: str | None  # label of the running stage; None before the first or after the last
    stage_index: int | None
    stage_count: int
    measuring: bool  # inside the stage's measured span (after its warm-up)
    offered_tpm: float | None
    achieved_tpm: float | None  # ok requests' input + output tokens in the window, per minute
    window_s: float  # length of that window
    requests: int  # attempts that ended in the window
    throttled_share: float | None  # share of those attempts that were throttled
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    total_records: int
    time_left_s: float | None  # until the plan's last stage ends; None when the plan gives no end


def percentile(values: list[float], fraction: float) -> float | None:
    """Return the linear-interpolated percentile (``fraction`` in [0, 1]) of ``values``, or None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    weight = position - lower
    return ordered[lower] * (1 - weight) + ordered[upper] * weight


def _current_stage(stages: list[PlanStage], now: float) -> int | None:
    for index, stage in enumerate(stages):
        if stage["start_at"] <= now < stage["end_at"]:
            return index
    return None


def _ended_at(record: dict[str, Any]) -> float | None:
    started = record.get("started_at")
    if not isinstance(started, (int, float)):
        return None
    duration = record.get("e2e_s")
    return float(started) + (float(duration) if isinstance(duration, (int, float)) else 0.0)


def _is_throttled(record: dict[str, Any]) -> bool:
    return record.get("outcome") == "throttled" or record.get("status_code") == 429


def compute_progress(records: list[dict[str, Any]], plan: PlanInfo | None, now: float) -> ProgressSnapshot:
    """Summarise the current stage and the trailing window of records as of ``now``."""
    stages: list[PlanStage] = list(plan.get("stages", [])) if plan else []
    index = _current_stage(stages, now)
    stage = stages[index] if index is not None else None

    # The window trails ``now`` but does not reach back into the previous stage unless it would be
    # shorter than MIN_WINDOW_S, when a rate over a second or two would be mostly noise.
    window_end = now - REPORTING_LAG_S
    window_start = window_end - ACHIEVED_WINDOW_S
    if stage is not None:
        window_start = max(window_start, stage["start_at"])
    window_start = min(window_start, window_end - MIN_WINDOW_S)
    window_s = window_end - window_start

    in_window = [record for record in records if (ended := _ended_at(record)) is not None and window_start <= ended < window_end]
    ok = [record for record in in_window if record.get("outcome") == "ok"]
    tokens = sum((record.get("input_tokens") or 0) + (record.get("output_tokens") or 0) for record in ok)
    ttfts = [float(record["ttft_s"]) for record in ok if isinstance(record.get("ttft_s"), (int, float))]

    last_end = max((item["end_at"] for item in stages), default=None)
    return ProgressSnapshot(
        at=now,
        stage=stage["label"] if stage else None,
        stage_index=index,
        stage_count=len(stages),
        measuring=bool(stage and now >= stage["measure_start_at"]),
        offered_tpm=stage.get("offered_tpm") if stage else None,
        achieved_tpm=tokens / window_s * 60.0 if in_window else None,
        window_s=window_s,
        requests=len(in_window),
        throttled_share=sum(_is_throttled(record) for record in in_window) / len(in_window) if in_window else None,
        ttft_p50_s=percentile(ttfts, 0.50),
        ttft_p95_s=percentile(ttfts, 0.95),
        total_records=len(records),
        time_left_s=max(last_end - now, 0.0) if last_end is not None else None,
    )


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def format_progress(snapshot: ProgressSnapshot) -> str:
    """Render a snapshot as one console line."""
    if snapshot.stage is None:
        stage = _("between stages") if snapshot.stage_count else _("waiting for the plan")
    else:
        stage = _("stage {index}/{count} {label}").format(index=(snapshot.stage_index or 0) + 1, count=snapshot.stage_count, label=snapshot.stage)
        if not snapshot.measuring:
            stage += _(" (warm-up)")

    ttft = "-"
    if snapshot.ttft_p50_s is not None and snapshot.ttft_p95_s is not None:
        ttft = f"{snapshot.ttft_p50_s:.2f}/{snapshot.ttft_p95_s:.2f} s"
    left = "-" if snapshot.time_left_s is None else f"{int(snapshot.time_left_s) // 60}:{int(snapshot.time_left_s) % 60:02d}"
    return _("{stage} | offered {offered} TPM, achieved {achieved} TPM | 429 {throttled} | TTFT p50/p95 {ttft} | {records} records | left {left}").format(
        stage=stage,
        offered=_number(snapshot.offered_tpm),
        achieved=_number(snapshot.achieved_tpm),
        throttled="-" if snapshot.throttled_share is None else f"{snapshot.throttled_share * 100:.1f} %",
        ttft=ttft,
        records=snapshot.total_records,
        left=left,
    )


def plan_estimate(plan: PlanInfo) -> tuple[float | None, float | None]:
    """Return the plan's duration in seconds and its offered tokens (an upper bound on the tokens used).

    Returns None for what plan.json cannot tell: a search plan adds stages as it goes, and a plan
    without offered TPM (closed-loop users) has no token figure.
    """
    stages = list(plan.get("stages", []))
    if not stages or plan.get("plan") == "search":
        return None, None
    duration_s = max(stage["end_at"] for stage in stages) - min(stage["start_at"] for stage in stages)
    offered = [stage.get("offered_tpm") for stage in stages]
    if any(value is None for value in offered):
        return duration_s, None
    tokens = sum(float(value or 0.0) * (stage["end_at"] - stage["start_at"]) / 60.0 for value, stage in zip(offered, stages))
    return duration_s, tokens


def format_plan_estimate(plan: PlanInfo) -> str:
    """Render the plan's kind, length and offered tokens as one console line."""
    duration_s, tokens = plan_estimate(plan)
    duration = _("{minutes:.1f} min").format(minutes=duration_s / 60.0) if duration_s is not None else _("length not known in advance")
    offered = _("at most {tokens} tokens offered").format(tokens=_number(tokens)) if tokens is not None else _("tokens not estimable for this plan")
    return _("Plan {plan}: {stages} stages, {duration}, {offered}.").format(
        plan=plan.get("plan", "-"), stages=len(plan.get("stages", [])), duration=duration, offered=offered
    )

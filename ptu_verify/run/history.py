"""Trend of the key figures over many analysed runs (for example nightly benchmarks)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..i18n import _
from .compare import RunSide

__all__ = ["HISTORY_SCHEMA", "HistoryPoint", "History", "collect_history", "history_point", "write_history_json"]

logger = logging.getLogger(__name__)

HISTORY_SCHEMA = "ptu-verify/history-v1"


@dataclass(frozen=True)
class HistoryPoint:
    """The key figures of one run, read from its summary.json."""

    run: RunSide
    verdict: str | None
    capacity_tpm: float | None
    sustained_tpm: float | None
    sustained_tpm_ci_low: float | None
    sustained_tpm_ci_high: float | None
    delivered_fraction: float | None  # sustained TPM / purchased (binding) capacity
    # At the highest stage offered at or below capacity, where latency is not yet queueing for 429s.
    reference_stage: str | None
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    speed_p50_tps: float | None
    throttled_share: float | None


@dataclass(frozen=True)
class History:
    """Runs in start-time order, and the directories that were skipped with the reason."""

    points: list[HistoryPoint]
    skipped: list[tuple[str, str]]

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form written to history.json."""
        return {
            "schema": HISTORY_SCHEMA,
            "runs": [asdict(point) for point in self.points],
            "skipped": [{"run_dir": path, "reason": reason} for path, reason in self.skipped],
        }


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _table(summary: dict[str, Any], key: str) -> dict[str, Any]:
    value = summary.get(key)
    return value if isinstance(value, dict) else {}


def _reference_stage(stages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Return the stage with the highest offered fraction at or below 1.0 (the first stage as a fallback)."""
    below = [stage for stage in stages if (_number(stage.get("offered_fraction")) or 0.0) <= 1.0 + 1e-9]
    if below:
        return max(below, key=lambda stage: _number(stage.get("offered_fraction")) or 0.0)
    return stages[0] if stages else None


def history_point(run_dir: Path) -> HistoryPoint:
    """Read the key figures of one analysed run; InputError when summary.json is missing or unreadable."""
    summary_path = run_dir / "summary.json"
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(_("{path} is missing: analyse the run first (ptu-verify analyze {run_dir}).").format(path=summary_path, run_dir=run_dir)) from None
    except ValueError as error:
        raise InputError(_("{path} is not valid JSON: {error}").format(path=summary_path, error=error)) from None
    if not isinstance(summary, dict):
        raise InputError(_("{path} must contain a JSON object.").format(path=summary_path))

    run, capacity, sustained = _table(summary, "run"), _table(summary, "capacity"), _table(summary, "sustained_tpm")
    stages = [stage for stage in summary.get("stages", []) if isinstance(stage, dict)]
    reference = _reference_stage(stages) or {}

    capacity_tpm = _number(capacity.get("effective_tpm")) or _number(capacity.get("tpm"))
    sustained_tpm = _number(sustained.get("value"))
    ptu = _number(run.get("ptu"))
    side = RunSide(
        run_dir=str(run_dir),
        run_id=run.get("run_id"),
        started_at=_number(run.get("started_at")),
        deployment_code=run.get("deployment_code"),
        model=run.get("model"),
        ptu=int(ptu) if ptu is not None else None,
        workload=run.get("workload"),
        plan=run.get("plan"),
        simulated=bool(run.get("simulated")),
        partial=bool(run.get("partial")),
    )
    return HistoryPoint(
        run=side,
        verdict=summary.get("verdict"),
        capacity_tpm=capacity_tpm,
        sustained_tpm=sustained_tpm,
        sustained_tpm_ci_low=_number(sustained.get("ci_low")),
        sustained_tpm_ci_high=_number(sustained.get("ci_high")),
        delivered_fraction=sustained_tpm / capacity_tpm if sustained_tpm is not None and capacity_tpm else None,
        reference_stage=reference.get("label"),
        ttft_p50_s=_number(reference.get("ttft_p50_s")),
        ttft_p95_s=_number(reference.get("ttft_p95_s")),
        speed_p50_tps=_number(reference.get("speed_p50_tps")),
        throttled_share=_number(reference.get("throttled_share")),
    )


def _expand(paths: list[Path]) -> list[Path]:
    """Take run directories as given; a directory without summary.json is searched one level down."""
    expanded: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise InputError(_("{path} is not a directory. Give run directories, or a folder of them such as reports/.").format(path=path))
        if (path / "summary.json").exists() or (path / "run.json").exists():
            expanded.append(path)
            continue
        children = sorted(child for child in path.iterdir() if child.is_dir() and (child / "summary.json").exists())
        expanded.extend(children)
    return expanded


def collect_history(paths: list[Path]) -> History:
    """Read the key figures of every run under ``paths``, oldest first; runs without a summary are skipped."""
    points: list[HistoryPoint] = []
    skipped: list[tuple[str, str]] = []
    for run_dir in _expand(paths):
        try:
            points.append(history_point(run_dir))
        except InputError as error:
            logger.warning("Skipping %s: %s", run_dir, error.message)
            skipped.append((str(run_dir), error.message))
    if not points:
        raise InputError(_("No analysed run found in {paths}. Each run directory needs a summary.json (ptu-verify run or ptu-verify analyze writes it).").format(
            paths=", ".join(str(path) for path in paths)
        ))
    points.sort(key=lambda point: (point.run.started_at is None, point.run.started_at or 0.0, point.run.run_dir))
    return History(points=points, skipped=skipped)


def write_history_json(history: History, out_dir: Path) -> Path:
    """Write history.json into ``out_dir`` and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "history.json"
    path.write_text(json.dumps(history.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
    return path

"""Read a run directory (records, run.json, plan.json, health) into column-oriented frames.

Records are parsed in blocks of lines and kept only as the columns the analysis uses, so a
million records fit in well under a gigabyte. A line that does not parse (a killed writer's
truncated last line) is skipped and counted, never fatal.
"""

from __future__ import annotations

import gc
import json
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from ..errors import InputError
from ..i18n import _
from ..records import PlanInfo, PlanStage, RunInfo, health_files, record_files

try:  # orjson parses JSON about three times faster than the standard library.
    import orjson

    _loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - orjson is a declared dependency
    _loads = json.loads

__all__ = ["RECORD_COLUMNS", "RunData", "load_run", "read_frame"]

logger = logging.getLogger(__name__)

FLOAT_COLUMNS = (
    "tokens_estimated",
    "started_at",
    "scheduled_at",
    "ttft_s",
    "ttfa_s",
    "e2e_s",
    "gen_speed_tps",
    "input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "max_tokens",
    "status_code",
    "attempt",
)
TEXT_COLUMNS = ("worker_id", "workload", "variant", "stage", "outcome", "error_code", "error_message")
RECORD_COLUMNS = (*FLOAT_COLUMNS, *TEXT_COLUMNS)
HEALTH_COLUMNS = ("worker_id", "at", "cpu_percent", "loop_lag_s", "dispatched", "late_dispatches", "dropped_dispatches")

# Bytes parsed per block: large enough for orjson to run at full speed, small enough to bound memory.
_BLOCK_BYTES = 32 << 20
# Record files above this total size are parsed by a process pool of at most _MAX_PROCESSES.
_PARALLEL_BYTES = 64 << 20
_MAX_PROCESSES = 4


@dataclass
class RunData:
    """Everything read from one run directory."""

    run_dir: Path
    records: pd.DataFrame
    run_info: RunInfo
    plan: PlanInfo | None
    health: pd.DataFrame
    skipped_record_lines: int = 0
    skipped_health_lines: int = 0
    record_paths: list[Path] = field(default_factory=list)


def _parse_lines(lines: list[bytes]) -> tuple[list[dict[str, Any]], int]:
    """Parse JSON lines in one call; fall back to line by line when one of them is broken."""
    lines = [line for line in lines if line.strip()]
    if not lines:
        return [], 0
    try:
        rows = _loads(b"[" + b",".join(lines) + b"]")
    except ValueError:
        rows = []
        for line in lines:
            try:
                rows.append(_loads(line))
            except ValueError:
                rows.append(None)
    kept = [row for row in rows if isinstance(row, dict)]
    return kept, len(rows) - len(kept)


def _block_tasks(paths: list[Path], block_bytes: int) -> list[tuple[str, int, int]]:
    """Split files into byte ranges of about ``block_bytes`` that start and end at line boundaries."""
    tasks = []
    for path in paths:
        size = path.stat().st_size
        with path.open("rb") as handle:
            start = 0
            while start < size:
                handle.seek(min(start + block_bytes, size))
                handle.readline()
                end = min(handle.tell(), size)
                tasks.append((str(path), start, end))
                start = end
    return tasks


def _to_float(values: tuple[Any, ...]) -> np.ndarray:
    try:
        return np.array(values, dtype="float64")
    except (TypeError, ValueError):
        return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype="float64")


def _read_block(task: tuple[str, int, int], columns: tuple[str, ...], float_columns: tuple[str, ...]) -> tuple[dict[str, Any], int, int]:
    """Read one byte range into per-column arrays: float64 arrays, or (codes, uniques) for text.

    Returns (columns, rows kept, lines skipped). Runs in a worker process for large runs.
    """
    path, start, end = task
    with open(path, "rb") as handle:
        handle.seek(start)
        lines = handle.read(end - start).splitlines()
    # Parsed rows are millions of small containers without reference cycles. The cyclic garbage
    # collector would scan them again and again, so it is paused while they exist.
    collecting = gc.isenabled()
    gc.disable()
    try:
        rows, skipped = _parse_lines(lines)
        getter = itemgetter(*columns)
        try:
            tuples = list(map(getter, rows))
        except KeyError:
            tuples = [tuple(row.get(name) for name in columns) for row in rows]
        del rows
        transposed = list(zip(*tuples)) if tuples else [() for _ in columns]
        del tuples
        result: dict[str, Any] = {}
        for name, values in zip(columns, transposed):
            if name in float_columns:
                result[name] = _to_float(values)
            else:
                text = np.array(values, dtype=object)
                try:
                    codes, uniques = pd.factorize(text, use_na_sentinel=True)
                except TypeError:  # an unhashable value (a list or an object) where text belongs
                    codes, uniques = pd.factorize(np.array([None if value is None else str(value) for value in values], dtype=object), use_na_sentinel=True)
                result[name] = (codes.astype(np.int32), np.asarray(uniques, dtype=object))
    finally:
        if collecting:
            gc.enable()
    return result, len(transposed[0]) if transposed else 0, skipped


def _combine_text(blocks: list[tuple[np.ndarray, np.ndarray]]) -> pd.Categorical:
    """Merge per-block factorized text into one categorical column."""
    if not blocks:
        return pd.Categorical([])
    categories = pd.Index(pd.unique(np.concatenate([uniques for _codes, uniques in blocks])))
    merged = []
    for codes, uniques in blocks:
        lookup = categories.get_indexer(uniques).astype(np.int32)
        merged.append(np.where(codes >= 0, lookup[np.clip(codes, 0, None)] if lookup.size else -1, -1))
    return pd.Categorical.from_codes(np.concatenate(merged), categories=categories)


def _worker_count(paths: list[Path]) -> int:
    total = sum(path.stat().st_size for path in paths)
    if total < _PARALLEL_BYTES:
        return 1
    return max(1, min(os.cpu_count() or 1, _MAX_PROCESSES))


def read_frame(
    paths: list[Path], columns: tuple[str, ...], float_columns: tuple[str, ...] = (), *, processes: int | None = None
) -> tuple[pd.DataFrame, int]:
    """Read JSON Lines files into a frame of ``columns``; return it and the count of skipped lines.

    ``float_columns`` become float64 (None and non-numbers become NaN); the others become
    categoricals. Runs of more than about 64 MB are parsed by a pool of processes
    (``processes`` overrides the count; 1 reads in this process).
    """
    tasks = _block_tasks(paths, _BLOCK_BYTES)
    workers = processes if processes is not None else _worker_count(paths)
    results: list[tuple[dict[str, Any], int, int]] | None = None
    if workers > 1 and len(tasks) > 1:
        try:
            with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                results = list(pool.map(_read_block, tasks, repeat(columns), repeat(float_columns)))
        except (OSError, BrokenProcessPool) as error:
            logger.warning("Parallel parsing failed (%s); reading the records in one process instead.", error)
    if results is None:
        results = [_read_block(task, columns, float_columns) for task in tasks]

    skipped = sum(result[2] for result in results)
    filled = [result[0] for result in results if result[1]]
    frame: dict[str, Any] = {}
    for name in columns:
        if name in float_columns:
            frame[name] = np.concatenate([block[name] for block in filled]) if filled else np.empty(0)
        else:
            frame[name] = _combine_text([block[name] for block in filled])
    return pd.DataFrame(frame), skipped


def _normalise_records(frame: pd.DataFrame) -> pd.DataFrame:
    """Give record columns numeric and categorical dtypes; drop rows without a start time."""
    for name in TEXT_COLUMNS:
        frame[name] = frame[name].astype("category")
    frame["tokens_estimated"] = frame["tokens_estimated"].to_numpy() > 0
    frame["attempt"] = frame["attempt"].fillna(1.0)
    valid = np.isfinite(frame["started_at"].to_numpy())
    dropped = int((~valid).sum())
    if dropped:
        logger.warning("Dropped %d records without a numeric started_at; the writer of those records is broken.", dropped)
        frame = frame[valid].reset_index(drop=True)
    return frame


def _read_json_file(path: Path, required: bool) -> dict[str, Any] | None:
    if not path.exists():
        if required:
            raise InputError(
                _("Missing {file}: it is written by ptu-verify run. Point analyze at a complete run directory.").format(file=path)
            )
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(_("Cannot read {file}: {error}. Fix or remove the file and run again.").format(file=path, error=error)) from None
    if not isinstance(value, dict):
        raise InputError(_("{file} must contain a JSON object, got {kind}.").format(file=path, kind=type(value).__name__))
    return value


def _validate_plan(plan: dict[str, Any], path: Path) -> PlanInfo | None:
    stages = plan.get("stages")
    if not isinstance(stages, list) or not stages:
        logger.warning("%s has no stages; the run is analysed as one stage.", path)
        return None
    for index, stage in enumerate(stages):
        if not isinstance(stage, dict):
            raise InputError(_("{file}: stages[{index}] must be an object.").format(file=path, index=index))
        for key in ("start_at", "measure_start_at", "end_at"):
            value = stage.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InputError(
                    _("{file}: stages[{index}].{field} must be a Unix time in seconds, got {value!r}.").format(
                        file=path, index=index, field=key, value=value
                    )
                )
        if not stage["start_at"] <= stage["measure_start_at"] <= stage["end_at"]:
            raise InputError(
                _("{file}: stages[{index}] needs start_at <= measure_start_at <= end_at.").format(file=path, index=index)
            )
        stage.setdefault("label", f"stage-{index + 1}")
        for key in ("offered_tpm", "offered_qpm", "fraction_of_capacity", "users"):
            stage.setdefault(key, None)
    plan["stages"] = sorted(stages, key=lambda stage: stage["start_at"])
    return plan  # type: ignore[return-value]


def load_run(run_dir: Path) -> RunData:
    """Read a run directory; raise InputError when it is missing or contains no records."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(_("Run directory {path} does not exist. Give the directory that ptu-verify run wrote.").format(path=run_dir))
    paths = record_files(run_dir)
    if not paths:
        raise InputError(_("No records*.jsonl files in {path}. Give the directory that ptu-verify run wrote.").format(path=run_dir))

    records, skipped = read_frame(paths, RECORD_COLUMNS, FLOAT_COLUMNS)
    records = _normalise_records(records)
    if skipped:
        logger.warning("Skipped %d unparsable record lines in %s (a writer was probably stopped mid-line).", skipped, run_dir)
    if records.empty:
        raise InputError(_("{path} contains no readable records. Check that the run sent any requests.").format(path=run_dir))

    run_info = _read_json_file(run_dir / "run.json", required=False) or {}
    plan_raw = _read_json_file(run_dir / "plan.json", required=False)
    plan = _validate_plan(plan_raw, run_dir / "plan.json") if plan_raw is not None else None

    health, skipped_health = read_frame(health_files(run_dir), HEALTH_COLUMNS, HEALTH_COLUMNS[1:])
    logger.info("Read %d records from %d files in %s", len(records), len(paths), run_dir)
    return RunData(
        run_dir=run_dir,
        records=records,
        run_info=cast(RunInfo, run_info),
        plan=plan,
        health=health,
        skipped_record_lines=skipped,
        skipped_health_lines=skipped_health,
        record_paths=paths,
    )


def stage_list(plan: PlanInfo | None) -> list[PlanStage]:
    """Return the plan's stages, or an empty list when there is no plan."""
    return list(plan.get("stages", [])) if plan else []

"""Published request traces as timed requests: the Qwen Bailian usage trace and the Azure LLM trace.

Both traces carry token counts and arrival times but no text, so prompts are built to each
row's input length (Qwen tokens, chat template included) and ``max_tokens`` is the row's
output length. ``trace_offset_s`` is the arrival time in seconds after the first request;
the load plans play it.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..i18n import _
from ..requests import RequestSpec
from ..tokens import DEFAULT_TEMPLATE
from .schema import jsonl_objects
from .textgen import prose_filler

__all__ = ["TRACE_FORMATS", "TraceRow", "TraceWorkload", "detect_trace_format", "load_trace"]

logger = logging.getLogger(__name__)

TRACE_FORMATS = ("auto", "bailian", "azure")
# Tokens per hash_ids block in the Bailian trace (README of the dataset, and blksz_16 in its file names).
BAILIAN_BLOCK_TOKENS = 16
# One user message: content + per_message, + the reply primer.
_ONE_MESSAGE_OVERHEAD = DEFAULT_TEMPLATE.per_message + DEFAULT_TEMPLATE.reply_primer
_AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


@dataclass(frozen=True)
class TraceRow:
    """One request of a trace: arrival time in seconds (any origin), token counts, and kind."""

    time_s: float
    input_tokens: int
    output_tokens: int
    kind: str
    hash_ids: tuple[int, ...] = ()


def detect_trace_format(path: Path) -> str:
    """Return ``bailian`` or ``azure`` from the file's first line; InputError when neither."""
    try:
        with path.open(encoding="utf-8") as handle:
            first = next((line for line in handle if line.strip()), "")
    except OSError as error:
        raise InputError(_("Trace file {file} cannot be read: {error}. Check the path.").format(file=path, error=error)) from error
    if first.lstrip().startswith("{") and "input_length" in first:
        return "bailian"
    if all(column in first for column in _AZURE_COLUMNS):
        return "azure"
    raise InputError(
        _(
            "Trace file {file} is in neither known format: a Bailian trace is JSONL with timestamp, input_length and output_length; "
            "an Azure trace is CSV with columns TIMESTAMP, ContextTokens, GeneratedTokens. Pass format explicitly or convert the file."
        ).format(file=path)
    )


def _bailian_rows(path: Path) -> Iterator[TraceRow]:
    # The dataset's README (alibaba-edu/qwen-bailian-usagetraces-anon) gives timestamps in seconds from the
    # start of the file and hash_ids as salted hashes of 16-token blocks.
    with path.open(encoding="utf-8") as handle:
        for where, record in jsonl_objects(path, handle):
            time_s = _number(record.get("timestamp"), where, "timestamp")
            input_tokens = _count(record.get("input_length"), where, "input_length")
            output_tokens = _count(record.get("output_length"), where, "output_length")
            hash_ids = record.get("hash_ids") or []
            if not isinstance(hash_ids, list) or not all(isinstance(item, int) for item in hash_ids):
                raise InputError(_("{where}: key 'hash_ids' must be a list of integers.").format(where=where))
            yield TraceRow(time_s, input_tokens, output_tokens, str(record.get("type") or "text"), tuple(hash_ids))


def _azure_rows(path: Path) -> Iterator[TraceRow]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in _AZURE_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise InputError(
                _("{file}: missing column '{column}'. An Azure trace has columns TIMESTAMP, ContextTokens, GeneratedTokens.").format(
                    file=path, column=missing[0]
                )
            )
        for line_number, row in enumerate(reader, start=2):
            where = _("{file} line {line}").format(file=path, line=line_number)
            yield TraceRow(
                _azure_time(row["TIMESTAMP"], where),
                _count(_int_text(row["ContextTokens"]), where, "ContextTokens"),
                _count(_int_text(row["GeneratedTokens"]), where, "GeneratedTokens"),
                "azure",
            )


def _int_text(text: str | None) -> Any:
    try:
        return int(str(text).strip())
    except ValueError:
        return text


def _azure_time(text: str, where: str) -> float:
    # Timestamps look like "2023-11-16 18:15:46.6805900": seven fractional digits, which
    # datetime.fromisoformat rejects before Python 3.11, so the fraction is cut to microseconds.
    value = (text or "").strip()
    main, dot, fraction = value.partition(".")
    try:
        moment = dt.datetime.fromisoformat(main)
    except ValueError as error:
        raise InputError(_("{where}: TIMESTAMP {value!r} is not a date and time like 2023-11-16 18:15:46.68.").format(where=where, value=value)) from error
    micros = int((fraction + "000000")[:6]) if dot and fraction.isdigit() else 0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.timestamp() + micros / 1e6


def _number(value: Any, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(_("{where}: key '{key}' = {value!r} must be a number.").format(where=where, key=key, value=value))
    return float(value)


def _count(value: Any, where: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(_("{where}: key '{key}' = {value!r} must be a whole number >= 0.").format(where=where, key=key, value=value))
    return value


class _PromptMaker:
    """Builds one user message per trace row, sharing text between rows that share hash_ids."""

    def __init__(self, language: str, seed: int | None) -> None:
        self.filler = prose_filler(language)
        self.rng = random.Random(seed)
        self.blocks: dict[tuple[int, bool], str] = {}

    def content(self, row: TraceRow) -> tuple[str, int]:
        """Return (text, content tokens): a question of the row's input length minus the template."""
        tokens = max(2, row.input_tokens - _ONE_MESSAGE_OVERHEAD)
        body = tokens - self.filler.question_tokens
        parts: list[str] = []
        blocks = min(len(row.hash_ids), body // BAILIAN_BLOCK_TOKENS)
        if blocks and body - blocks * BAILIAN_BLOCK_TOKENS == 1:
            blocks -= 1  # a continued fill needs 2+ tokens
        for position in range(blocks):
            parts.append(self._block(row.hash_ids[position], first=position == 0))
        remainder = body - blocks * BAILIAN_BLOCK_TOKENS
        if remainder:
            parts.append(self.filler.fill(self.rng, remainder, continued=blocks > 0))
        return "".join(parts) + self.filler.connectors.question, tokens

    def _block(self, hash_id: int, *, first: bool) -> str:
        # A block's text depends only on its hash id, so rows with a common prefix of hash ids
        # send a common text prefix (what a context cache can reuse).
        key = (hash_id, first)
        text = self.blocks.get(key)
        if text is None:
            text = self.filler.fill(random.Random(hash_id), BAILIAN_BLOCK_TOKENS, continued=not first)
            self.blocks[key] = text
        return text


def load_trace(
    path: str | Path,
    *,
    format: str = "auto",
    seed: int | None = None,
    language: str | None = None,
    limit: int | None = None,
) -> list[RequestSpec]:
    """Read a trace and return its requests sorted by ``trace_offset_s``.

    ``format`` is ``auto`` (from the first line), ``bailian`` or ``azure``. Prompts are Chinese
    for Bailian traces and English for Azure traces unless ``language`` sets one.
    ``limit`` keeps the first N requests by arrival time, since every request keeps its prompt
    text in memory (about 3.5 bytes per token in Chinese, 5 in English).
    """
    path = Path(path)
    if format not in TRACE_FORMATS:
        raise InputError(_("Trace format '{format}' is not valid. Use one of: {formats}.").format(format=format, formats=", ".join(TRACE_FORMATS)))
    if not path.is_file():
        raise InputError(_("Trace file {file} does not exist. Check the path.").format(file=path))
    kind = detect_trace_format(path) if format == "auto" else format
    rows = list(_bailian_rows(path) if kind == "bailian" else _azure_rows(path))
    if not rows:
        raise InputError(_("Trace file {file} has no requests.").format(file=path))
    rows.sort(key=lambda row: row.time_s)
    if limit is not None:
        rows = rows[:limit]

    maker = _PromptMaker(language or ("zh" if kind == "bailian" else "en"), seed)
    start_s = rows[0].time_s
    specs: list[RequestSpec] = []
    short = 0
    for row in rows:
        text, tokens = maker.content(row)
        short += row.input_tokens < tokens + _ONE_MESSAGE_OVERHEAD
        specs.append(
            RequestSpec(
                messages=[{"role": "user", "content": text}],
                max_tokens=max(1, row.output_tokens),
                workload=path.stem,
                variant=row.kind,
                expected_input_tokens=tokens + _ONE_MESSAGE_OVERHEAD,
                trace_offset_s=row.time_s - start_s,
            )
        )
    if short:
        logger.warning(
            "trace %s: %d requests have fewer input tokens than the smallest prompt (%d); they are sent with %d",
            path,
            short,
            _ONE_MESSAGE_OVERHEAD + 2,
            _ONE_MESSAGE_OVERHEAD + 2,
        )
    logger.info("trace %s (%s): %d requests over %.1f s", path, kind, len(specs), specs[-1].trace_offset_s or 0.0)
    return specs


class TraceWorkload:
    """A Workload that returns a trace's requests in arrival order, starting again after the last."""

    def __init__(self, specs: list[RequestSpec], *, name: str) -> None:
        if not specs:
            raise InputError(_("The trace has no requests."))
        self.name = name
        self.specs = specs
        self._position = 0

    def next_request(self) -> RequestSpec:
        """Return a copy of the next request of the trace."""
        spec = self.specs[self._position]
        self._position = (self._position + 1) % len(self.specs)
        if self._position == 0:
            logger.info("trace %s: all %d requests returned, starting again", self.name, len(self.specs))
        return replace(spec, messages=[dict(message) for message in spec.messages])

    def expected_tokens_per_request(self) -> float:
        """Return the mean input tokens + mean max_tokens over the trace."""
        return sum((spec.expected_input_tokens or 0) + spec.max_tokens for spec in self.specs) / len(self.specs)

    def describe(self, sample: int = 1000) -> Any:
        """Return WorkloadStats measured on the first ``sample`` requests of the trace."""
        from .stats import measure_workload

        return measure_workload(TraceWorkload(self.specs, name=self.name), sample=min(sample, len(self.specs)))

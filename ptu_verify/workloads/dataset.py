"""Dataset replay: a JSONL file of OpenAI-style message lists, sent in file order or shuffled.

Each line is ``{"messages": [...], "max_tokens": 300}`` (``max_tokens`` optional). Logs name
the file, line numbers and counts, never the prompt text.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..i18n import _
from ..requests import RequestSpec
from .schema import jsonl_objects
from .stats import measured_input_tokens

__all__ = ["ORDERS", "DatasetWorkload", "read_dataset"]

logger = logging.getLogger(__name__)

ORDERS = ("in-order", "shuffled")
_ROLES = ("system", "user", "assistant", "tool")


def read_dataset(path: Path) -> list[tuple[list[dict[str, Any]], int | None]]:
    """Read and validate a dataset file; return (messages, max_tokens or None) per line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(_("Dataset file {file} cannot be read: {error}. Check the path.").format(file=path, error=error)) from error
    rows: list[tuple[list[dict[str, Any]], int | None]] = []
    for where, record in jsonl_objects(path, text.splitlines()):
        unknown = sorted(set(record) - {"messages", "max_tokens"})
        if unknown:
            raise InputError(_("{where}: unknown key '{key}'. Allowed keys: messages, max_tokens.").format(where=where, key=unknown[0]))
        messages = record.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InputError(_("{where}: key 'messages' must be a non-empty list of {{\"role\", \"content\"}} objects.").format(where=where))
        for index, message in enumerate(messages):
            if not isinstance(message, Mapping) or message.get("role") not in _ROLES or not isinstance(message.get("content"), (str, list)):
                raise InputError(
                    _("{where}: messages[{index}] needs a role ({roles}) and a content string or list of parts.").format(
                        where=where, index=index, roles=", ".join(_ROLES)
                    )
                )
        max_tokens = record.get("max_tokens")
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
            raise InputError(_("{where}: key 'max_tokens' = {value!r} must be a whole number >= 1, or be left out.").format(where=where, value=max_tokens))
        rows.append(([dict(message) for message in messages], max_tokens))
    if not rows:
        raise InputError(_("Dataset file {file} has no requests. Write one {{\"messages\": [...]}} object per line.").format(file=path))
    return rows


class DatasetWorkload:
    """Replays a dataset; after the last line it starts again (reshuffled when shuffled)."""

    def __init__(
        self,
        path: Path,
        *,
        order: str = "in-order",
        default_max_tokens: int = 512,
        seed: int | None = None,
        name: str | None = None,
    ) -> None:
        if order not in ORDERS:
            raise InputError(_("Dataset order '{order}' is not valid. Use one of: {orders}.").format(order=order, orders=", ".join(ORDERS)))
        self.path = path
        self.name = name or path.stem
        self.order = order
        self.default_max_tokens = default_max_tokens
        self.rows = read_dataset(path)
        self.seed = seed
        self._rng = random.Random(seed)
        self._input_tokens: list[int | None] = [None] * len(self.rows)
        self._sequence: list[int] = []
        self._position = 0
        self.passes = 0
        logger.info("dataset %s: %d requests, order %s", path, len(self.rows), order)

    def _next_index(self) -> int:
        if self._position >= len(self._sequence):
            self._sequence = list(range(len(self.rows)))
            if self.order == "shuffled":
                self._rng.shuffle(self._sequence)
            if self.passes:
                logger.info("dataset %s: starting pass %d", self.path, self.passes + 1)
            self.passes += 1
            self._position = 0
        index = self._sequence[self._position]
        self._position += 1
        return index

    def _tokens(self, index: int) -> int:
        cached = self._input_tokens[index]
        if cached is None:
            cached, _images = measured_input_tokens(RequestSpec(messages=self.rows[index][0], max_tokens=1))
            self._input_tokens[index] = cached
        return cached

    def next_request(self) -> RequestSpec:
        """Return the next line as a request (copies, so callers may change them)."""
        index = self._next_index()
        messages, max_tokens = self.rows[index]
        return RequestSpec(
            messages=[dict(message) for message in messages],
            max_tokens=max_tokens or self.default_max_tokens,
            workload=self.name,
            variant="dataset",
            expected_input_tokens=self._tokens(index),
        )

    def expected_tokens_per_request(self) -> float:
        """Return the mean prompt tokens + mean max_tokens over the whole file."""
        total = 0
        for index, (_messages, max_tokens) in enumerate(self.rows):
            total += self._tokens(index) + (max_tokens or self.default_max_tokens)
        return total / len(self.rows)

    def describe(self, sample: int = 1000) -> Any:
        """Return WorkloadStats measured on ``sample`` requests of a fresh replay with the same order and seed."""
        from .stats import measure_workload

        replay = DatasetWorkload(self.path, order=self.order, default_max_tokens=self.default_max_tokens, seed=self.seed, name=self.name)
        return measure_workload(replay, sample=sample)

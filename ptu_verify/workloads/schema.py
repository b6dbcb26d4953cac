"""Validation errors for profile files: every message names the file, the key, the value and the fix."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..i18n import _

__all__ = ["ProfileSource", "SchemaError", "jsonl_objects"]


@dataclass(frozen=True)
class ProfileSource:
    """The origin of a profile, shown in messages: a file path or ``built-in profile NAME (path)``."""

    label: str


class SchemaError(InputError):
    """An invalid profile value (exit 2)."""

    def __init__(self, source: ProfileSource, key: str, value: Any, problem: str, fix: str) -> None:
        shown = _("(missing)") if value is None else repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(
            _("{file}: key '{key}' = {value}: {problem} Fix: {fix}").format(
                file=source.label, key=key, value=shown, problem=problem, fix=fix
            )
        )
        self.source = source
        self.key = key


def jsonl_objects(path: Path, lines: Iterable[str]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Yield (``FILE line N`` label, object) for each non-blank line; InputError on a line that is not a JSON object."""
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = _("{file} line {line}").format(file=path, line=line_number)
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(_("{where}: not valid JSON ({error}). Write one JSON object per line.").format(where=where, error=error.msg)) from error
        if not isinstance(record, Mapping):
            raise InputError(_("{where}: expected a JSON object, got {value!r}.").format(where=where, value=record))
        yield where, record

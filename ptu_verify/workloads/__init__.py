"""Workloads: profiles that generate RequestSpecs, dataset replay and trace input."""

from __future__ import annotations

import random
from typing import Protocol

from ..requests import RequestSpec

__all__ = ["Workload", "load_workload"]


class Workload(Protocol):
    """A source of requests. Implementations must be deterministic for a given ``seed``."""

    name: str

    def next_request(self) -> RequestSpec:
        """Return the next request to send."""
        ...

    def expected_tokens_per_request(self) -> float:
        """Return the mean input + output tokens one request is expected to use."""
        ...


class _SmokeWorkload:
    """A tiny built-in workload: short English prompts, max_tokens 64."""

    def __init__(self, seed: int | None) -> None:
        self.name = "smoke"
        self._random = random.Random(seed)

    def next_request(self) -> RequestSpec:
        topic = self._random.choice(["rate limits", "token buckets", "load testing", "stream parsing"])
        return RequestSpec(
            messages=[{"role": "user", "content": f"Explain {topic} in two sentences."}],
            max_tokens=64,
            workload=self.name,
            variant=self.name,
        )

    def expected_tokens_per_request(self) -> float:
        return 15 + 64


def load_workload(name_or_path: str, *, seed: int | None = None) -> Workload:
    """Load a built-in profile by name or a profile file by path."""
    if name_or_path == "smoke":
        return _SmokeWorkload(seed)
    from ..errors import InputError

    raise InputError(f"Unknown workload {name_or_path!r}. Built-in workloads: smoke.")

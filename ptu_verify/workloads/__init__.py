"""Workloads: profiles that generate RequestSpecs, dataset replay and trace input.

``load_workload`` accepts a built-in profile name (see ``builtin_profile_names()``), a path
to a ``.yaml`` profile, or a ``.jsonl`` dataset (``dataset:PATH``). ``dataset-shuffled:PATH``
replays a dataset shuffled, and ``trace:PATH`` reads a Bailian JSONL or Azure CSV trace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from ..errors import InputError
from ..i18n import _
from ..requests import RequestSpec
from .dataset import DatasetWorkload
from .generator import ProfileWorkload
from .profile import DatasetProfile, builtin_profile_names, load_profile
from .stats import WorkloadStats, measure_workload
from .traces import TraceWorkload, load_trace

__all__ = [
    "DatasetWorkload",
    "ProfileWorkload",
    "TraceWorkload",
    "Workload",
    "WorkloadStats",
    "builtin_profile_names",
    "load_trace",
    "load_workload",
    "measure_workload",
]


class Workload(Protocol):
    """A source of requests. Implementations must be deterministic for a given ``seed``."""

    name: str

    def next_request(self) -> RequestSpec:
        """Return the next request to send."""
        ...

    def expected_tokens_per_request(self) -> float:
        """Return the mean input + output tokens one request is expected to use."""
        ...

    def describe(self, sample: int = 1000) -> Any:
        """Return WorkloadStats measured by tokenizing ``sample`` generated requests."""
        ...


def load_workload(name_or_path: str, *, seed: int | None = None) -> Workload:
    """Load a workload by built-in name, profile path, dataset path or ``trace:PATH``; InputError if unknown."""
    if name_or_path.startswith("trace:"):
        path = Path(name_or_path[len("trace:") :])
        return TraceWorkload(load_trace(path, seed=seed), name=path.stem)
    for prefix, order in (("dataset:", "in-order"), ("dataset-shuffled:", "shuffled")):
        if name_or_path.startswith(prefix):
            return _dataset(Path(name_or_path[len(prefix) :]), order=order, seed=seed)

    path = Path(name_or_path)
    if path.suffix == ".csv":
        return TraceWorkload(load_trace(path, format="azure", seed=seed), name=path.stem)
    if path.suffix == ".jsonl":
        if not path.is_file():
            raise InputError(_("Workload file {file} does not exist. Check the path.").format(file=path))
        with path.open(encoding="utf-8") as handle:
            first = next((line for line in handle if line.strip()), "")
        if "input_length" in first and "messages" not in first:
            return TraceWorkload(load_trace(path, format="bailian", seed=seed), name=path.stem)
        return _dataset(path, order="in-order", seed=seed)

    profile = load_profile(name_or_path)
    if isinstance(profile, DatasetProfile):
        spec = profile.dataset
        return DatasetWorkload(spec.path, order=spec.order, default_max_tokens=spec.max_tokens, seed=seed, name=profile.name)
    return ProfileWorkload(profile, seed=seed)


def _dataset(path: Path, *, order: str, seed: int | None) -> DatasetWorkload:
    if not path.is_file():
        raise InputError(_("Dataset file {file} does not exist. Check the path.").format(file=path))
    return DatasetWorkload(path, order=order, seed=seed)

"""Verdict thresholds: documented defaults, optionally overridden by a YAML or TOML policy file."""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError
from ..i18n import _

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["CapacityPolicy", "ConfidencePolicy", "DataPolicy", "GeneratorPolicy", "LatencyPolicy", "Policy", "ThrottlingPolicy", "load_policy"]


@dataclass(frozen=True)
class CapacityPolicy:
    """When is the purchased capacity delivered."""

    min_delivered_fraction: float = 0.95
    max_throttled_share: float = 0.01  # a stage at or below this 429 share counts as unthrottled
    min_peak_offered_fraction: float = 1.0  # below this the plan never reached capacity


@dataclass(frozen=True)
class ThrottlingPolicy:
    """No 429s below capacity."""

    max_offered_fraction: float = 0.90
    max_throttled_share: float = 0.01


@dataclass(frozen=True)
class LatencyPolicy:
    """Optional latency objectives, checked at stages offered at most ``max_offered_fraction``."""

    ttft_p95_max_s: float | None = None
    speed_p50_min_tps: float | None = None
    max_offered_fraction: float = 1.0


@dataclass(frozen=True)
class DataPolicy:
    """How much data a stage needs before its figures decide anything."""

    min_successful_requests: int = 100
    min_duration_per_longest_request: float = 3.0


@dataclass(frozen=True)
class GeneratorPolicy:
    """When the load generator counts as having fallen behind."""

    max_cpu_percent: float = 90.0  # reached by the p95 of per-second CPU samples
    max_late_dropped_share: float = 0.01


@dataclass(frozen=True)
class ConfidencePolicy:
    """Bootstrap confidence interval on the sustained achieved TPM."""

    level: float = 0.95
    window_s: float = 10.0
    resamples: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class Policy:
    """All verdict thresholds. Shares and fractions are 0..1."""

    capacity: CapacityPolicy = field(default_factory=CapacityPolicy)
    throttling: ThrottlingPolicy = field(default_factory=ThrottlingPolicy)
    latency: LatencyPolicy = field(default_factory=LatencyPolicy)
    data: DataPolicy = field(default_factory=DataPolicy)
    generator: GeneratorPolicy = field(default_factory=GeneratorPolicy)
    confidence: ConfidencePolicy = field(default_factory=ConfidencePolicy)

    def as_dict(self) -> dict[str, Any]:
        """Return the thresholds as nested JSON-ready dicts."""
        return asdict(self)


# Fields that are shares or fractions of something, so must lie in [0, 1].
_UNIT_INTERVAL = {"max_throttled_share", "max_late_dropped_share"}
# Fields with a narrower range: (low, high, low included, high included, shown range).
# A delivered fraction of 0 or above 1 can never or always pass; a confidence level of 0 or 1 has no interval.
_RANGES = {
    ("capacity", "min_delivered_fraction"): (0.0, 1.0, False, True, "0 < value ≤ 1"),
    ("confidence", "level"): (0.0, 1.0, False, False, "0 < value < 1"),
}


def _check_value(source: str, section: str, name: str, value: Any, default: Any) -> Any:
    where = f"{source}: {section}.{name}"
    if value is None and name in ("ttft_p95_max_s", "speed_p50_min_tps"):
        return None
    expects_int = isinstance(default, int) and not isinstance(default, bool)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (expects_int and not isinstance(value, int)):
        kind = _("a whole number") if expects_int else _("a number")
        raise InputError(_("{where} must be {kind}, got {value!r}.").format(where=where, kind=kind, value=value))
    if math.isnan(value) or value < 0:
        raise InputError(_("{where} must be zero or more, got {value!r}.").format(where=where, value=value))
    if name in _UNIT_INTERVAL and value > 1:
        raise InputError(_("{where} is a share between 0 and 1 (0.01 = 1 %), got {value!r}.").format(where=where, value=value))
    bounds = _RANGES.get((section, name))
    if bounds is not None:
        low, high, low_included, high_included, shown = bounds
        above_low = value >= low if low_included else value > low
        below_high = value <= high if high_included else value < high
        if not (above_low and below_high):
            raise InputError(_("{where} must be in the range {range}, got {value!r}.").format(where=where, range=shown, value=value))
    if name in ("resamples", "window_s") and value <= 0:
        raise InputError(_("{where} must be more than zero, got {value!r}.").format(where=where, value=value))
    return value


def _parse(data: Any, source: str) -> Policy:
    if not isinstance(data, dict):
        raise InputError(_("Policy file {file} must contain a mapping of sections, got {kind}.").format(file=source, kind=type(data).__name__))
    policy = Policy()
    sections = {item.name: getattr(policy, item.name) for item in fields(Policy)}
    updates: dict[str, Any] = {}
    for section_name, values in data.items():
        if section_name == "compare":
            # Read by ptu-verify compare, so one policy file can serve analyze, run and compare.
            continue
        if section_name not in sections:
            raise InputError(
                _("Policy file {file}: unknown section '{section}'. Allowed sections: {allowed}.").format(
                    file=source, section=section_name, allowed=", ".join(sections)
                )
            )
        if not isinstance(values, dict):
            raise InputError(_("Policy file {file}: section '{section}' must be a mapping.").format(file=source, section=section_name))
        current = sections[section_name]
        allowed = {item.name: getattr(current, item.name) for item in fields(current)}
        changes = {}
        for name, value in values.items():
            if name not in allowed:
                raise InputError(
                    _("Policy file {file}: unknown key '{section}.{key}'. Allowed keys: {allowed}.").format(
                        file=source, section=section_name, key=name, allowed=", ".join(allowed)
                    )
                )
            changes[name] = _check_value(source, section_name, name, value, allowed[name])
        updates[section_name] = replace(current, **changes)
    return replace(policy, **updates)


def load_policy(path: Path | None) -> Policy:
    """Return the default policy, or the one in ``path`` (.toml, else YAML) on top of the defaults."""
    if path is None:
        return Policy()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(
            _("Cannot read policy file {file}: {error}. Check the path given to --policy.").format(file=path, error=error.strerror or error)
        ) from None
    try:
        data = tomllib.loads(text) if str(path).endswith(".toml") else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        raise InputError(_("Policy file {file} cannot be parsed: {error}. Fix the syntax and run again.").format(file=path, error=error)) from None
    return _parse(data or {}, str(path))

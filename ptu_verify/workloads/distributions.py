"""Integer distributions for token counts, turns and image counts, parsed from profile YAML."""

from __future__ import annotations

import bisect
import csv
import itertools
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..i18n import _
from .schema import ProfileSource, SchemaError

__all__ = ["DISTRIBUTION_KINDS", "Distribution", "parse_distribution"]

DISTRIBUTION_KINDS = ("fixed", "uniform", "normal", "lognormal", "empirical")


@dataclass(frozen=True)
class Distribution:
    """A distribution of whole numbers, clipped to [minimum, maximum].

    ``kind`` is one of DISTRIBUTION_KINDS; ``params`` contains the kind's parameters.
    Empirical distributions sample ``values`` with ``weights``; a histogram bin is stored as
    its (low, high) range and sampled uniformly inside it.
    """

    kind: str
    params: Mapping[str, float]
    minimum: int = 1
    maximum: int | None = None
    values: tuple[tuple[int, int], ...] = ()  # empirical: (low, high) inclusive ranges
    cumulative_weights: tuple[float, ...] = field(default=(), repr=False)

    def sample(self, rng: random.Random) -> int:
        """Draw one value."""
        if self.kind == "fixed":
            raw = self.params["value"]
        elif self.kind == "uniform":
            raw = rng.randint(int(self.params["min"]), int(self.params["max"]))
        elif self.kind == "normal":
            raw = rng.gauss(self.params["mean"], self.params["stddev"])
        elif self.kind == "lognormal":
            raw = rng.lognormvariate(self.params["mu"], self.params["sigma"])
        else:
            index = bisect.bisect_right(self.cumulative_weights, rng.random() * self.cumulative_weights[-1])
            low, high = self.values[min(index, len(self.values) - 1)]
            raw = low if low == high else rng.randint(low, high)
        return self.clip(round(raw))

    def clip(self, value: int) -> int:
        """Clip ``value`` to [minimum, maximum]."""
        value = max(self.minimum, value)
        return value if self.maximum is None else min(self.maximum, value)


# Keys each kind accepts besides ``kind``, ``min`` and ``max`` (uniform requires min and max).
_KIND_KEYS: dict[str, tuple[str, ...]] = {
    "fixed": ("value",),
    "uniform": (),
    "normal": ("mean", "stddev"),
    "lognormal": ("mu", "median", "mean", "sigma"),
    "empirical": ("values", "weights", "histogram"),
}


def parse_distribution(
    value: Any,
    *,
    source: ProfileSource,
    key: str,
    minimum: int = 1,
    resolve_file: Callable[[str], Path] | None = None,
) -> Distribution:
    """Parse a distribution from a profile value: an integer (fixed) or a mapping with ``kind``.

    ``minimum`` is the lowest value the caller accepts (a ``min`` below it is rejected).
    ``resolve_file`` turns a histogram path from the profile into a readable file.
    Raises SchemaError naming the file, key and value.
    """
    if isinstance(value, bool):
        raise SchemaError(source, key, value, _("a whole number or a mapping with 'kind' is expected."), _example())
    if isinstance(value, int):
        if value < minimum:
            raise SchemaError(source, key, value, _("the value must be at least {minimum}.").format(minimum=minimum), _example())
        return Distribution("fixed", {"value": value}, minimum=value, maximum=value)
    if not isinstance(value, Mapping):
        raise SchemaError(source, key, value, _("a whole number or a mapping with 'kind' is expected."), _example())

    kind = value.get("kind")
    if kind not in _KIND_KEYS:
        raise SchemaError(
            source,
            f"{key}.kind",
            kind,
            _("unknown distribution kind."),
            _("use one of: {kinds}.").format(kinds=", ".join(DISTRIBUTION_KINDS)),
        )
    allowed = {"kind", "min", "max", *_KIND_KEYS[kind]}
    for name in value:
        if name not in allowed:
            raise SchemaError(
                source,
                f"{key}.{name}",
                value[name],
                _("unknown key for a {kind} distribution.").format(kind=kind),
                _("use only: {keys}.").format(keys=", ".join(sorted(allowed))),
            )

    low = _whole(value, "min", source, key, default=minimum, minimum=minimum)
    assert low is not None  # a default is given
    high = _whole(value, "max", source, key, default=None, minimum=low)

    if kind == "fixed":
        fixed = _whole(value, "value", source, key, default=None, minimum=minimum, required=True)
        assert fixed is not None
        return Distribution("fixed", {"value": fixed}, minimum=fixed, maximum=fixed)
    if kind == "uniform":
        if "min" not in value or "max" not in value:
            raise SchemaError(source, key, dict(value), _("a uniform distribution needs both 'min' and 'max'."), _("add min: and max:."))
        assert high is not None
        return Distribution("uniform", {"min": low, "max": high}, minimum=low, maximum=high)
    if kind == "normal":
        mean = _number(value, "mean", source, key, positive=False)
        stddev = _number(value, "stddev", source, key, positive=True)
        return Distribution("normal", {"mean": mean, "stddev": stddev}, minimum=low, maximum=high)
    if kind == "lognormal":
        return _parse_lognormal(value, source=source, key=key, minimum=low, maximum=high)
    return _parse_empirical(value, source=source, key=key, minimum=low, maximum=high, resolve_file=resolve_file)


def _example() -> str:
    # format() turns the escaped braces into literal ones.
    return _("write e.g. 500, or {{kind: lognormal, median: 800, sigma: 0.9, min: 50, max: 8000}}.").format()


def _whole(
    mapping: Mapping[str, Any],
    name: str,
    source: ProfileSource,
    key: str,
    *,
    default: int | None,
    minimum: int,
    required: bool = False,
) -> int | None:
    if name not in mapping:
        if required:
            raise SchemaError(source, f"{key}.{name}", None, _("the key is missing."), _("add {name}: with a whole number.").format(name=name))
        return default
    raw = mapping[name]
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or raw != int(raw) or int(raw) < minimum:
        raise SchemaError(
            source,
            f"{key}.{name}",
            raw,
            _("a whole number of at least {minimum} is expected.").format(minimum=minimum),
            _("set {name}: to a whole number >= {minimum}.").format(name=name, minimum=minimum),
        )
    return int(raw)


def _number(mapping: Mapping[str, Any], name: str, source: ProfileSource, key: str, *, positive: bool) -> float:
    raw = mapping.get(name)
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw) or (positive and raw <= 0):
        problem = _("a positive number is expected.") if positive else _("a number is expected.")
        raise SchemaError(source, f"{key}.{name}", raw, problem, _("set {name}: to a number.").format(name=name))
    return float(raw)


def _parse_lognormal(
    value: Mapping[str, Any], *, source: ProfileSource, key: str, minimum: int, maximum: int | None
) -> Distribution:
    # Exactly one location parameter: mu (of the log), median (= e^mu) or mean (= e^(mu + sigma²/2)).
    sigma = _number(value, "sigma", source, key, positive=True)
    given = [name for name in ("mu", "median", "mean") if name in value]
    if len(given) != 1:
        raise SchemaError(
            source,
            key,
            dict(value),
            _("a lognormal distribution needs exactly one of 'mu', 'median' or 'mean'."),
            _("keep one of them, e.g. median: 800."),
        )
    name = given[0]
    location = _number(value, name, source, key, positive=name != "mu")
    if name == "mu":
        mu = location
    elif name == "median":
        mu = math.log(location)
    else:
        mu = math.log(location) - sigma * sigma / 2
    return Distribution("lognormal", {"mu": mu, "sigma": sigma}, minimum=minimum, maximum=maximum)


def _parse_empirical(
    value: Mapping[str, Any],
    *,
    source: ProfileSource,
    key: str,
    minimum: int,
    maximum: int | None,
    resolve_file: Callable[[str], Path] | None,
) -> Distribution:
    if ("values" in value) == ("histogram" in value):
        raise SchemaError(
            source,
            key,
            dict(value),
            _("an empirical distribution needs either 'values' (a list) or 'histogram' (a CSV file), not both."),
            _("write values: [120, 340, 560] or histogram: data/lengths.csv."),
        )
    if "values" in value:
        raw_values = value["values"]
        if not isinstance(raw_values, list) or not raw_values:
            raise SchemaError(source, f"{key}.values", raw_values, _("a non-empty list of whole numbers is expected."), _("write values: [120, 340, 560]."))
        ranges: list[tuple[int, int]] = []
        for index, item in enumerate(raw_values):
            if isinstance(item, bool) or not isinstance(item, int) or item < minimum:
                raise SchemaError(
                    source,
                    f"{key}.values[{index}]",
                    item,
                    _("a whole number of at least {minimum} is expected.").format(minimum=minimum),
                    _("replace it with a whole number."),
                )
            ranges.append((item, item))
        weights = _weights(value.get("weights"), len(ranges), source=source, key=key)
    else:
        if resolve_file is None:
            raise SchemaError(source, f"{key}.histogram", value["histogram"], _("histogram files are not supported here."), _("use values: instead."))
        path = resolve_file(str(value["histogram"]))
        if "weights" in value:
            raise SchemaError(source, f"{key}.weights", value["weights"], _("weights come from the histogram's count column."), _("remove weights:."))
        ranges, weights = _read_histogram(path, source=source, key=f"{key}.histogram")

    return Distribution(
        "empirical",
        {},
        minimum=minimum,
        maximum=maximum,
        values=tuple(ranges),
        cumulative_weights=tuple(itertools.accumulate(weights)),
    )


def _weights(raw: Any, count: int, *, source: ProfileSource, key: str) -> list[float]:
    if raw is None:
        return [1.0] * count
    if not isinstance(raw, list) or len(raw) != count:
        raise SchemaError(
            source,
            f"{key}.weights",
            raw,
            _("a list with one weight per value ({count}) is expected.").format(count=count),
            _("give as many weights as values, or remove weights:."),
        )
    weights: list[float] = []
    for index, item in enumerate(raw):
        if isinstance(item, bool) or not isinstance(item, (int, float)) or item < 0 or not math.isfinite(item):
            raise SchemaError(source, f"{key}.weights[{index}]", item, _("a weight must be a number >= 0."), _("replace it with a number >= 0."))
        weights.append(float(item))
    if sum(weights) <= 0:
        raise SchemaError(source, f"{key}.weights", raw, _("at least one weight must be positive."), _("give some value a positive weight."))
    return weights


def _read_histogram(path: Path, *, source: ProfileSource, key: str) -> tuple[list[tuple[int, int]], list[float]]:
    """Read ``low,high,count`` rows (or ``value,count``); a header row and # comments are skipped."""
    ranges: list[tuple[int, int]] = []
    weights: list[float] = []
    file_source = ProfileSource(str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SchemaError(source, key, str(path), _("the histogram file cannot be read ({error}).").format(error=error), _("check the path; it is relative to the profile file."))
    for line_number, row in enumerate(csv.reader(line for line in text.splitlines() if not line.lstrip().startswith("#")), start=1):
        cells = [cell.strip() for cell in row if cell.strip()]
        if not cells:
            continue
        try:
            numbers = [float(cell) for cell in cells]
        except ValueError:
            if not ranges and line_number == 1:
                continue  # header row
            raise SchemaError(file_source, f"line {line_number}", ",".join(cells), _("numbers are expected."), _("write rows as low,high,count or value,count."))
        if len(numbers) == 2:
            low = high = int(numbers[0])
            count = numbers[1]
        elif len(numbers) == 3:
            low, high, count = int(numbers[0]), int(numbers[1]), numbers[2]
        else:
            raise SchemaError(file_source, f"line {line_number}", ",".join(cells), _("2 or 3 columns are expected."), _("write rows as low,high,count or value,count."))
        if low < 1 or high < low or count < 0:
            raise SchemaError(file_source, f"line {line_number}", ",".join(cells), _("a bin needs 1 <= low <= high and count >= 0."), _("fix the row."))
        ranges.append((low, high))
        weights.append(count)
    if not ranges or sum(weights) <= 0:
        raise SchemaError(file_source, "rows", len(ranges), _("the histogram has no bin with a positive count."), _("add rows low,high,count."))
    return ranges, weights

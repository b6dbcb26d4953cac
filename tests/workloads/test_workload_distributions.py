"""Distribution kinds: sampling bounds and centres, and their validation errors."""

from __future__ import annotations

import math
import random
import statistics
from pathlib import Path

import pytest

from ptu_verify.errors import InputError
from ptu_verify.workloads.distributions import parse_distribution
from ptu_verify.workloads.schema import ProfileSource

SOURCE = ProfileSource("test.yaml")


def _draw(spec: object, count: int = 4000, *, resolve=None) -> list[int]:  # type: ignore[no-untyped-def]
    distribution = parse_distribution(spec, source=SOURCE, key="input_tokens", resolve_file=resolve)
    rng = random.Random(1)
    return [distribution.sample(rng) for _ in range(count)]


def test_fixed_from_integer_and_mapping() -> None:
    assert set(_draw(300, 50)) == {300}
    assert set(_draw({"kind": "fixed", "value": 42}, 50)) == {42}


def test_uniform_bounds_and_mean() -> None:
    values = _draw({"kind": "uniform", "min": 100, "max": 200})
    assert min(values) == 100
    assert max(values) == 200
    assert statistics.mean(values) == pytest.approx(150, abs=3)


def test_normal_is_clipped() -> None:
    values = _draw({"kind": "normal", "mean": 300, "stddev": 150, "min": 200, "max": 400})
    assert min(values) == 200
    assert max(values) == 400
    assert statistics.median(values) == pytest.approx(300, abs=10)


def test_lognormal_median_and_mean_parameters() -> None:
    by_median = _draw({"kind": "lognormal", "median": 800, "sigma": 0.5})
    assert statistics.median(by_median) == pytest.approx(800, rel=0.05)
    by_mean = _draw({"kind": "lognormal", "mean": 1000, "sigma": 0.5}, 20000)
    assert statistics.mean(by_mean) == pytest.approx(1000, rel=0.04)
    by_mu = _draw({"kind": "lognormal", "mu": math.log(500), "sigma": 0.3, "max": 600})
    assert max(by_mu) == 600
    assert statistics.median(by_mu) == pytest.approx(500, rel=0.05)


def test_empirical_values_with_weights() -> None:
    values = _draw({"kind": "empirical", "values": [10, 20], "weights": [3, 1]})
    assert set(values) == {10, 20}
    assert values.count(10) / len(values) == pytest.approx(0.75, abs=0.03)


def test_empirical_histogram_file(tmp_path: Path) -> None:
    histogram = tmp_path / "lengths.csv"
    histogram.write_text("# comment\nlow,high,count\n100,199,1\n1000,1999,3\n", encoding="utf-8")
    values = _draw({"kind": "empirical", "histogram": "lengths.csv"}, resolve=lambda name: tmp_path / name)
    assert all(100 <= value <= 199 or 1000 <= value <= 1999 for value in values)
    high_share = sum(value >= 1000 for value in values) / len(values)
    assert high_share == pytest.approx(0.75, abs=0.03)


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ({"kind": "poisson", "mean": 3}, "input_tokens.kind"),
        ({"kind": "normal", "mean": 3}, "input_tokens.stddev"),
        ({"kind": "normal", "mean": 3, "stddev": 1, "sd": 2}, "input_tokens.sd"),
        ({"kind": "uniform", "min": 5}, "input_tokens"),
        ({"kind": "lognormal", "sigma": 0.5}, "input_tokens"),
        ({"kind": "lognormal", "median": 100, "mean": 100, "sigma": 0.5}, "input_tokens"),
        ({"kind": "empirical", "values": [10, -1]}, "input_tokens.values[1]"),
        ({"kind": "empirical", "values": [10, 20], "weights": [1]}, "input_tokens.weights"),
        ({"kind": "fixed"}, "input_tokens.value"),
        ("many", "input_tokens"),
        (0, "input_tokens"),
    ],
)
def test_invalid_distribution_names_key(spec: object, key: str) -> None:
    with pytest.raises(InputError) as caught:
        _draw(spec, 1)
    message = caught.value.message
    assert "test.yaml" in message
    assert f"key '{key}'" in message
    assert "Fix:" in message


def test_histogram_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        _draw({"kind": "empirical", "histogram": "absent.csv"}, 1, resolve=lambda name: tmp_path / name)
    assert "input_tokens.histogram" in caught.value.message
    assert "absent.csv" in caught.value.message

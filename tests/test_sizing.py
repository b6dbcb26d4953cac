from __future__ import annotations

import math

import pytest

from ptu_verify.catalog import load_catalog
from ptu_verify.errors import InputError
from ptu_verify.sizing import MINUTES_PER_MONTH, Demand, Prices, estimate_cost, ptu_cost, round_ptus, size_ptus, token_cost


def spec(name: str):  # type: ignore[no-untyped-def]
    return load_catalog().resolve(name).spec


def test_plus_300k_tpm_needs_16_ptu() -> None:
    result = size_ptus(spec("qwen-plus-2025-04-28"), Demand(tpm=300000))
    assert result.raw_ptu == 12
    assert result.ptu == 16
    assert result.binding_limit == "tpm"
    assert result.capacity_tpm == 400000
    assert result.capacity_qpm == 400
    assert result.utilization == pytest.approx(0.75)


def test_plus_300k_tpm_minimum_rounding_gives_12() -> None:
    result = size_ptus(spec("qwen-plus-2025-04-28"), Demand(tpm=300000), rounding="minimum")
    assert result.ptu == 12


def test_turbo_100k_tpm_30_qpm_needs_4() -> None:
    result = size_ptus(spec("qwen-turbo-2025-04-28"), Demand(tpm=100000, qpm=30))
    assert result.raw_ptu == 2
    assert result.ptu == 4
    assert result.binding_limit == "tpm"


def test_vl_max_qpm_binds() -> None:
    result = size_ptus(spec("qwen-vl-max-2025-04-08"), Demand(tpm=8000, qpm=20))
    assert result.binding_limit == "qpm"
    assert result.raw_ptu == 5
    assert result.ptu == 8
    assert result.quotients == {"tpm": 2.0, "qpm": 5.0}


def test_headroom_raises_the_quotient() -> None:
    result = size_ptus(spec("qwen-plus"), Demand(tpm=200000), headroom=0.25)
    assert result.quotients["tpm"] == pytest.approx(10.0)
    assert result.raw_ptu == 10
    assert result.ptu == 16
    assert result.utilization == pytest.approx(200000 / 400000)


def test_exact_quotient_is_not_bumped_by_float_noise() -> None:
    result = size_ptus(spec("qwen-plus"), Demand(tpm=240000), headroom=0.25)
    assert result.raw_ptu == 12


@pytest.mark.parametrize(("raw", "unit", "multiple", "minimum"), [(1, 8, 8, 8), (8, 8, 8, 8), (9, 8, 16, 9), (17, 16, 32, 17), (0, 4, 4, 4)])
def test_round_ptus(raw: int, unit: int, multiple: int, minimum: int) -> None:
    assert round_ptus(raw, unit, "multiple") == multiple
    assert round_ptus(raw, unit, "minimum") == minimum


@pytest.mark.parametrize(
    "demand",
    [Demand(), Demand(input_tpm=5), Demand(tpm=-1), Demand(tpm=10, input_tpm=5, output_tpm=5), Demand(tpm=0), Demand(tpm=10, qpm=-2)],
)
def test_invalid_demand_is_rejected(demand: Demand) -> None:
    with pytest.raises(InputError):
        size_ptus(spec("qwen-plus"), demand)


@pytest.mark.parametrize("headroom", [-0.1, 10.5])
def test_headroom_out_of_range(headroom: float) -> None:
    with pytest.raises(InputError, match="--headroom"):
        size_ptus(spec("qwen-plus"), Demand(tpm=1000), headroom=headroom)


def test_ptu_cost_rounds_partial_minutes_up() -> None:
    assert ptu_cost(1.2, 8, 0.5) == 2 * 8 * 0.5
    assert ptu_cost(60, 16, 1.0) == 960


def test_token_cost_formula() -> None:
    assert token_cost(2_000_000, 500_000, 0.8, 2.0) == pytest.approx(1.6 + 1.0)


def test_monthly_cost_and_break_even() -> None:
    sizing = size_ptus(spec("qwen-plus"), Demand(input_tpm=240000, output_tpm=60000))
    cost = estimate_cost(sizing, Prices(ptu_per_hour=2.0, input_per_million=0.8, output_per_million=2.0))
    assert cost.minutes == MINUTES_PER_MONTH
    assert cost.ptu_cost == pytest.approx(MINUTES_PER_MONTH * 16 * 2.0 / 60)
    expected_tokens = MINUTES_PER_MONTH * (240000 * 0.8 + 60000 * 2.0) / 1e6
    assert cost.token_cost == pytest.approx(expected_tokens)
    full = MINUTES_PER_MONTH * 400000 * (0.8 * 0.8 + 0.2 * 2.0) / 1e6
    assert cost.token_cost_at_full_utilization == pytest.approx(full)
    assert cost.break_even_utilization == pytest.approx(cost.ptu_cost / full)
    assert cost.cheaper == "pay_per_token"


def test_cost_without_split_demand_needs_split() -> None:
    sizing = size_ptus(spec("qwen-plus"), Demand(tpm=300000))
    with pytest.raises(InputError, match="--input-tpm"):
        estimate_cost(sizing, Prices(input_per_million=1, output_per_million=1))
    only_ptu = estimate_cost(sizing, Prices(ptu_per_minute=0.1))
    assert only_ptu.ptu_cost == pytest.approx(MINUTES_PER_MONTH * 16 * 0.1)
    assert only_ptu.token_cost is None
    assert only_ptu.break_even_utilization is None


def test_two_ptu_prices_rejected() -> None:
    with pytest.raises(InputError, match="not both"):
        Prices(ptu_per_hour=1, ptu_per_minute=1).validate()


def test_split_catalog_entry_applies_both_limits(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "split.toml"
    path.write_text(
        '[models."qwen3-split-2026-01-01"]\nfamily = "qwen3-split"\nmodality = "text"\n'
        "input_tpm_per_ptu = 40000\noutput_tpm_per_ptu = 8000\nqpm_per_ptu = 30\nmin_purchase_ptu = 2\n",
        encoding="utf-8",
    )
    split_spec = load_catalog(path).resolve("qwen3-split").spec
    result = size_ptus(split_spec, Demand(input_tpm=100000, output_tpm=30000))
    assert result.quotients["input_tpm"] == pytest.approx(2.5)
    assert result.quotients["output_tpm"] == pytest.approx(3.75)
    assert result.binding_limit == "output_tpm"
    assert result.raw_ptu == 4
    assert result.ptu == 4
    with pytest.raises(InputError, match="separately"):
        size_ptus(split_spec, Demand(tpm=100000))
    assert math.isclose(result.utilization, 3.75 / 4)

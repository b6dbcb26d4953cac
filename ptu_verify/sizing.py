"""PTU sizing and cost: the Bailian console's calculator, with every step kept for display."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from .catalog import ModelSpec
from .errors import InputError
from .i18n import _

__all__ = ["Demand", "Prices", "SizingResult", "CostResult", "size_ptus", "round_ptus", "estimate_cost", "MINUTES_PER_MONTH"]

# A billing month is taken as 30 days.
MINUTES_PER_MONTH = 30 * 24 * 60
MAX_HEADROOM = 10.0

Rounding = Literal["multiple", "minimum"]


@dataclass(frozen=True)
class Demand:
    """Traffic to size for, per minute. Give ``tpm`` or both ``input_tpm`` and ``output_tpm``."""

    tpm: float | None = None
    input_tpm: float | None = None
    output_tpm: float | None = None
    qpm: float | None = None

    @property
    def total_tpm(self) -> float:
        """Input + output tokens per minute."""
        if self.tpm is not None:
            return self.tpm
        return (self.input_tpm or 0.0) + (self.output_tpm or 0.0)

    def validate(self) -> None:
        """Raise InputError unless the demand is complete and non-negative."""
        split = (self.input_tpm, self.output_tpm)
        if self.tpm is None and None in split:
            raise InputError(_("Give the demand as --tpm N, or as both --input-tpm N and --output-tpm N."))
        if self.tpm is not None and any(value is not None for value in split):
            raise InputError(_("Give either --tpm or --input-tpm with --output-tpm, not both."))
        for name, value in (("--tpm", self.tpm), ("--input-tpm", self.input_tpm), ("--output-tpm", self.output_tpm), ("--qpm", self.qpm)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise InputError(_("{option} must be zero or more and finite, got {value}.").format(option=name, value=value))
        if self.total_tpm <= 0 and not self.qpm:
            raise InputError(_("The demand is zero: give a positive --tpm (or --input-tpm and --output-tpm) or --qpm."))


@dataclass(frozen=True)
class SizingResult:
    """Every step of a PTU recommendation."""

    model: str
    demand_tpm: float
    demand_input_tpm: float | None
    demand_output_tpm: float | None
    demand_qpm: float | None
    headroom: float
    rounding: Rounding
    tpm_per_ptu: int | None
    input_tpm_per_ptu: int | None
    output_tpm_per_ptu: int | None
    qpm_per_ptu: int
    min_purchase_ptu: int
    quotients: dict[str, float]
    raw_ptu: int
    binding_limit: str
    ptu: int
    capacity_tpm: int
    capacity_input_tpm: int | None
    capacity_output_tpm: int | None
    capacity_qpm: int
    utilization: float
    utilization_by_limit: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


def round_ptus(raw_ptu: int, min_purchase_ptu: int, rounding: Rounding = "multiple") -> int:
    """Round a PTU count up to a multiple of the minimum purchase unit, or to at least the unit."""
    raw = max(raw_ptu, 1)
    if rounding == "minimum":
        return max(raw, min_purchase_ptu)
    return math.ceil(raw / min_purchase_ptu) * min_purchase_ptu


def size_ptus(spec: ModelSpec, demand: Demand, *, headroom: float = 0.0, rounding: Rounding = "multiple") -> SizingResult:
    """Recommend PTUs for ``demand``: the largest per-limit quotient, rounded as Bailian sells PTUs."""
    demand.validate()
    if not 0 <= headroom <= MAX_HEADROOM:
        raise InputError(
            _("--headroom must be between 0 and {max} (a fraction: 0.2 means 20 %), got {value}.").format(
                max=MAX_HEADROOM, value=headroom
            )
        )
    if spec.splits_tpm and demand.tpm is not None:
        raise InputError(
            _("Model {model} bills input and output TPM separately: give --input-tpm and --output-tpm instead of --tpm.").format(
                model=spec.version
            )
        )

    factor = 1.0 + headroom
    quotients: dict[str, float] = {}
    if spec.tpm_per_ptu is not None:
        quotients["tpm"] = demand.total_tpm * factor / spec.tpm_per_ptu
    if spec.input_tpm_per_ptu is not None and spec.output_tpm_per_ptu is not None:
        quotients["input_tpm"] = (demand.input_tpm or 0.0) * factor / spec.input_tpm_per_ptu
        quotients["output_tpm"] = (demand.output_tpm or 0.0) * factor / spec.output_tpm_per_ptu
    if demand.qpm is not None:
        quotients["qpm"] = demand.qpm * factor / spec.qpm_per_ptu

    # Tolerate float noise such as 12.000000000000002 before taking the ceiling.
    ceilings = {name: math.ceil(round(value, 9)) for name, value in quotients.items()}
    binding_limit = max(ceilings, key=lambda name: (ceilings[name], quotients[name]))
    raw_ptu = max(ceilings[binding_limit], 1)
    ptu = round_ptus(raw_ptu, spec.min_purchase_ptu, rounding)
    capacity = spec.capacity(ptu)

    utilization_by_limit = {name: quotients[name] / factor / ptu for name in quotients}
    return SizingResult(
        model=spec.version,
        demand_tpm=demand.total_tpm,
        demand_input_tpm=demand.input_tpm,
        demand_output_tpm=demand.output_tpm,
        demand_qpm=demand.qpm,
        headroom=headroom,
        rounding=rounding,
        tpm_per_ptu=spec.tpm_per_ptu,
        input_tpm_per_ptu=spec.input_tpm_per_ptu,
        output_tpm_per_ptu=spec.output_tpm_per_ptu,
        qpm_per_ptu=spec.qpm_per_ptu,
        min_purchase_ptu=spec.min_purchase_ptu,
        quotients=quotients,
        raw_ptu=raw_ptu,
        binding_limit=binding_limit,
        ptu=ptu,
        capacity_tpm=capacity.total_tpm,
        capacity_input_tpm=capacity.input_tpm,
        capacity_output_tpm=capacity.output_tpm,
        capacity_qpm=capacity.qpm,
        utilization=max(utilization_by_limit.values()),
        utilization_by_limit=utilization_by_limit,
    )


@dataclass(frozen=True)
class Prices:
    """Unit prices as given by the user. No prices are built in."""

    ptu_per_hour: float | None = None
    ptu_per_minute: float | None = None
    input_per_million: float | None = None
    output_per_million: float | None = None

    def validate(self) -> None:
        """Raise InputError for negative prices or two PTU prices at once."""
        if self.ptu_per_hour is not None and self.ptu_per_minute is not None:
            raise InputError(_("Give --ptu-price (per PTU-hour) or --ptu-price-per-minute, not both."))
        for name, value in (
            ("--ptu-price", self.ptu_per_hour),
            ("--ptu-price-per-minute", self.ptu_per_minute),
            ("--input-price", self.input_per_million),
            ("--output-price", self.output_per_million),
        ):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise InputError(_("{option} must be zero or more and finite, got {value}.").format(option=name, value=value))

    @property
    def ptu_price_per_minute(self) -> float | None:
        """PTU price per PTU-minute, from whichever form was given."""
        if self.ptu_per_minute is not None:
            return self.ptu_per_minute
        if self.ptu_per_hour is not None:
            return self.ptu_per_hour / 60.0
        return None

    @property
    def has_token_prices(self) -> bool:
        """True when both pay-per-token prices are given."""
        return self.input_per_million is not None and self.output_per_million is not None

    @property
    def any_given(self) -> bool:
        """True when at least one price is given."""
        return any(value is not None for value in (self.ptu_per_hour, self.ptu_per_minute, self.input_per_million, self.output_per_million))


@dataclass(frozen=True)
class CostResult:
    """Monthly cost of PTUs against pay-per-token, at a given demand."""

    minutes: int
    ptu: int
    ptu_cost: float | None
    token_cost: float | None
    token_cost_at_full_utilization: float | None
    break_even_utilization: float | None
    cheaper: str | None

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


def ptu_cost(minutes: float, ptu: int, price_per_minute: float) -> float:
    """PTU cost: billed minutes (partial minutes round up) × PTUs × price per PTU-minute."""
    return math.ceil(minutes) * ptu * price_per_minute


def token_cost(input_tokens: float, output_tokens: float, input_per_million: float, output_per_million: float) -> float:
    """Pay-per-token cost for the given token counts."""
    return input_tokens * input_per_million / 1e6 + output_tokens * output_per_million / 1e6


def estimate_cost(sizing: SizingResult, prices: Prices, *, minutes: float = MINUTES_PER_MONTH) -> CostResult:
    """Compare PTU cost with pay-per-token cost over ``minutes`` at the sized demand.

    The break-even utilization is the share of the deployed TPM capacity above which PTUs cost
    less than the same tokens paid per token, at the demand's input/output mix.
    """
    prices.validate()
    price_per_minute = prices.ptu_price_per_minute
    fixed = ptu_cost(minutes, sizing.ptu, price_per_minute) if price_per_minute is not None else None

    variable = None
    at_full = None
    if prices.has_token_prices:
        if sizing.demand_input_tpm is None or sizing.demand_output_tpm is None:
            raise InputError(
                _("Pay-per-token cost needs the input/output split: give --input-tpm and --output-tpm instead of --tpm.")
            )
        assert prices.input_per_million is not None and prices.output_per_million is not None
        billed_minutes = math.ceil(minutes)
        variable = token_cost(
            sizing.demand_input_tpm * billed_minutes,
            sizing.demand_output_tpm * billed_minutes,
            prices.input_per_million,
            prices.output_per_million,
        )
        total = sizing.demand_input_tpm + sizing.demand_output_tpm
        input_share = sizing.demand_input_tpm / total if total > 0 else 0.5
        full_tokens = sizing.capacity_tpm * billed_minutes
        at_full = token_cost(full_tokens * input_share, full_tokens * (1 - input_share), prices.input_per_million, prices.output_per_million)

    break_even = fixed / at_full if fixed is not None and at_full else None
    cheaper = None
    if fixed is not None and variable is not None:
        cheaper = "ptu" if fixed < variable else "pay_per_token"
    return CostResult(
        minutes=math.ceil(minutes),
        ptu=sizing.ptu,
        ptu_cost=fixed,
        token_cost=variable,
        token_cost_at_full_utilization=at_full,
        break_even_utilization=break_even,
        cheaper=cheaper,
    )

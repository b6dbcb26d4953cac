"""``ptu-verify plan``: how many PTUs a demand needs, and what they cost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..i18n import _
from ..sizing import CostResult, Demand, Prices, SizingResult, estimate_cost, size_ptus
from .common import catalog_option, echo_json, format_number, format_percent, lang_option, price_options, prices_from_options, resolve_model

__all__ = ["plan_command", "explain_sizing", "explain_cost"]

_LIMIT_NAMES = {"tpm": "TPM", "input_tpm": "input TPM", "output_tpm": "output TPM", "qpm": "QPM"}


@click.command(
    "plan",
    help=_(
        "Recommend a PTU count for a demand, the way the Bailian console's calculator does, and explain each step.\n\n"
        "PTUs = max(ceil(TPM × (1 + headroom) / TPM per PTU), ceil(QPM × (1 + headroom) / QPM per PTU)), "
        "rounded up to a multiple of the model's minimum purchase unit.\n\n"
        "Examples:\n\n"
        "  ptu-verify plan --model qwen-plus-2025-04-28 --tpm 300000\n\n"
        "  ptu-verify plan --model qwen-turbo --tpm 100000 --qpm 30 --headroom 0.2 --json\n\n"
        "  ptu-verify plan --model qwen-plus --input-tpm 240000 --output-tpm 60000 --ptu-price 20 --input-price 0.8 --output-price 2"
    ),
)
@click.option("--model", "-m", required=True, metavar="MODEL", help=_("Model version, family (qwen-plus) or deployment code (qwen-plus-d824b8ad)."))
@click.option("--tpm", type=float, default=None, metavar="TOKENS", help=_("Demand in tokens per minute (input + output)."))
@click.option("--input-tpm", type=float, default=None, metavar="TOKENS", help=_("Input tokens per minute (with --output-tpm, instead of --tpm)."))
@click.option("--output-tpm", type=float, default=None, metavar="TOKENS", help=_("Output tokens per minute (with --input-tpm)."))
@click.option("--qpm", type=float, default=None, metavar="REQUESTS", help=_("Demand in requests per minute."))
@click.option(
    "--headroom",
    type=float,
    default=0.0,
    show_default=True,
    metavar="FRACTION",
    help=_("Extra capacity on top of the demand, as a fraction (0.2 = 20 %). 0 matches the console."),
)
@click.option(
    "--rounding",
    type=click.Choice(["multiple", "minimum"]),
    default="multiple",
    show_default=True,
    help=_("multiple: round up to a multiple of the minimum purchase unit; minimum: only raise to at least that unit."),
)
@price_options
@catalog_option
@click.option("--json", "as_json", is_flag=True, help=_("Print the result as JSON."))
@lang_option
def plan_command(
    model: str,
    tpm: float | None,
    input_tpm: float | None,
    output_tpm: float | None,
    qpm: float | None,
    headroom: float,
    rounding: str,
    ptu_price: float | None,
    ptu_price_per_minute: float | None,
    input_price: float | None,
    output_price: float | None,
    catalog_path: Path | None,
    as_json: bool,
) -> None:
    _catalog, resolution = resolve_model(model, catalog_path)
    demand = Demand(tpm=tpm, input_tpm=input_tpm, output_tpm=output_tpm, qpm=qpm)
    sizing = size_ptus(resolution.spec, demand, headroom=headroom, rounding="minimum" if rounding == "minimum" else "multiple")
    prices = prices_from_options(ptu_price, ptu_price_per_minute, input_price, output_price)
    cost = estimate_cost(sizing, prices) if prices.any_given else None

    if as_json:
        payload: dict[str, Any] = {
            "model": sizing.model,
            "ptu": sizing.ptu,
            "binding_limit": sizing.binding_limit,
            "raw_ptu": sizing.raw_ptu,
            "capacity_tpm": sizing.capacity_tpm,
            "capacity_qpm": sizing.capacity_qpm,
            "utilization": sizing.utilization,
            "resolved_from": {"name": resolution.requested, "matched_by": resolution.matched_by},
            "steps": sizing.as_dict(),
            "cost": cost.as_dict() if cost else None,
        }
        echo_json(payload)
        return

    if resolution.matched_by != "version":
        click.echo(_("Model '{name}' resolved to {version}.").format(name=resolution.requested, version=sizing.model))
    click.echo(explain_sizing(sizing))
    click.echo("")
    click.echo(explain_cost(cost, prices))
    click.echo("")
    click.echo(_("The recommendation is a reference. Load-test the deployment after it is created: ptu-verify run."))


def explain_sizing(sizing: SizingResult) -> str:
    """Return the step-by-step explanation of a PTU recommendation."""
    lines = [_("PTU plan for {model}").format(model=sizing.model)]

    demand = _("{tpm} TPM").format(tpm=format_number(sizing.demand_tpm))
    if sizing.demand_input_tpm is not None:
        demand += " " + _("(input {input}, output {output})").format(
            input=format_number(sizing.demand_input_tpm), output=format_number(sizing.demand_output_tpm)
        )
    if sizing.demand_qpm is not None:
        demand += ", " + _("{qpm} QPM").format(qpm=format_number(sizing.demand_qpm))
    else:
        demand += ", " + _("QPM not given")
    lines.append(_("  1. Demand:           {demand}; headroom {headroom}").format(demand=demand, headroom=format_percent(sizing.headroom, 0)))

    per_ptu = []
    if sizing.tpm_per_ptu is not None:
        per_ptu.append(_("{value} TPM").format(value=format_number(sizing.tpm_per_ptu)))
    if sizing.input_tpm_per_ptu is not None:
        per_ptu.append(_("{value} input TPM").format(value=format_number(sizing.input_tpm_per_ptu)))
        per_ptu.append(_("{value} output TPM").format(value=format_number(sizing.output_tpm_per_ptu)))
    per_ptu.append(_("{value} QPM").format(value=format_number(sizing.qpm_per_ptu)))
    lines.append(
        _("  2. Per PTU:          {figures}; minimum purchase unit {unit} PTU").format(figures=", ".join(per_ptu), unit=sizing.min_purchase_ptu)
    )

    factor = 1.0 + sizing.headroom
    for index, (name, quotient) in enumerate(sizing.quotients.items()):
        label = _LIMIT_NAMES[name]
        demand_value = {
            "tpm": sizing.demand_tpm,
            "input_tpm": sizing.demand_input_tpm,
            "output_tpm": sizing.demand_output_tpm,
            "qpm": sizing.demand_qpm,
        }[name]
        per_unit = {
            "tpm": sizing.tpm_per_ptu,
            "input_tpm": sizing.input_tpm_per_ptu,
            "output_tpm": sizing.output_tpm_per_ptu,
            "qpm": sizing.qpm_per_ptu,
        }[name]
        prefix = _("  3. Raw quotients:    ") if index == 0 else "                      "
        lines.append(
            prefix
            + _("{label}: {demand} × {factor:.2f} / {per_unit} = {quotient:.2f}").format(
                label=label, demand=format_number(demand_value), factor=factor, per_unit=format_number(per_unit), quotient=quotient
            )
        )
    lines.append(
        _("  4. Binding limit:    {limit} → {raw} PTU (rounded up)").format(limit=_LIMIT_NAMES[sizing.binding_limit], raw=sizing.raw_ptu)
    )
    if sizing.rounding == "multiple":
        rounding = _("{raw} rounded up to a multiple of {unit} → {ptu} PTU").format(raw=sizing.raw_ptu, unit=sizing.min_purchase_ptu, ptu=sizing.ptu)
    else:
        rounding = _("at least the minimum purchase unit {unit} → {ptu} PTU").format(unit=sizing.min_purchase_ptu, ptu=sizing.ptu)
    lines.append(_("  5. Rounding:         {rounding}").format(rounding=rounding))
    lines.append(_("  Recommended:         {ptu} PTU").format(ptu=sizing.ptu))

    capacity = _("{tpm} TPM, {qpm} QPM").format(tpm=format_number(sizing.capacity_tpm), qpm=format_number(sizing.capacity_qpm))
    if sizing.capacity_input_tpm is not None:
        capacity += _(" (input {input}, output {output})").format(
            input=format_number(sizing.capacity_input_tpm), output=format_number(sizing.capacity_output_tpm)
        )
    lines.append(_("  Capacity:            {capacity}").format(capacity=capacity))
    utilization = ", ".join(f"{_LIMIT_NAMES[name]} {format_percent(value)}" for name, value in sizing.utilization_by_limit.items())
    lines.append(_("  Utilization at this demand: {utilization}").format(utilization=utilization))
    return "\n".join(lines)


def explain_cost(cost: CostResult | None, prices: Prices) -> str:
    """Return the cost comparison, or a line saying that no prices were given."""
    if cost is None:
        return _("Cost: prices were not given. Add --ptu-price (or --ptu-price-per-minute) and --input-price/--output-price to compare.")
    days = cost.minutes / 1440
    lines = [_("Cost over {days:.0f} days ({minutes} billed minutes, {ptu} PTU):").format(days=days, minutes=format_number(cost.minutes), ptu=cost.ptu)]
    if cost.ptu_cost is not None:
        lines.append(_("  PTU:            minutes × PTUs × price per PTU-minute = {cost}").format(cost=format_number(cost.ptu_cost, 2)))
    else:
        lines.append(_("  PTU:            no PTU price given (--ptu-price)"))
    if cost.token_cost is not None:
        lines.append(_("  Pay-per-token:  input tokens × input price + output tokens × output price = {cost}").format(cost=format_number(cost.token_cost, 2)))
    else:
        lines.append(_("  Pay-per-token:  no token prices given (--input-price and --output-price)"))
    if cost.break_even_utilization is not None and cost.break_even_utilization > 1:
        lines.append(
            _("  Break-even:     none; PTUs cost more than pay-per-token even at 100 % utilization ({share} would be needed)").format(
                share=format_percent(cost.break_even_utilization)
            )
        )
    elif cost.break_even_utilization is not None:
        lines.append(
            _("  Break-even:     PTUs are cheaper above {share} utilization of the deployed TPM").format(share=format_percent(cost.break_even_utilization))
        )
    if cost.cheaper == "ptu":
        lines.append(_("  At this demand PTUs are cheaper."))
    elif cost.cheaper == "pay_per_token":
        lines.append(_("  At this demand pay-per-token is cheaper."))
    return "\n".join(lines)

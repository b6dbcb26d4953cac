"""Options and helpers shared by subcommands."""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..catalog import Catalog, Resolution, load_catalog
from ..i18n import _, set_language
from ..sizing import Prices

__all__ = [
    "lang_option",
    "catalog_option",
    "price_options",
    "verdict_options",
    "prices_from_options",
    "resolve_model",
    "echo_json",
    "format_number",
    "format_percent",
    "render_table",
]

F = TypeVar("F", bound=Callable[..., Any])


def _apply_language(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        set_language(value)
    return value


def lang_option(function: F) -> F:
    """Add ``--lang zh|en``; the language is also read from PTU_VERIFY_LANG or the locale."""
    return click.option(
        "--lang",
        type=click.Choice(["zh", "en"]),
        default=None,
        expose_value=False,
        is_eager=True,
        callback=_apply_language,
        help=_("Language of messages and reports: zh (简体中文) or en. Default: from PTU_VERIFY_LANG or the locale."),
    )(function)


def catalog_option(function: F) -> F:
    """Add ``--catalog FILE``."""
    return click.option(
        "--catalog",
        "catalog_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        metavar="FILE",
        help=_("TOML file that adds models or overrides PTU figures of the built-in catalog."),
    )(function)


def price_options(function: F) -> F:
    """Add the price options shared by plan, analyze and run."""
    options = [
        click.option("--ptu-price", type=float, default=None, metavar="PRICE", help=_("Price of one PTU for one hour.")),
        click.option(
            "--ptu-price-per-minute", type=float, default=None, metavar="PRICE", help=_("Price of one PTU for one minute (instead of --ptu-price).")
        ),
        click.option("--input-price", type=float, default=None, metavar="PRICE", help=_("Pay-per-token price per million input tokens.")),
        click.option("--output-price", type=float, default=None, metavar="PRICE", help=_("Pay-per-token price per million output tokens.")),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(_("must be a finite number, got {value}.").format(value=value))
    return value


def verdict_options(function: F) -> F:
    """Add ``--policy``, ``--target-tpm``, ``--target-qpm`` and ``--headroom`` (analyze and run)."""
    options = [
        click.option(
            "--policy",
            "policy_path",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            metavar="FILE",
            help=_("YAML or TOML file that changes verdict thresholds (see docs/analysis.md)."),
        ),
        click.option("--target-tpm", type=float, default=None, callback=_finite, metavar="TOKENS", help=_("Demand to size PTUs for, in tokens per minute.")),
        click.option("--target-qpm", type=float, default=None, callback=_finite, metavar="REQUESTS", help=_("Demand to size PTUs for, in requests per minute.")),
        click.option(
            "--headroom",
            type=float,
            default=0.0,
            show_default=True,
            callback=_finite,
            metavar="FRACTION",
            help=_("Extra capacity on top of the target, as a fraction (0.2 = 20 %)."),
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def prices_from_options(
    ptu_price: float | None, ptu_price_per_minute: float | None, input_price: float | None, output_price: float | None
) -> Prices:
    """Build and validate Prices from the price options."""
    prices = Prices(
        ptu_per_hour=ptu_price,
        ptu_per_minute=ptu_price_per_minute,
        input_per_million=input_price,
        output_per_million=output_price,
    )
    prices.validate()
    return prices


def resolve_model(name: str, catalog_path: Path | None) -> tuple[Catalog, Resolution]:
    """Load the catalog and resolve a model name; InputError on unknown or ambiguous names."""
    catalog = load_catalog(catalog_path)
    return catalog, catalog.resolve(name)


def echo_json(value: Any) -> None:
    """Print ``value`` as indented JSON to stdout."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False))


def format_number(value: float | None, digits: int = 0) -> str:
    """Format a number with thousands separators, or a dash for None."""
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def format_percent(value: float | None, digits: int = 1) -> str:
    """Format a fraction as a percentage, or a dash for None."""
    if value is None:
        return "-"
    return f"{value * 100:.{digits}f} %"


def _display_width(text: str) -> int:
    # East Asian wide characters take two terminal columns.
    return sum(2 if unicodedata.east_asian_width(char) in ("W", "F") else 1 for char in text)


def render_table(headers: list[str], rows: list[list[str]]) -> str:
    """Render a plain-text table with columns padded to their widest cell."""
    widths = [max(_display_width(row[index]) for row in [headers, *rows]) for index in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "  ".join(cell + " " * (width - _display_width(cell)) for cell, width in zip(cells, widths)).rstrip()

    separator = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), separator, *(line(row) for row in rows)])

"""``ptu-verify analyze``: the verdict, reports and recommendation for a finished run directory."""

from __future__ import annotations

from pathlib import Path

import click

from ..analysis import AnalysisOptions, analyze_run
from ..i18n import _, get_language
from ..report import write_reports
from ..report.console import format_console_summary
from .common import catalog_option, lang_option, price_options, prices_from_options, verdict_options

__all__ = ["analyze_command"]


@click.command(
    "analyze",
    help=_(
        "Analyse a run directory: per-stage TPM, QPM, TTFT, speed and 429 share against the purchased PTU capacity, "
        "a PASS / FAIL / INCONCLUSIVE verdict and a PTU recommendation. Writes verdict.html, summary.json and junit.xml "
        "into RUN_DIR.\n\nExit codes: 0 pass, 1 fail, 3 inconclusive, 2 bad input.\n\n"
        "Examples:\n\n"
        "  ptu-verify analyze runs/2026-01-01T0000\n\n"
        "  ptu-verify analyze runs/latest --target-tpm 300000 --headroom 0.2 --ptu-price 20 --lang zh"
    ),
)
@click.argument("run_dir", type=click.Path(path_type=Path), metavar="RUN_DIR")
@click.option("--model", "-m", default=None, metavar="MODEL", help=_("Model version, family or deployment code. Default: the model in run.json."))
@click.option("--ptu", type=int, default=None, metavar="N", help=_("Deployed PTU count. Default: the PTU count in run.json."))
@verdict_options
@click.option("--minute-windows", is_flag=True, help=_("Add per-minute totals aligned to wall-clock minutes, to compare with the Bailian console."))
@price_options
@catalog_option
@lang_option
def analyze_command(
    run_dir: Path,
    model: str | None,
    ptu: int | None,
    policy_path: Path | None,
    target_tpm: float | None,
    target_qpm: float | None,
    headroom: float,
    minute_windows: bool,
    ptu_price: float | None,
    ptu_price_per_minute: float | None,
    input_price: float | None,
    output_price: float | None,
    catalog_path: Path | None,
) -> int:
    options = AnalysisOptions(
        model=model,
        ptu=ptu,
        catalog_path=catalog_path,
        policy_path=policy_path,
        target_tpm=target_tpm,
        target_qpm=target_qpm,
        headroom=headroom,
        prices=prices_from_options(ptu_price, ptu_price_per_minute, input_price, output_price),
        minute_windows=minute_windows,
    )
    summary = analyze_run(run_dir, options)
    paths = write_reports(summary, run_dir, lang=get_language())
    click.echo(format_console_summary(summary))
    click.echo("")
    click.echo(_("Report: {path}").format(path=paths["verdict.html"]))
    return summary.exit_code

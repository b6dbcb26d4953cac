"""``ptu-verify compare`` (regression check between two runs) and ``ptu-verify history`` (trend over runs)."""

from __future__ import annotations

from pathlib import Path

import click

from ..i18n import _
from ..run.compare import compare_runs, load_compare_settings, write_compare_json
from ..run.history import collect_history, write_history_json
from .common import lang_option

__all__ = ["compare_command", "history_command"]

_RUN_DIR = click.Path(exists=False, file_okay=False, path_type=Path)


@click.command(
    "compare",
    help=_(
        "Compare two runs of the same workload and plan, stage by stage: achieved TPM, TTFT p50/p95, generation "
        "speed p50 and 429 share. A difference is a regression only when its bootstrap confidence interval lies "
        "entirely on the worse side and the change reaches the metric's minimum (set them in the [compare] table of "
        "--policy). Writes compare.html and compare.json.\n\n"
        "Exit code: 0 no regression, 1 regression, 2 the runs cannot be compared, 3 too few data to judge any metric.\n\n"
        "Examples:\n\n"
        "\b\n"
        "  ptu-verify compare reports/nightly-2026-12-01 reports/nightly-2026-12-02\n"
        "  ptu-verify compare baseline/ current/ --policy compare.toml --out compare-out/"
    ),
)
@click.argument("baseline_dir", type=_RUN_DIR, metavar="BASELINE_DIR")
@click.argument("current_dir", type=_RUN_DIR, metavar="CURRENT_DIR")
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help=_("TOML or YAML file whose [compare] table sets confidence, resamples, seed, block_s, min_samples and min_change per metric."),
)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR", help=_("Where to write compare.html and compare.json. Default: CURRENT_DIR."))
@lang_option
def compare_command(baseline_dir: Path, current_dir: Path, policy_path: Path | None, out_dir: Path | None) -> int:
    from ..run.render import format_compare_table, write_compare_html

    settings = load_compare_settings(policy_path)
    result = compare_runs(baseline_dir, current_dir, settings)
    target = out_dir or current_dir
    json_path = write_compare_json(result, target)
    html_path = write_compare_html(result, target)

    click.echo(format_compare_table(result))
    click.echo(_("Report: {html} (data: {json})").format(html=html_path, json=json_path))
    return result.exit_code


@click.command(
    "history",
    help=_(
        "Show the trend of the key figures over many analysed runs: verdict, sustained TPM with its confidence "
        "interval, and TTFT, generation speed and 429 share at the highest stage within capacity. A directory "
        "without summary.json is searched one level down, so a whole reports/ folder can be given. Prints a table "
        "and writes history.html and history.json.\n\n"
        "Examples:\n\n"
        "\b\n"
        "  ptu-verify history reports/\n"
        "  ptu-verify history reports/nightly-* --out trend/"
    ),
)
@click.argument("run_dirs", nargs=-1, required=True, type=_RUN_DIR, metavar="DIR…")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True, metavar="DIR", help=_("Where to write history.html and history.json."))
@lang_option
def history_command(run_dirs: tuple[Path, ...], out_dir: Path) -> int:
    from ..run.render import format_history_table, write_history_html

    history = collect_history(list(run_dirs))
    json_path = write_history_json(history, out_dir)
    html_path = write_history_html(history, out_dir)

    click.echo(format_history_table(history))
    click.echo(_("Report: {html} (data: {json})").format(html=html_path, json=json_path))
    return 0

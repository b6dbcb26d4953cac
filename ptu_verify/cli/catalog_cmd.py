"""``ptu-verify catalog``: list the PTU catalog."""

from __future__ import annotations

from pathlib import Path

import click

from ..catalog import load_catalog
from ..i18n import _
from .common import catalog_option, echo_json, format_number, lang_option, render_table

__all__ = ["catalog_command"]


@click.command(
    "catalog",
    help=_(
        "List the PTU catalog: TPM and QPM per PTU and the minimum purchase unit of each model version.\n\n"
        "Examples:\n\n  ptu-verify catalog\n\n  ptu-verify catalog --catalog my-models.toml --json"
    ),
)
@catalog_option
@click.option("--json", "as_json", is_flag=True, help=_("Print the catalog as JSON."))
@lang_option
def catalog_command(catalog_path: Path | None, as_json: bool) -> None:
    catalog = load_catalog(catalog_path)
    specs = [catalog.models[version] for version in sorted(catalog.models)]
    if as_json:
        echo_json({"models": [spec.as_dict() for spec in specs]})
        return

    headers = [_("model version"), _("family"), _("modality"), _("TPM / PTU"), _("QPM / PTU"), _("min. purchase PTU"), _("source")]
    rows = []
    for spec in specs:
        if spec.splits_tpm:
            tpm = _("in {input} + out {output}").format(
                input=format_number(spec.input_tpm_per_ptu), output=format_number(spec.output_tpm_per_ptu)
            )
            if spec.tpm_per_ptu is not None:
                tpm += _(", total {total}").format(total=format_number(spec.tpm_per_ptu))
        else:
            tpm = format_number(spec.tpm_per_ptu)
        modality = _("text") if spec.modality == "text" else _("vision")
        rows.append([spec.version, spec.family, modality, tpm, format_number(spec.qpm_per_ptu), str(spec.min_purchase_ptu), spec.source])
    click.echo(render_table(headers, rows))

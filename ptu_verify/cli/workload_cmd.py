"""``ptu-verify workload``: list workload profiles and show the load one makes."""

from __future__ import annotations

from typing import Any

import click

from ..i18n import _
from ..workloads import builtin_profile_names, load_workload
from ..workloads.profile import load_profile
from ..workloads.stats import TokenStats, WorkloadStats
from .common import echo_json, format_number, format_percent, lang_option, render_table

__all__ = ["workload_group"]


@click.group("workload", help=_("Inspect workload profiles: the requests a load test sends."))
@lang_option
def workload_group() -> None:
    pass


@workload_group.command(
    "list",
    help=_("List the built-in profiles.\n\nExample:\n\n  ptu-verify workload list"),
)
@lang_option
def list_command() -> None:
    rows = []
    for name in builtin_profile_names():
        profile = load_profile(name)
        rows.append([name, profile.description])
    click.echo(render_table([_("profile"), _("description")], rows))


@workload_group.command(
    "show",
    help=_(
        "Generate requests from a workload, count their tokens with the Qwen tokenizer and show the load they make: "
        "input and output (max_tokens) tokens with mean and percentiles, per variant for mixes, and the QPM that "
        "matches a TPM target (or the reverse).\n\n"
        "NAME is a built-in profile (see 'workload list'), a .yaml profile, a .jsonl dataset "
        "(dataset:PATH, or dataset-shuffled:PATH) or a trace (trace:PATH, Bailian JSONL or Azure CSV).\n\n"
        "Examples:\n\n  ptu-verify workload show mix --tpm 300000\n\n  ptu-verify workload show my-profile.yaml --sample 2000 --json\n\n"
        "  ptu-verify workload show trace:AzureLLMInferenceTrace_conv.csv --qpm 60"
    ),
)
@click.argument("name", metavar="NAME|PATH")
@click.option("--sample", type=click.IntRange(1, 100_000), default=1000, show_default=True, metavar="N", help=_("Number of requests to generate and tokenize."))
@click.option("--tpm", type=click.FloatRange(0, min_open=True), default=None, metavar="TOKENS", help=_("Target tokens per minute: show the QPM that makes it."))
@click.option("--qpm", type=click.FloatRange(0, min_open=True), default=None, metavar="REQUESTS", help=_("Target requests per minute: show the TPM it makes."))
@click.option("--seed", type=int, default=1, show_default=True, help=_("Random seed; the same seed generates the same requests."))
@click.option("--json", "as_json", is_flag=True, help=_("Print the statistics as JSON."))
@lang_option
def show_command(name: str, sample: int, tpm: float | None, qpm: float | None, seed: int, as_json: bool) -> None:
    workload = load_workload(name, seed=seed)
    stats: WorkloadStats = workload.describe(sample)
    if as_json:
        echo_json(_stats_json(stats, tpm=tpm, qpm=qpm, seed=seed))
        return
    click.echo(_render(stats, tpm=tpm, qpm=qpm, seed=seed))


def _stats_json(stats: WorkloadStats, *, tpm: float | None, qpm: float | None, seed: int) -> dict[str, Any]:
    data = stats.as_dict()
    data["seed"] = seed
    if tpm is not None:
        data["target_tpm"] = tpm
        data["qpm_for_target_tpm"] = stats.qpm_for_tpm(tpm)
    if qpm is not None:
        data["target_qpm"] = qpm
        data["tpm_for_target_qpm"] = stats.tpm_for_qpm(qpm)
    return data


def _stat_cells(values: TokenStats) -> list[str]:
    return [format_number(values.mean), format_number(values.p50), format_number(values.p90), format_number(values.p99)]


def _render(stats: WorkloadStats, *, tpm: float | None, qpm: float | None, seed: int) -> str:
    lines = [
        _("Workload {name}: {sample} requests generated with seed {seed} and counted with the Qwen tokenizer ({rate} requests/s generated).").format(
            name=stats.workload, sample=format_number(stats.sample), seed=seed, rate=format_number(stats.generation_requests_per_s)
        ),
        "",
    ]
    headers = [
        _("variant"),
        _("requests"),
        _("share"),
        _("input mean"),
        _("p50"),
        _("p90"),
        _("p99"),
        _("max_tokens mean"),
        _("p50"),
        _("p90"),
        _("p99"),
        _("tokens/request"),
    ]
    qpm_for_tpm = stats.qpm_for_tpm(tpm) if tpm is not None else None
    if qpm_for_tpm is not None:
        headers.append(_("QPM at target TPM"))
    rows = []
    entries: list[tuple[str, int, float, TokenStats, TokenStats, float]] = [
        (_("(all)"), stats.sample, 1.0, stats.input_tokens, stats.output_tokens, stats.tokens_per_request)
    ]
    if len(stats.variants) > 1:
        entries += [(v.variant, v.requests, v.share, v.input_tokens, v.output_tokens, v.tokens_per_request) for v in stats.variants]
    for label, requests, share, inputs, outputs, per_request in entries:
        row = [label, format_number(requests), format_percent(share), *_stat_cells(inputs), *_stat_cells(outputs), format_number(per_request)]
        if qpm_for_tpm is not None:
            row.append(format_number(qpm_for_tpm * share, 1))
        rows.append(row)
    lines.append(render_table(headers, rows))
    lines.append("")

    if stats.off_target_requests:
        lines.append(
            _("Warning: {count} requests missed their target input tokens by more than 1 (largest error {error} tokens).").format(
                count=stats.off_target_requests, error=stats.max_target_error_tokens
            )
        )
    if tpm is not None and qpm_for_tpm is not None:
        lines.append(
            _("For {tpm} TPM: {qpm} QPM ({rps} requests/s).").format(
                tpm=format_number(tpm), qpm=format_number(qpm_for_tpm, 1), rps=format_number(qpm_for_tpm / 60, 2)
            )
        )
    if qpm is not None:
        lines.append(_("For {qpm} QPM: {tpm} TPM.").format(qpm=format_number(qpm, 1), tpm=format_number(stats.tpm_for_qpm(qpm))))
    lines.append(
        _("Tokens per request counts max_tokens in full, an upper bound: replies that stop early use fewer output tokens.")
    )
    return "\n".join(lines)

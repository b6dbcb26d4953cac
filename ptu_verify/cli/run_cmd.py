"""``ptu-verify run``: load-test a deployment (or the built-in simulator) and print the verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

from ..errors import InputError
from ..i18n import _
from ..run.orchestrate import DEFAULT_API_KEY_ENV, RunOptions, run_load_test
from .common import catalog_option, lang_option, price_options, prices_from_options, resolve_model, verdict_options

__all__ = ["run_command", "verdict_line"]

_PLANS = ["step", "acceptance", "search", "rate", "users", "trace"]


def _parse_stages(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    values = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise InputError(_("--stages {value}: give comma-separated fractions of capacity, e.g. 0.5,0.75,1.0,1.25.").format(value=text)) from None
        if value <= 0:
            raise InputError(_("--stages {value}: every fraction must be more than 0.").format(value=text))
        values.append(value)
    return tuple(values)


def _parse_settings(values: tuple[str, ...]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for value in values:
        key, separator, text = value.partition("=")
        if not separator or not key.strip():
            raise InputError(_("--simulator {value}: give KEY=VALUE, e.g. --simulator window_s=10.").format(value=value))
        settings[key.strip()] = yaml.safe_load(text)
    return settings


def verdict_line(verdict: str | None, *, simulated: bool, partial: bool) -> str:
    """Return the last console line, e.g. ``Verdict: PASS (SIMULATED)``, in the active language."""
    # The words are the report's, so this line matches the summary above it; JSON keeps "pass" etc.
    words = {"pass": _("PASS"), "fail": _("FAIL"), "inconclusive": _("INCONCLUSIVE")}
    text = words.get(verdict or "", (verdict or "-").upper())
    if simulated:
        text += " (" + _("SIMULATED") + ")"
    if partial:
        # The stop reason (interrupted, max-duration, lost worker) is in the report's reasons.
        text += " (" + _("PARTIAL") + ")"
    return _("Verdict: {verdict}").format(verdict=text)


@click.command(
    "run",
    help=_(
        "Load-test a PTU deployment and print the verdict: does it deliver the purchased capacity, and how many "
        "PTUs does this traffic need?\n\n"
        "Without --base-url the built-in simulator of MODEL with N PTU serves the run (no network, no API key; "
        "the report is marked SIMULATED) and short demo stages are used. With --base-url the run goes to a real "
        "deployment, the API key is read from DASHSCOPE_API_KEY (or --api-key-env) and the full plan is used.\n\n"
        "Locust runs headless as a subprocess on the installed loadtest/locustfile.py; arguments after -- go to it "
        "unchanged. Ctrl-C stops the load, analyses what was recorded and marks the report partial.\n\n"
        "Exit code: 0 pass, 1 fail, 2 usage or input error (also a failed preflight), 3 inconclusive, 4 runtime error.\n\n"
        "Examples:\n\n"
        "\b\n"
        "  ptu-verify run --model qwen-plus-2025-04-28 --ptu 8\n"
        "  ptu-verify run --model qwen-plus --ptu 8 --deployment-code qwen-plus-d824b8ad \\\n"
        "      --base-url https://dashscope.aliyuncs.com/compatible-mode/v1 --plan acceptance\n"
        "  ptu-verify run --model qwen-plus --ptu 8 --plan rate -- --offered-tpm 150000"
    ),
)
@click.option("--model", "-m", required=True, metavar="MODEL", help=_("Model version, family (qwen-plus) or deployment code (qwen-plus-d824b8ad)."))
@click.option("--ptu", type=click.IntRange(min=1), required=True, metavar="N", help=_("PTUs purchased for the deployment."))
@click.option("--deployment-code", default=None, metavar="CODE", help=_("Deployment code sent as the model name. Required with --base-url."))
@click.option(
    "--base-url",
    default=None,
    metavar="URL",
    help=_("API base URL of the deployment, e.g. https://dashscope.aliyuncs.com/compatible-mode/v1. Default: the built-in simulator."),
)
@click.option("--api", type=click.Choice(["openai", "dashscope"]), default="openai", show_default=True, help=_("API of --base-url: openai (…/compatible-mode/v1) or dashscope (…/api/v1)."))
@click.option("--transport", type=click.Choice(["fast", "sdk"]), default="fast", show_default=True, help=_("fast: our streaming client; sdk: the official openai or dashscope client."))
@click.option("--workload", default=None, metavar="NAME|PATH", help=_("Built-in workload name or workload file. Default: the Locust side's default (smoke)."))
@click.option(
    "--plan",
    type=click.Choice(_PLANS),
    default=None,
    help=_("Load plan. Default: step (a short demo on the simulator). acceptance: 0.5 to 1.1 of capacity in under 10 minutes, for CI."),
)
@click.option("--stages", default=None, metavar="F1,F2,…", help=_("Stage loads as fractions of capacity (step and acceptance plans)."))
@click.option("--stage-duration", type=click.FloatRange(min=1), default=None, metavar="SECONDS", help=_("Length of one stage including its warm-up, in seconds."))
@click.option("--warmup", type=click.FloatRange(min=0), default=None, metavar="SECONDS", help=_("Warm-up part of each stage, excluded from statistics, in seconds."))
@click.option("--processes", type=click.IntRange(min=1), default=1, show_default=True, metavar="K", help=_("Locust worker processes on this machine."))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR", help=_("Run directory. Default: reports/<UTC timestamp>-<deployment code>/."))
@verdict_options
@price_options
@catalog_option
@click.option("--seed", type=int, default=None, metavar="S", help=_("Random seed of the workload, the arrivals and the simulator."))
@click.option("--max-duration", type=click.FloatRange(min=1), default=None, metavar="SECONDS", help=_("Stop the load cleanly after this many seconds."))
@click.option("--max-total-tokens", type=click.IntRange(min=1), default=None, metavar="N", help=_("Stop the load cleanly once the recorded requests used this many tokens."))
@click.option(
    "--api-key-env",
    default=DEFAULT_API_KEY_ENV,
    show_default=True,
    metavar="NAME",
    help=_("Environment variable that contains the API key (used with --base-url). The key is never a flag and never printed."),
)
@click.option(
    "--simulator",
    "simulator_settings",
    multiple=True,
    metavar="KEY=VALUE",
    help=_("Setting of the built-in simulator, e.g. window_s=10 or capacity_factor=0.7 (see ptu-verify simulate); repeatable."),
)
@click.argument("locust_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- LOCUST OPTIONS]")
@lang_option
def run_command(
    model: str,
    ptu: int,
    deployment_code: str | None,
    base_url: str | None,
    api: str,
    transport: str,
    workload: str | None,
    plan: str | None,
    stages: str | None,
    stage_duration: float | None,
    warmup: float | None,
    processes: int,
    out_dir: Path | None,
    policy_path: Path | None,
    target_tpm: float | None,
    target_qpm: float | None,
    headroom: float,
    ptu_price: float | None,
    ptu_price_per_minute: float | None,
    input_price: float | None,
    output_price: float | None,
    catalog_path: Path | None,
    seed: int | None,
    max_duration: float | None,
    max_total_tokens: int | None,
    api_key_env: str,
    simulator_settings: tuple[str, ...],
    locust_args: tuple[str, ...],
) -> int:
    _catalog, resolution = resolve_model(model, catalog_path)
    options = RunOptions(
        spec=resolution.spec,
        ptu=ptu,
        deployment_code=deployment_code or resolution.deployment_code,
        base_url=base_url,
        api="dashscope" if api == "dashscope" else "openai",
        transport="sdk" if transport == "sdk" else "fast",
        workload=workload,
        plan=plan,
        stages=_parse_stages(stages),
        stage_duration_s=stage_duration,
        warmup_s=warmup,
        processes=processes,
        out_dir=out_dir,
        policy_path=policy_path,
        catalog_path=catalog_path,
        target_tpm=target_tpm,
        target_qpm=target_qpm,
        headroom=headroom,
        prices=prices_from_options(ptu_price, ptu_price_per_minute, input_price, output_price),
        seed=seed,
        max_duration_s=max_duration,
        max_total_tokens=max_total_tokens,
        api_key_env=api_key_env,
        extra_locust_args=locust_args,
        simulator_settings=_parse_settings(simulator_settings),
    )
    outcome = run_load_test(options, echo=click.echo)
    from ..report.console import format_console_summary

    click.echo("")
    click.echo(format_console_summary(outcome.summary))
    click.echo(verdict_line(outcome.verdict, simulated=outcome.simulated, partial=outcome.partial))
    click.echo(_("Report: {path}").format(path=outcome.report_path))
    return outcome.exit_code

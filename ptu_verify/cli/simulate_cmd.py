"""``ptu-verify simulate``: serve a simulated PTU deployment until interrupted."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from ..errors import InputError
from ..i18n import _
from .common import catalog_option, lang_option

__all__ = ["simulate_command"]

logger = logging.getLogger(__name__)

_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _parse_faults(values: tuple[str, ...]) -> dict[str, float]:
    faults: dict[str, float] = {}
    for value in values:
        name, separator, probability = value.partition("=")
        try:
            faults[name.strip()] = float(probability) if separator else 1.0
        except ValueError:
            raise InputError(
                _("--fault {value}: the probability must be a number between 0 and 1, e.g. --fault stall=0.05.").format(value=value)
            ) from None
    return faults


@click.command(
    "simulate",
    help=_(
        "Serve a simulated PTU deployment of MODEL with both the OpenAI-compatible and the "
        "DashScope native API, throttling at the PTU capacity. Prints 'Listening on http://HOST:PORT' and "
        "serves until interrupted (Ctrl-C or SIGTERM)."
    ),
)
@click.option("--model", required=False, default=None, metavar="MODEL", help=_("Model version, family or deployment code, resolved through the PTU catalog."))
@click.option("--ptu", type=int, default=None, metavar="N", help=_("Number of PTUs of the simulated deployment."))
@click.option("--deployment-code", default=None, metavar="CODE", help=_("Deployment code clients pass as the model name. Default: derived from the family."))
@click.option("--host", default=None, metavar="HOST", help=_("Address to listen on. Default: 127.0.0.1."))
@click.option("--port", type=click.IntRange(0, 65535), default=None, metavar="PORT", help=_("Port to listen on; 0 picks a free port. Default: 0."))
@click.option("--seed", type=int, default=None, metavar="S", help=_("Seed for output lengths, text, jitter and faults."))
@click.option("--api-key", default=None, metavar="KEY", help=_("Require this API key (Bearer token); wrong keys get 401. Default: any key."))
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="FILE", help=_("YAML or TOML file with simulator settings; flags override it."))
@click.option("--capacity-factor", type=float, default=None, metavar="F", help=_("Throttle at F × the nominal PTU capacity. Default: 1."))
@click.option("--ttft-factor", type=float, default=None, metavar="X", help=_("Multiply time to first token by X. Default: 1."))
@click.option("--speed-factor", type=float, default=None, metavar="X", help=_("Multiply generation speed (tokens/s) by X. Default: 1."))
@click.option("--limiter", type=click.Choice(["sliding_window", "token_bucket"]), default=None, help=_("Admission limiter. Default: sliding_window."))
@click.option("--window-s", type=float, default=None, metavar="SECONDS", help=_("Limiter window length in seconds; the budget per window is capacity × window/60. Default: 60."))
@click.option("--burst-s", type=float, default=None, metavar="SECONDS", help=_("Token bucket size in seconds of capacity. Default: 10."))
@click.option(
    "--admission",
    type=click.Choice(["input_then_output", "reserve_max_tokens"]),
    default=None,
    help=_("Admission charge: input tokens at admission and output as generated, or input + max_tokens reserved and corrected at the end. Default: input_then_output."),
)
@click.option("--burst-rps", type=float, default=None, metavar="N", help=_("Answer 429 Throttling.BurstRate when more than N requests arrive within one second. Default: off."))
@click.option("--no-qpm", is_flag=True, default=False, help=_("Do not enforce the QPM limit."))
@click.option("--error-style", type=click.Choice(["http", "sse_event"]), default=None, help=_("Errors on streaming requests: plain HTTP status, or HTTP 200 with an event:error frame. Default: http."))
@click.option("--fault", "faults", multiple=True, metavar="NAME=P", help=_("Inject fault NAME into a share P of requests; repeatable. See docs/simulator.md for the names."))
@click.option("--stall-s", type=float, default=None, metavar="SECONDS", help=_("Length of the stall fault. Default: 5."))
@click.option("--tokens-per-chunk", type=int, default=None, metavar="N", help=_("Output tokens per streamed chunk. Default: 1."))
@click.option("--no-prompt-cache", is_flag=True, default=False, help=_("Never report cached tokens for repeated prompt prefixes."))
@catalog_option
@lang_option
def simulate_command(
    model: str | None,
    ptu: int | None,
    deployment_code: str | None,
    host: str | None,
    port: int | None,
    seed: int | None,
    api_key: str | None,
    config_file: Path | None,
    no_qpm: bool,
    faults: tuple[str, ...],
    no_prompt_cache: bool,
    catalog_path: Path | None,
    **flags: Any,
) -> None:
    from ..simulator import SimulatorConfig, load_config_file, serve_forever

    settings: dict[str, Any] = load_config_file(config_file) if config_file is not None else {}
    explicit = {
        "host": host,
        "port": port,
        "seed": seed,
        "api_key": api_key,
        "deployment_code": deployment_code,
        **flags,
    }
    settings.update({key: value for key, value in explicit.items() if value is not None})
    if no_qpm:
        settings["enforce_qpm"] = False
    if no_prompt_cache:
        settings["prompt_cache"] = False
    if faults:
        settings["faults"] = {**settings.get("faults", {}), **_parse_faults(faults)}

    model_name = model or settings.pop("model", None)
    settings.pop("model", None)
    ptu_count = ptu if ptu is not None else settings.pop("ptu", None)
    settings.pop("ptu", None)
    if model_name is None:
        raise InputError(_("Missing --model. Give a model version such as qwen-plus-2025-04-28 (or 'model' in --config)."))
    if ptu_count is None:
        raise InputError(_("Missing --ptu. Give the number of PTUs to simulate (or 'ptu' in --config)."))
    code = settings.pop("deployment_code", None)
    config = SimulatorConfig.for_model(str(model_name), ptu_count, deployment_code=code, catalog_path=catalog_path, **settings)

    if config.host not in _LOCAL_HOSTS:
        logger.warning(
            "Listening on %s makes the simulator reachable from other machines; use --host 127.0.0.1 unless that is intended",
            config.host,
        )
        click.echo(_("Warning: listening on {host}, reachable from other machines.").format(host=config.host), err=True)

    def announce(url: str) -> None:
        # Not translated: scripts and tests wait for this exact line.
        click.echo(f"Listening on {url}")
        click.echo(
            _("Model {model}, {ptu} PTU, deployment code {code}: {tpm} TPM, {qpm} QPM × {factor}").format(
                model=config.model_version,
                ptu=config.ptu,
                code=config.deployment_code,
                tpm=config.capacity.total_tpm,
                qpm=config.capacity.qpm,
                factor=config.capacity_factor,
            ),
            err=True,
        )

    serve_forever(config, announce)

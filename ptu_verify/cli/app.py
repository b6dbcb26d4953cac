"""The command group. Subcommands live in their own modules and are imported on first use."""

from __future__ import annotations

import importlib
import logging
from typing import Any

import click

from .. import __version__
from ..i18n import _
from .common import lang_option

__all__ = ["cli"]

# name -> (module, attribute); a module is imported only when its command runs or is listed.
_COMMANDS: dict[str, tuple[str, str]] = {
    "catalog": ("ptu_verify.cli.catalog_cmd", "catalog_command"),
    "plan": ("ptu_verify.cli.plan_cmd", "plan_command"),
    "simulate": ("ptu_verify.cli.simulate_cmd", "simulate_command"),
    "workload": ("ptu_verify.cli.workload_cmd", "workload_group"),
    "run": ("ptu_verify.cli.run_cmd", "run_command"),
    "analyze": ("ptu_verify.cli.analyze_cmd", "analyze_command"),
    "compare": ("ptu_verify.cli.compare_cmd", "compare_command"),
    "history": ("ptu_verify.cli.compare_cmd", "history_command"),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on demand, so ``ptu-verify plan`` starts fast."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in _COMMANDS if self._load(name) is not None]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name)

    def _load(self, name: str) -> click.Command | None:
        if name not in _COMMANDS:
            return None
        module_name, attribute = _COMMANDS[name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:
                return None
            raise
        command: Any = getattr(module, attribute, None)
        return command if isinstance(command, click.Command) else None


def _configure_logging(verbose: int) -> None:
    level = logging.WARNING
    if verbose == 1:
        level = logging.INFO
    elif verbose > 1:
        level = logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@click.group(
    cls=LazyGroup,
    help=_(
        "Load testing and capacity verification for provisioned-throughput (PTU) Qwen deployments "
        "on Alibaba Cloud Bailian.\n\nExit codes: 0 pass, 1 verdict fail, 2 usage or input error, "
        "3 inconclusive, 4 runtime error."
    ),
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="ptu-verify")
@click.option("-v", "--verbose", count=True, help=_("Log more: -v for lifecycle (INFO), -vv for detail (DEBUG)."))
@lang_option
def cli(verbose: int) -> None:
    _configure_logging(verbose)

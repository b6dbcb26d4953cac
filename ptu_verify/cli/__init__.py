"""The ``ptu-verify`` command line: a thin layer that parses options and calls the library."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Sequence

from ..errors import ExitCode, PtuVerifyError
from ..i18n import _, language_from_argv, set_language

__all__ = ["main"]

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (the console script exits with it)."""
    args = list(sys.argv[1:] if argv is None else argv)

    # Help texts are translated when the commands are defined, so the language is set first.
    set_language(language_from_argv(args))
    from .app import cli

    try:
        result = cli.main(args=args, prog_name="ptu-verify", standalone_mode=False)
    except PtuVerifyError as error:
        print(_("Error: {message}").format(message=error.message), file=sys.stderr)
        return int(error.exit_code)
    except SystemExit as exit_request:
        return exit_request.code if isinstance(exit_request.code, int) else 0
    except KeyboardInterrupt:
        print(_("Interrupted."), file=sys.stderr)
        return int(ExitCode.RUNTIME)
    except Exception as error:  # noqa: BLE001 - the last line of defence against tracebacks
        import click

        if isinstance(error, click.exceptions.Abort):
            print(_("Aborted."), file=sys.stderr)
            return int(ExitCode.RUNTIME)
        if isinstance(error, click.ClickException):
            error.show()
            return int(ExitCode.USAGE) if isinstance(error, click.UsageError) else error.exit_code
        if os.environ.get("PTU_VERIFY_DEBUG"):
            traceback.print_exc()
        print(
            _("Error: unexpected failure: {error}. Set PTU_VERIFY_DEBUG=1 to see the traceback, and report it.").format(
                error=f"{type(error).__name__}: {error}"
            ),
            file=sys.stderr,
        )
        return int(ExitCode.RUNTIME)
    # Subcommands that end with a verdict return its exit code.
    return result if isinstance(result, int) else 0

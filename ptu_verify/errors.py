"""Exit codes and the exceptions that map to them."""

from __future__ import annotations

import enum

__all__ = ["ExitCode", "PtuVerifyError", "InputError", "RuntimeFailure"]


class ExitCode(enum.IntEnum):
    """Process exit codes shared by every subcommand and by the Locust side."""

    PASS = 0
    FAIL = 1
    USAGE = 2
    INCONCLUSIVE = 3
    RUNTIME = 4


class PtuVerifyError(Exception):
    """An error the CLI reports as one message, without a traceback."""

    exit_code: ExitCode = ExitCode.RUNTIME

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InputError(PtuVerifyError):
    """Bad input from the user: a flag, a file, a field or a value (exit 2).

    The message names the offending file, field or value and gives the fix.
    """

    exit_code = ExitCode.USAGE


class RuntimeFailure(PtuVerifyError):
    """A failure while running, not caused by the user's input (exit 4)."""

    exit_code = ExitCode.RUNTIME

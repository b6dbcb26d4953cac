"""Shared test setup: a clean language environment and the CLI runner helper."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ptu_verify.cli import main
from ptu_verify.i18n import set_language


@pytest.fixture(autouse=True)
def _english_by_default(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for variable in ("PTU_VERIFY_LANG", "LC_ALL", "LC_MESSAGES", "LANG", "PTU_VERIFY_DEBUG"):
        monkeypatch.delenv(variable, raising=False)
    set_language("en")
    yield
    set_language("en")


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run ``ptu-verify ARGS`` in-process and return its exit code and output."""

    def invoke(*args: str) -> CliResult:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke

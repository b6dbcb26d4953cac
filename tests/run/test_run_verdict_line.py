"""The last console line of ``ptu-verify run`` in both languages."""

from __future__ import annotations

from ptu_verify.cli.run_cmd import verdict_line
from ptu_verify.i18n import set_language


def test_verdict_line_english() -> None:
    assert verdict_line("inconclusive", simulated=True, partial=False) == "Verdict: INCONCLUSIVE (SIMULATED)"


def test_verdict_line_chinese_translates_verdict_and_labels() -> None:
    set_language("zh")  # tests/conftest.py restores English after each test
    line = verdict_line("inconclusive", simulated=True, partial=True)
    assert line.startswith("结论：无法判定")
    assert "模拟" in line
    assert "不完整" in line
    assert "INCONCLUSIVE" not in line
    assert "SIMULATED" not in line

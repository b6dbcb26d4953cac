"""Rendering of analysis results: HTML verdict, summary.json, JUnit XML and the console summary."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..analysis import Summary
from ..i18n import get_language, set_language

__all__ = ["write_reports"]

logger = logging.getLogger(__name__)


def write_reports(summary: Summary, run_dir: Path, lang: str = "en") -> dict[str, Path]:
    """Write verdict.html, summary.json and junit.xml into ``run_dir`` in ``lang``; return name -> path."""
    from .html import render_html
    from .junit import render_junit

    previous = get_language()
    set_language(lang)
    try:
        run_dir = Path(run_dir)
        paths = {"verdict.html": run_dir / "verdict.html", "summary.json": run_dir / "summary.json", "junit.xml": run_dir / "junit.xml"}
        paths["summary.json"].write_text(json.dumps(summary.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        paths["junit.xml"].write_text(render_junit(summary), encoding="utf-8")
        paths["verdict.html"].write_text(render_html(summary), encoding="utf-8")
    finally:
        set_language(previous)
    logger.info("Wrote %s", ", ".join(str(path) for path in paths.values()))
    return paths

"""Analysis of a run directory: per-stage metrics, the verdict and the PTU recommendation.

``analyze_run(run_dir, AnalysisOptions(...))`` returns a Summary; ``Summary.to_dict()`` is the
content of summary.json and ``Summary.exit_code`` the process exit code of the verdict.
"""

from __future__ import annotations

from ..sizing import Prices
from .analyze import SUMMARY_SCHEMA, AnalysisOptions, Summary, analyze_run

__all__ = ["SUMMARY_SCHEMA", "AnalysisOptions", "Prices", "Summary", "analyze_run"]

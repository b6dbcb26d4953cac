"""Smoke runs of every bench/ script with tiny settings: each must finish and write its JSON.

The five scripts run at the same time (each is mostly process start-up) so the whole module stays
within about 15 s. No figure is asserted beyond "the run did what it says": timing belongs to the
benchmarks themselves (docs/benchmarks.md), not to CI.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

# The search-cost script starts a Locust process and the module takes about 12 s.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
TIMEOUT_S = 60.0

SCRIPTS: dict[str, list[str]] = {
    "generator": ["bench_generator.py", "--clients", "ref-openai,fast-openai", "--duration", "0.4", "--warmup", "0.1", "--concurrency", "2", "--tokens", "5"],
    "fidelity": ["bench_fidelity.py", "--levels", "0.25", "--level-s", "0.5", "--calibration-s", "0.5", "--calibration-start-rps", "20", "--calibration-cpu", "0", "--tokens", "5", "--speed-tps", "200", "--ttft-ms", "5"],
    "analysis": ["bench_analysis.py", "--records", "3000"],
    "simulator": ["bench_simulator.py", "--streams", "20", "--tokens", "10", "--speed-tps", "100", "--ramp-s", "0.2"],
    "search_cost": ["bench_search_cost.py", "--plans", "search", "--time-scale", "90", "--ptu", "4", "--search-max-stages", "1"],
}


@pytest.fixture(scope="module")
def bench_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[subprocess.CompletedProcess[str], dict[str, Any]]]:
    """Start every script at once with --out in a temporary folder; return each finished process and its JSON."""
    folder = tmp_path_factory.mktemp("bench")
    processes = {}
    for name, (script, *args) in SCRIPTS.items():
        extra = ["--run-dir", str(folder / "analysis-run")] if name == "analysis" else []
        command = [sys.executable, str(BENCH / script), *args, *extra, "--out", str(folder / f"{name}.json")]
        processes[name] = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=folder)

    deadline = time.monotonic() + TIMEOUT_S
    results = {}
    for name, process in processes.items():
        try:
            stdout, stderr = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in processes.values():
                other.kill()
            raise
        completed = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        path = folder / f"{name}.json"
        results[name] = (completed, json.loads(path.read_text(encoding="utf-8")) if path.exists() else {})
    return results


def _check(run: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> dict[str, Any]:
    completed, result = run
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.startswith("machine: "), "every script prints the machine first"
    machine = result["machine"]
    assert machine["cores"] >= 1
    assert machine["python"]
    assert "aiohttp" in machine["libraries"]
    assert result["command"].startswith("python ")
    assert result["date_utc"].endswith("Z")
    return result


def test_generator_measures_ours_and_reference(bench_runs: dict[str, Any]) -> None:
    result = _check(bench_runs["generator"])
    for client in ("ref-openai", "fast-openai"):
        figures = result["results"][client]
        assert figures["ok"] == figures["requests"] > 0, client
        assert figures["events"] == 5 * figures["requests"], "5 tokens per request, one token event each"
    assert result["results"]["fast-openai"]["records_written"] == result["results"]["fast-openai"]["records_total"], "every attempt is recorded"
    assert result["ratio_to_reference"]["fast-openai"]["events_per_s"] > 0


def test_fidelity_matches_every_request_with_the_simulator(bench_runs: dict[str, Any]) -> None:
    result = _check(bench_runs["fidelity"])
    (level,) = result["levels"]
    assert level["requests"] > 0
    assert level["ok"] == level["requests"]
    assert level["matched"] == level["ok"], "every ok record has its request id in /sim/stats"
    assert level["token_count_diff_percent"] == 0.0, "usage tokens must equal the simulator's count"
    assert level["ttft_diff_ms"]["p50"] is not None and level["e2e_diff_ms"]["p99"] is not None


def test_analysis_reports_time_and_memory(bench_runs: dict[str, Any]) -> None:
    result = _check(bench_runs["analysis"])
    assert 2500 <= result["records"] <= 3500
    assert result["peak_rss_mb"] > 0
    assert result["peak_tree_rss_mb"] >= result["peak_rss_mb"] * 0.5
    assert result["total_s"] > 0
    assert result["reports"], "write_reports produced files"


def test_simulator_streams_complete(bench_runs: dict[str, Any]) -> None:
    result = _check(bench_runs["simulator"])
    (level,) = result["levels"]
    assert level["completed_streams"] == 20
    assert level["events"] >= 20 * 10, "every stream delivers its 10 token events"


def test_search_cost_runs_locust_against_the_simulator(bench_runs: dict[str, Any]) -> None:
    result = _check(bench_runs["search_cost"])
    (search,) = result["results"]
    assert search["plan"] == "search"
    assert search["stages"] == 1
    assert search["tokens_simulator"] > 0
    assert search["requests_simulator"] > 0

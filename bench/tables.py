"""Print the Markdown tables of docs/benchmarks.md from bench/results/*.json.

    python bench/tables.py [RESULTS_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _load(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def _run_line(result: dict[str, Any]) -> str:
    load = ", ".join(f"{value:g}" for value in result.get("load_average_at_start", []))
    return f"Measured {result['date_utc']} with `{result['command']}` (load average at start: {load})."


def generator(result: dict[str, Any]) -> list[str]:
    lines = [_run_line(result), "", _row("client", "events/s", "requests/s", "generator CPU %", "events per CPU-s", "requests per CPU-s", "simulator CPU %", "ours / reference (events/s)", "ours / reference (per CPU-s)")]
    lines.append(_row(*["---"] * 9))
    ratios = result["ratio_to_reference"]
    for client, figures in result["results"].items():
        ratio = ratios.get(client, {})
        lines.append(
            _row(
                client, _number(figures["events_per_s"]), _number(figures["requests_per_s"], 1), _number(figures["cpu_percent"], 1),
                _number(figures["events_per_cpu_s"]), _number(figures["requests_per_cpu_s"], 1), _number(figures.get("simulator_cpu_percent_avg"), 0),
                ratio.get("events_per_s", "reference"), ratio.get("events_per_cpu_s", "reference"),
            )
        )
    return lines


def fidelity(result: dict[str, Any]) -> list[str]:
    calibration = result["calibration"]
    lines = [
        _run_line(result),
        "",
        (f"Calibrated capacity: {calibration['capacity_events_per_cpu_s']:,} events per CPU-second "
        f"({calibration['events_per_s']:,} events/s at {calibration['cpu_percent']} % CPU with {calibration['users']} streams in flight)."),
        "",
        _row("load (of capacity)", "requests", "generator CPU %", "simulator CPU %", "TTFT diff p50 ms", "TTFT diff p99 ms", "e2e diff p50 ms", "e2e diff p99 ms", "tokens ours vs simulator"),
        _row(*["---"] * 9),
    ]
    for level in result["levels"]:
        lines.append(
            _row(
                f"{level['fraction'] * 100:.0f} %", _number(level["requests"]), _number(level["generator_cpu_percent"], 1), _number(level.get("simulator_cpu_percent"), 1),
                _number(level["ttft_diff_ms"]["p50"], 2), _number(level["ttft_diff_ms"]["p99"], 2),
                _number(level["e2e_diff_ms"]["p50"], 2), _number(level["e2e_diff_ms"]["p99"], 2),
                f"{level['token_count_diff_percent']:+.3f} %" if level["token_count_diff_percent"] is not None else "–",
            )
        )
    return lines


def analysis(result: dict[str, Any]) -> list[str]:
    return [
        _run_line(result),
        "",
        _row("records", "records.jsonl MB", "analyze s", "render s", "total s (in process)", "process wall s", "peak RSS MB (main / largest worker / whole tree)"),
        _row(*["---"] * 7),
        _row(
            _number(result["records"]), _number(result["records_file_mb"], 1), _number(result["analyze_s"], 2), _number(result["render_s"], 2),
            _number(result["total_s"], 2), _number(result["child_wall_s"], 2),
            f"{_number(result['peak_rss_mb'])} / {_number(result['peak_worker_rss_mb'])} / {_number(result['peak_tree_rss_mb'])}",
        ),
    ]


def simulator(result: dict[str, Any]) -> list[str]:
    lines = [
        _run_line(result),
        "",
        _row("streams", "offered events/s", "plateau events/s", "server CPU % (plateau)", "completed", "elapsed s (ideal)", "first event p50 / p99 s", "kept up"),
        _row(*["---"] * 9),
    ]
    for level in result["levels"]:
        lines.append(
            _row(
                _number(level["streams"]), _number(level["peak_offered_events_per_s"]), _number(level["plateau_events_per_s"]),
                _number(level["plateau_server_cpu_percent"], 1), _number(level["completed_streams"]),
                f"{level['elapsed_s']} ({level['ideal_elapsed_s']})", f"{level['first_event_p50_s']} / {level['first_event_p99_s']}",
                "yes" if level["kept_up"] else "no",
            )
        )
    return lines


def search_cost(result: dict[str, Any]) -> list[str]:
    lines = [
        _run_line(result),
        "",
        f"Truth: {result['true_fraction']:g} × nominal = {result['true_tpm']:,.0f} TPM (simulated {result['ptu']} PTU standing for {result['represented_ptu']} PTU, time scale {result['time_scale']:g}).",
        "",
        _row("plan", "stages", "load s (scaled)", "test minutes (unscaled)", "tokens", "found TPM", "error vs truth", "within ±5 %"),
        _row(*["---"] * 8),
    ]
    for run in result["results"]:
        lines.append(
            _row(
                run["plan"], run["stages"], _number(run["load_s"], 1), _number(run["unscaled_minutes"], 1), _number(run["tokens_simulator"]),
                _number(run.get("found_tpm")), f"{run['error_percent']:+.1f} %" if run.get("error_percent") is not None else "–",
                "yes" if run["within_5_percent"] else "no",
            )
        )
    if "search_over_step" in result:
        ratio = result["search_over_step"]
        lines += ["", f"Search / step: {ratio['time']:.2f} of the test time, {ratio['tokens']:.2f} of the tokens."]
    return lines


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS
    for name, render in (("generator", generator), ("fidelity", fidelity), ("analysis", analysis), ("simulator", simulator), ("search_cost", search_cost)):
        result = _load(folder, name)
        if result is None:
            continue
        print(f"### {name}\n")
        print("\n".join(render(result)))
        print()


if __name__ == "__main__":
    main()

"""Print the Markdown tables of docs/benchmarks.md from bench/results/*.json, or update them in place.

    python bench/tables.py                              # print every table
    python bench/tables.py --update docs/benchmarks.md  # replace each <!-- table:NAME --> … <!-- /table:NAME --> block
"""

from __future__ import annotations

import argparse
import json
import re
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
    nice = f", nice {result['nice']}" if result.get("nice") else ""
    commit = f" at commit {result['git_commit'][:7]}" if result.get("git_commit") else ""
    return f"Measured {result['date_utc']}{commit} with `{result['command']}` (load average at start: {load}{nice})."


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
    if calibration["steps"]:
        last = calibration["steps"][-1]
        capacity_line = (
            f"Calibrated capacity: {calibration['capacity_events_per_cpu_s']:,} events per CPU-second "
            f"({last['events_per_s']:,} events/s at {last['cpu_percent']} % CPU in the last of {len(calibration['steps'])} open-loop steps)."
        )
    else:
        capacity_line = f"Capacity given with --capacity: {calibration['capacity_events_per_cpu_s']:,} events per CPU-second."
    lines = [
        _run_line(result),
        "",
        capacity_line,
        "",
        _row(
            "load (of capacity)", "requests", "generator CPU %", "simulator CPU %", "TTFT diff p50 / p99 ms", "e2e diff p50 / p99 ms",
            "send → arrival p50 / p99 ms", "first token write → read p50 / p99 ms", "longest GC pause ms", "tokens ours vs simulator",
        ),
        _row(*["---"] * 10),
    ]
    for level in result["levels"]:

        def pair(key: str, level: dict[str, Any] = level) -> str:
            return f"{_number(level[key]['p50'], 2)} / {_number(level[key]['p99'], 2)}"

        lines.append(
            _row(
                f"{level['fraction'] * 100:.0f} %", _number(level["requests"]), _number(level["generator_cpu_percent"], 1), _number(level.get("simulator_cpu_percent"), 1),
                pair("ttft_diff_ms"), pair("e2e_diff_ms"), pair("send_to_arrival_ms"), pair("first_token_write_to_read_ms"), _number(level.get("gc_pause_max_ms"), 1),
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
        _row(*["---"] * 8),
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


def _met(condition: bool) -> str:
    return "met" if condition else "**missed**"


def summary(folder: Path) -> list[str]:
    """Return the table of targets, the measured figures and whether each target is met."""
    lines = [_row("benchmark", "target", "measured", "result"), _row(*["---"] * 4)]
    generator_result = _load(folder, "generator")
    if generator_result and "fast-openai" in generator_result["ratio_to_reference"]:
        ratio = generator_result["ratio_to_reference"]["fast-openai"]
        lines.append(_row("1. generator, fast transport", "ours / reference ≥ 1.0", f"{ratio['events_per_cpu_s']} per CPU-second, {ratio['events_per_s']} in events/s", _met(ratio["events_per_cpu_s"] >= 1.0)))
    fidelity_result = _load(folder, "fidelity")
    if fidelity_result:
        within = [level for level in fidelity_result["levels"] if (level["generator_cpu_percent"] or 0) <= 70.0]
        p50 = max((abs(level["ttft_diff_ms"]["p50"]) for level in within), default=None)
        p99 = max((max(level["ttft_diff_ms"]["p99"], level["e2e_diff_ms"]["p99"]) for level in within), default=None)
        tokens = max((abs(level["token_count_diff_percent"] or 0.0) for level in fidelity_result["levels"]), default=None)
        highest = max((level["fraction"] for level in within), default=None)
        measured = f"worst p50 {_number(p50, 2)} ms, worst p99 {_number(p99, 2)} ms (levels up to {_number((highest or 0) * 100)} %)"
        lines.append(_row("2. fidelity, TTFT and e2e vs server", "≤ 1 ms p50, ≤ 5 ms p99 up to 70 % generator CPU", measured, _met(p50 is not None and p50 <= 1.0 and p99 is not None and p99 <= 5.0)))
        read_p50 = max((level["first_token_write_to_read_ms"]["p50"] for level in within), default=None)
        read_p99 = max((level["first_token_write_to_read_ms"]["p99"] for level in within), default=None)
        lines.append(_row("2. fidelity, response path only (first token write → read)", "(diagnostic, same bounds)", f"worst p50 {_number(read_p50, 2)} ms, worst p99 {_number(read_p99, 2)} ms", "–"))
        lines.append(_row("2. fidelity, tokens", "within 0.5 % of the simulator", f"largest difference {tokens:.3f} %", _met(tokens is not None and tokens <= 0.5)))
    analysis_result = _load(folder, "analysis")
    if analysis_result:
        lines.append(
            _row(
                "3. analysis, 1 M records", "≤ 15 s and ≤ 2 GB", f"{analysis_result['child_wall_s']} s, {_number(analysis_result['peak_tree_rss_mb'])} MB",
                _met(analysis_result["child_wall_s"] <= 15.0 and analysis_result["peak_tree_rss_mb"] <= 2048.0),
            )
        )
    simulator_result = _load(folder, "simulator")
    if simulator_result:
        streams, events = simulator_result["max_streams_kept_up"] or 0, simulator_result["max_plateau_events_per_s"] or 0
        lines.append(_row("4. simulator, one core", "≥ 2,000 streams, ≥ 50,000 events/s", f"{_number(streams)} streams, {_number(events)} events/s", _met(streams >= 2000 and events >= 50_000)))
    search_result = _load(folder, "search_cost")
    if search_result:
        runs = {run["plan"]: run for run in search_result["results"]}
        search_run = runs.get("search")
        if search_run:
            cost = search_result.get("search_over_step")
            measured = f"error {search_run['error_percent']:+.1f} %" + (f", {cost['time']:.2f} of the step plan's time and {cost['tokens']:.2f} of its tokens" if cost else "")
            lines.append(_row("5. capacity search", "capacity within ±5 %, at less cost than the step plan", measured, _met(search_run["within_5_percent"] and (cost is None or cost["time"] < 1.0))))
    return lines


RENDERERS = {"generator": generator, "fidelity": fidelity, "analysis": analysis, "simulator": simulator, "search_cost": search_cost}


def update(document: Path, folder: Path) -> None:
    """Replace the text between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->`` with the current table."""
    text = document.read_text(encoding="utf-8")
    blocks = {"summary": "\n".join(summary(folder))}
    for name, render in RENDERERS.items():
        result = _load(folder, name)
        if result is not None:
            blocks[name] = "\n".join(render(result))
    for name, block in blocks.items():
        pattern = re.compile(rf"<!-- table:{name} -->.*?<!-- /table:{name} -->", re.DOTALL)
        replacement = f"<!-- table:{name} -->\n{block}\n<!-- /table:{name} -->"
        # A literal replacement, not a template: table text may contain backslashes.
        text, count = pattern.subn(replacement.replace("\\", "\\\\"), text)
        if count == 0:
            print(f"{document}: no <!-- table:{name} --> block, so the {name} table was not updated")
    document.write_text(text, encoding="utf-8")
    print(f"updated {document}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", type=Path, default=RESULTS, help="folder with the result JSON files")
    parser.add_argument("--update", type=Path, metavar="MARKDOWN", help="update the marked table blocks of this file instead of printing")
    args = parser.parse_args()
    if args.update:
        update(args.update, args.results)
        return
    print("### summary\n")
    print("\n".join(summary(args.results)))
    print()
    for name, render in RENDERERS.items():
        result = _load(args.results, name)
        if result is None:
            continue
        print(f"### {name}\n")
        print("\n".join(render(result)))
        print()


if __name__ == "__main__":
    main()

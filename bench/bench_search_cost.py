"""Capacity search cost: test time and tokens that --plan search and --plan step spend to find capacity.

Both plans run as headless Locust processes (loadtest/locustfile.py, fast transport, openai API,
workload ``smoke``: 24 input + 64 output tokens) against a simulated qwen-turbo deployment with 40 PTU.
The deployment delivers only --true-fraction of its nominal capacity (capacity_factor), so the true
capacity is known, and it lies between the step plan's fixed stages. With 88-token requests the binding limit is the QPM
(2,400 requests/min = 211,200 TPM, against 2,400,000 TPM), as the plans compute it.

Scaling: the run stands for a 4-PTU deployment (the qwen-turbo minimum) tested with the plans'
default stage lengths, compressed --time-scale times (default 10) so each run takes at most about two
minutes. Stage durations, warm-ups and the simulator's limiter window are divided by it (search
90/30 s → 9/3 s, step 150/30 s → 15/3 s, window 60 s → 6 s) and the PTU count is multiplied by it
(4 → 40), so every limiter window and every stage sees the same number of requests as the unscaled
test would. The unscaled cost is then the measured time × time-scale and the measured tokens as they are.

Found capacity, for both plans: the analysis' sustained TPM (the highest achieved stage TPM), compared
with the truth. The search's own result (plan.json ``search``: the highest offered load with ≤ 1 %
throttled, and the plateau) is kept in the JSON as well.

    python bench/bench_search_cost.py --true-fraction 0.83
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LOCUSTFILE = REPO / "loadtest" / "locustfile.py"
MODEL = "qwen-turbo-2025-04-28"
REPRESENTED_PTU = 4  # the deployment the scaled run stands for
TOKENS_PER_REQUEST = 88.0  # the smoke workload: 24 input + 64 output tokens


def nominal_tpm(ptu: int) -> float:
    """qwen-turbo's binding limit for 88-token requests: QPM × tokens per request (below its TPM)."""
    return min(60_000.0 * ptu, 60.0 * ptu * TOKENS_PER_REQUEST)
PLAN_DEFAULTS = {"search": (90.0, 30.0), "step": (150.0, 30.0)}


def run_plan(plan: str, simulator: Any, run_dir: Path, ptu: int, scale: float, max_stages: int, timeout_s: float, warmup_override_s: float | None = None) -> dict[str, Any]:
    """Run one plan with Locust; return wall time, simulator token count and the capacity it found."""
    import benchlib

    stage_s, warmup_s = (value / scale for value in PLAN_DEFAULTS[plan])
    if warmup_override_s is not None:
        warmup_s = warmup_override_s / scale
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "--host", simulator.openai_url, "--deployment-code", simulator.deployment_code, "--run-dir", str(run_dir),
        "--workload", "smoke", "--seed", "7", "--plan", plan, "--model", MODEL, "--ptu", str(ptu),
        "--stage-duration", f"{stage_s:g}", "--warmup", f"{warmup_s:g}", "--search-max-stages", str(max_stages),
        "--drain-timeout", "5",
    ]
    env = {key: value for key, value in os.environ.items() if not key.startswith("LOCUST_")}
    env["DASHSCOPE_API_KEY"] = "sk-test-fake-0000"
    simulator.reset()
    started = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=run_dir.parent) as process:
        benchlib.pin_to(benchlib.GENERATOR_CORE, process.pid)
        try:
            _, stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            raise SystemExit(f"--plan {plan} did not finish within {timeout_s:g} s") from None
    wall_s = time.perf_counter() - started
    totals = simulator.stats()["totals"]
    plan_info = json.loads((run_dir / "plan.json").read_text(encoding="utf-8"))
    stages = plan_info.get("stages", [])
    result: dict[str, Any] = {
        "plan": plan,
        "exit_code": process.returncode,
        "stage_duration_s": stage_s,
        "warmup_s": warmup_s,
        "stages": len(stages),
        "wall_s": round(wall_s, 1),
        "load_s": round(stages[-1]["end_at"] - stages[0]["start_at"], 1) if stages else None,
        "tokens_simulator": totals["input_tokens"] + totals["output_tokens"],
        "requests_simulator": totals["requests"],
        "throttled_simulator": totals["throttled"],
    }
    if process.returncode not in (0, 1, 3):
        result["stderr_tail"] = stderr[-2000:]
    from ptu_verify.analysis import analyze_run

    # The same figure for both plans: the analysis' sustained TPM (highest achieved stage TPM).
    sustained = analyze_run(run_dir).to_dict().get("sustained_tpm") or {}
    result["sustained_tpm"] = {key: sustained.get(key) for key in ("value", "stage", "ci_low", "ci_high")}
    result["found_tpm"] = sustained.get("value")
    if plan == "search":
        search = plan_info.get("search") or {}
        result["search"] = {key: search.get(key) for key in ("stages", "sustained_fraction", "sustained_offered_tpm", "sustained_achieved_tpm", "plateau_tpm", "converged")}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--true-fraction", type=float, default=0.83, help="capacity the simulator delivers, as a fraction of nominal")
    parser.add_argument("--time-scale", type=float, default=10.0, help="divide stage durations and the limiter window by this")
    parser.add_argument("--plans", default="search,step", help="comma-separated: search, step")
    parser.add_argument("--ptu", type=int, help=f"PTUs of the simulated deployment (default {REPRESENTED_PTU} × --time-scale)")
    parser.add_argument("--search-max-stages", type=int, default=8, help="--search-max-stages of the search plan")
    parser.add_argument("--warmup", type=float, metavar="SECONDS", help="unscaled warm-up of every stage instead of the plan default (30 s)")
    parser.add_argument("--keep", type=Path, help="keep the run directories under this folder")
    parser.add_argument("--out", type=Path, help="result JSON (default bench/results/search_cost.json)")
    args = parser.parse_args()

    import benchlib

    output = benchlib.header(sys.argv)
    benchlib.print_machine(output["machine"])
    ptu = args.ptu or round(REPRESENTED_PTU * args.time_scale)
    truth_tpm = args.true_fraction * nominal_tpm(ptu)
    settings = {"capacity_factor": args.true_fraction, "window_s": 60.0 / args.time_scale}
    output.update({"model": MODEL, "ptu": ptu, "represented_ptu": REPRESENTED_PTU, "nominal_tpm": nominal_tpm(ptu), "true_fraction": args.true_fraction, "true_tpm": truth_tpm, "time_scale": args.time_scale, "simulator_settings": settings})
    results = []
    with benchlib.SimulatorProcess(settings, model=MODEL, ptu=ptu) as simulator, tempfile.TemporaryDirectory(prefix="ptu-bench-search-") as temporary:
        folder = args.keep or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        for plan in [name.strip() for name in args.plans.split(",") if name.strip()]:
            stage_s = PLAN_DEFAULTS[plan][0] / args.time_scale
            timeout_s = stage_s * (args.search_max_stages if plan == "search" else 6) + 120
            result = run_plan(plan, simulator, Path(folder) / plan, ptu, args.time_scale, args.search_max_stages, timeout_s, args.warmup)
            found = result.get("found_tpm")
            result["error_percent"] = None if found is None else round(100.0 * (found - truth_tpm) / truth_tpm, 2)
            result["within_5_percent"] = found is not None and abs(found - truth_tpm) <= 0.05 * truth_tpm
            result["unscaled_minutes"] = round((result["load_s"] or result["wall_s"]) * args.time_scale / 60.0, 1)
            result["unscaled_tokens"] = result["tokens_simulator"]
            results.append(result)
            print(
                f"--plan {plan:6s}: {result['stages']} stages, {result['load_s']} s of load ({result['unscaled_minutes']} min unscaled), "
                f"{result['tokens_simulator']:,} tokens ({result['unscaled_tokens']:,} unscaled), found {round(found or 0):,} TPM vs true {round(truth_tpm):,} "
                f"({result['error_percent']} %), exit {result['exit_code']}"
            )
    output["results"] = results
    by_plan = {result["plan"]: result for result in results}
    if "search" in by_plan and "step" in by_plan:
        output["search_over_step"] = {
            "time": round(by_plan["search"]["load_s"] / by_plan["step"]["load_s"], 3),
            "tokens": round(by_plan["search"]["tokens_simulator"] / by_plan["step"]["tokens_simulator"], 3),
        }
        print(f"search / step: time {output['search_over_step']['time']}, tokens {output['search_over_step']['tokens']}")
    benchlib.write_result("search_cost", output, args.out)


if __name__ == "__main__":
    main()

"""Time and peak memory of analyze_run + write_reports on a synthetic step-plan run of about a million records.

The run comes from ptu_verify.analysis.synthetic: qwen-turbo with 400 PTU, so 20,000 requests per
minute at capacity. It follows the six-stage step plan (0.5 … 1.25 of capacity), so the last two stages
are throttled. It has 8 workers, 1 % HTTP 500 failures, 2 % of token counts estimated and two variants.
It is written once to --run-dir and reused. The analysis runs in a fresh child process (the same
library calls as ``ptu-verify analyze``), which reports its wall time per step and its peak memory: its own peak RSS and the
largest pool worker's (getrusage ru_maxrss), and the peak of their sum sampled every 20 ms (psutil).

    python bench/bench_analysis.py --records 1000000
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

FRACTIONS = (0.5, 0.75, 0.9, 1.0, 1.1, 1.25)
REQUESTS_PER_MIN_AT_CAPACITY = 20_000  # 400 PTU of qwen-turbo at 1,200 tokens per request


def write_run(run_dir: Path, records: int) -> float:
    """Write the synthetic run; return the seconds it took."""
    from ptu_verify.analysis.synthetic import (
        SyntheticDeployment,
        SyntheticLoad,
        write_synthetic_run,
    )

    stage_s = records / (sum(FRACTIONS) * REQUESTS_PER_MIN_AT_CAPACITY / 60.0)
    started = time.perf_counter()
    write_synthetic_run(
        run_dir,
        SyntheticDeployment(model="qwen-turbo-2025-04-28", ptu=400, input_tokens=1000, output_tokens=200, deployment_code="qwen-turbo-bench"),
        SyntheticLoad(
            fractions=FRACTIONS,
            stage_s=stage_s,
            warmup_s=min(60.0, stage_s / 5),
            workers=8,
            failure_share=0.01,
            tokens_estimated_share=0.02,
            late_share=0.001,
            plan_kind="step",
        ),
    )
    return time.perf_counter() - started


class TreeMemory:
    """Samples the summed RSS of this process and its children (the parsing pool) every 20 ms."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(0.02):
            total = 0
            for process in [self._process, *self._process.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    continue
            self.peak_bytes = max(self.peak_bytes, total)

    def stop(self) -> int:
        """Stop sampling and return the peak in bytes."""
        self._stop.set()
        self._thread.join()
        return self.peak_bytes


def run_child(run_dir: Path) -> dict[str, Any]:
    """Analyse and render ``run_dir`` in this process; return timings and peak memory."""
    memory = TreeMemory()
    started = time.perf_counter()
    from ptu_verify.analysis import analyze_run
    from ptu_verify.report import write_reports

    imported = time.perf_counter()
    summary = analyze_run(run_dir)
    analysed = time.perf_counter()
    paths = write_reports(summary, run_dir, lang="en")
    finished = time.perf_counter()
    return {
        "records": summary.input["records"],
        "import_s": round(imported - started, 2),
        "analyze_s": round(analysed - imported, 2),
        "render_s": round(finished - analysed, 2),
        "total_s": round(finished - started, 2),
        # ru_maxrss is in KiB on Linux. The pool's workers are children: their peak is reported on its own,
        # and the sampled sum of the whole process tree is the figure that matters for the 2 GB target.
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "peak_worker_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0, 1),
        "peak_tree_rss_mb": round(memory.stop() / 2**20, 1),
        "reports": {name: path.stat().st_size for name, path in paths.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="approximate number of records to synthesise")
    parser.add_argument("--run-dir", type=Path, help="run directory (default /tmp/ptu-verify-bench-<records>)")
    parser.add_argument("--fresh", action="store_true", help="rewrite the run directory even when it exists")
    parser.add_argument("--out", type=Path, help="result JSON (default bench/results/analysis.json)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    run_dir = args.run_dir or Path(f"/tmp/ptu-verify-bench-{args.records}")

    if args.child:
        print(json.dumps(run_child(run_dir)))
        return

    import benchlib

    output = benchlib.header(sys.argv)
    benchlib.print_machine(output["machine"])
    if args.fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    if not (run_dir / "records.jsonl").exists():
        output["write_run_s"] = round(write_run(run_dir, args.records), 1)
        print(f"wrote the synthetic run to {run_dir} in {output['write_run_s']} s")
    output["records_file_mb"] = round((run_dir / "records.jsonl").stat().st_size / 2**20, 1)
    result = benchlib.run_child([__file__, "--child", "--run-dir", str(run_dir)], core=None, timeout_s=900)
    output.update(result)
    output["child_wall_s"] = round(result["child_wall_s"], 2)
    print(
        f"records {result['records']:,} ({output['records_file_mb']} MB): analyze {result['analyze_s']} s, render {result['render_s']} s, "
        f"total {result['total_s']} s (process {output['child_wall_s']} s), peak RSS {result['peak_rss_mb']:,} MB "
        f"(largest pool worker {result['peak_worker_rss_mb']:,} MB, whole tree {result['peak_tree_rss_mb']:,} MB)"
    )
    benchlib.write_result("analysis", output, args.out)


if __name__ == "__main__":
    main()

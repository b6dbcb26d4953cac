"""Measurement fidelity: our TTFT and end-to-end time against the simulator's server-side truth, by load.

The simulator runs on core 1 without limits and with a fixed, realistic stream shape: TTFT --ttft-ms,
--tokens output tokens at --speed-tps, one token per SSE event and one event per write (so the client
reads every event on its own, as from a real deployment). The generator runs in a child process on
core 0: the fast transport (openai API) in a gevent-patched process, with Locust request events and
the JsonlWriter recording every attempt, exactly as in bench_generator.py.

1. Calibration: open-loop steps of --calibration-s seconds with rising arrival rates until the
   generator uses --calibration-cpu of its core. The generator's capacity is the last step's events/s
   divided by its CPU share: the rate at which one full core would read this stream shape.
2. For every level (fraction of that capacity) an open loop with evenly spaced arrivals runs for
   --level-s seconds; then GET /sim/stats gives, per request id, arrival, first-token and finish
   times as the server wrote the bytes. Differences ours − server: TTFT (send → first token read vs
   arrival → first token written) and e2e (send → end read vs arrival → last byte written).
   Achieved TPM compares the input + output tokens of our ok records with the simulator's count.

    python bench/bench_fidelity.py --levels 0.25,0.5,0.75,0.9 --level-s 10
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FAKE_KEY = "sk-test-fake-0000"


def simulator_settings(ttft_ms: float, speed_tps: float, tokens: int) -> dict[str, Any]:
    """No limits, fixed TTFT, fixed length and speed, one token per event."""
    return {
        "capacity_factor": 1e6,
        "enforce_qpm": False,
        "ttft_base_s": ttft_ms / 1000.0,
        "prefill_s_per_token": 0.0,
        "speed_tps": speed_tps,
        "speed_jitter": 0.0,
        "concurrency_knee": 100000,
        "natural_length_fixed": tokens,
        "tokens_per_chunk": 1,
        "prompt_cache": False,
    }


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    """Calibrate, then run every level; return per-level figures."""
    from gevent import monkey

    monkey.patch_all()
    import gc
    import resource
    import urllib.request

    import benchlib
    import gevent
    import psutil
    from locust.env import Environment

    from loadtest.client import ClientConfig, StreamClient
    from loadtest.recorder import JsonlWriter
    from loadtest.users import fire_request_events
    from ptu_verify.requests import RequestSpec

    def cpu_seconds() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    simulator = psutil.Process(args.sim_pid)

    def simulator_cpu_seconds() -> float:
        times = simulator.cpu_times()
        return float(times.user + times.system)

    def sim(path: str, post: bool = False) -> dict[str, Any]:
        request = urllib.request.Request(args.base_url + path, data=b"" if post else None, method="POST" if post else "GET")
        with urllib.request.urlopen(request, timeout=60) as response:
            data: dict[str, Any] = json.loads(response.read())
        return data

    environment = Environment(user_classes=[])
    environment.create_local_runner()
    client = StreamClient(
        ClientConfig(
            api="openai", transport="fast", base_url=args.base_url + "/compatible-mode/v1", deployment_code="qwen-turbo-bench",
            api_key=FAKE_KEY, run_id="bench", worker_id="w0", connection_pool_size=4000, request_timeout_s=60.0,
        )
    )
    spec = RequestSpec(messages=[{"role": "user", "content": "Tell me a story."}], max_tokens=args.tokens, workload="bench", variant="default")
    folder = tempfile.TemporaryDirectory(prefix="ptu-bench-fid-")
    writer = JsonlWriter(Path(folder.name) / "records.jsonl")
    # Only the fields the comparison needs, as flat tuples: a Locust worker ships its records away, so
    # keeping thousands of record dicts here would add garbage-collector pauses the product does not have.
    records: list[tuple[Any, ...]] = []

    def send() -> None:
        result = client.send(spec, stage="bench")
        for record in result:
            fire_request_events(environment.events, record)
        writer.write(result)
        records.extend(compact(record) for record in result)

    # Garbage-collector pauses, a source of event-loop lag that CPU use does not show.
    gc_pauses_s: list[float] = []
    gc_started: list[float] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started[:] = [time.perf_counter()]
        elif gc_started:
            gc_pauses_s.append(time.perf_counter() - gc_started[0])

    gc.callbacks.append(on_gc)
    if args.gc_freeze:
        gc.freeze()  # as loadtest/runtime.py does once the load session is set up

    def open_loop(rate_per_s: float, duration_s: float) -> tuple[float, float, float, float]:
        """Send evenly spaced requests for ``duration_s``.

        Returns wall s, generator and simulator CPU s of the sending period, and generator CPU s until
        the last stream ended.
        """
        count = max(1, int(rate_per_s * duration_s))
        start = time.perf_counter() + 0.2
        cpu_begin, simulator_begin = cpu_seconds(), simulator_cpu_seconds()
        greenlets = []
        for index in range(count):
            gevent.sleep(max(0.0, start + index / rate_per_s - time.perf_counter()))
            greenlets.append(gevent.spawn(send))
        sent_at = time.perf_counter()
        cpu_sent, simulator_sent = cpu_seconds(), simulator_cpu_seconds()
        gevent.joinall(greenlets, timeout=120)
        return sent_at - start, cpu_sent - cpu_begin, simulator_sent - simulator_begin, cpu_seconds() - cpu_begin

    # 1. Calibration: open-loop steps with the levels' arrival pattern, raising the rate until the
    # generator uses --calibration-cpu of its core. Evenly spaced requests spread the events over time,
    # which costs more CPU per event than a closed loop whose streams run in step.
    events_per_request = args.tokens
    steps: list[dict[str, Any]] = []
    if args.capacity is not None:
        capacity_events_per_s = args.capacity  # from an earlier calibration, for comparable runs
    else:
        rate_per_s = args.calibration_start_rps
        while True:
            records.clear()
            wall_s, cpu_s, _simulator_cpu_s, _cpu_total_s = open_loop(rate_per_s, args.calibration_s)
            events = sum(record[CHUNKS] for record in records)
            cpu_fraction = cpu_s / wall_s if wall_s > 0 else 0.0
            steps.append({"requests_per_s": round(rate_per_s, 1), "events_per_s": round(events / wall_s), "cpu_percent": round(100.0 * cpu_fraction, 1)})
            print(f"calibration step: {steps[-1]}", file=sys.stderr)
            if cpu_fraction >= args.calibration_cpu or len(steps) >= 8:
                break
            rate_per_s *= min(2.0, max(1.1, args.calibration_cpu / max(cpu_fraction, 0.01)))
        # Linear extrapolation from the last step, which is still below saturation: an overloaded
        # generator reads several events per wake-up and would show a lower, misleading CPU per event.
        capacity_events_per_s = events / wall_s / cpu_fraction if cpu_fraction > 0 and wall_s > 0 else 0.0
    if capacity_events_per_s <= 0:
        raise SystemExit("calibration read no events: lengthen --calibration-s")
    calibration = {"steps": steps, "capacity_events_per_cpu_s": round(capacity_events_per_s)}

    # 2. Levels.
    levels: list[dict[str, Any]] = []
    for fraction in args.levels:
        sim("/sim/reset", post=True)
        records.clear()
        gc_pauses_s.clear()
        rate_per_s = fraction * capacity_events_per_s / events_per_request
        wall_s, cpu_s, simulator_cpu_s, _cpu_total_s = open_loop(rate_per_s, args.level_s)
        stats = sim("/sim/stats")
        levels.append(compare(fraction, rate_per_s, records, stats, wall_s, cpu_s, benchlib.percentile))
        levels[-1]["gc_pauses"] = len(gc_pauses_s)
        levels[-1]["gc_pause_max_ms"] = round(1000.0 * max(gc_pauses_s, default=0.0), 3)
        levels[-1]["simulator_cpu_percent"] = round(100.0 * simulator_cpu_s / wall_s, 1) if wall_s > 0 else None
        print(f"level {fraction}: {levels[-1]}", file=sys.stderr)
    writer.close()
    client.close()
    folder.cleanup()
    return {"calibration": calibration, "levels": levels}


FIELDS = ("request_id", "outcome", "started_at", "ttft_s", "e2e_s", "input_tokens", "output_tokens", "chunks")
CHUNKS = FIELDS.index("chunks")


def compact(record: Any) -> tuple[Any, ...]:
    """Return the fields of a record the comparison uses, in FIELDS order."""
    return tuple(record[name] for name in FIELDS)


def compare(fraction: float, rate_per_s: float, rows: list[tuple[Any, ...]], stats: dict[str, Any], wall_s: float, cpu_s: float, percentile: Any) -> dict[str, Any]:
    """Match records with server entries by request id and summarise the differences in ms."""
    truth = {entry["request_id"]: entry for entry in stats["requests"]}
    ttft_diff_ms: list[float] = []
    e2e_diff_ms: list[float] = []
    send_to_arrival_ms: list[float] = []
    write_to_read_ms: list[float] = []
    ok_tokens = 0
    records = [dict(zip(FIELDS, row)) for row in rows]
    for record in records:
        if record["outcome"] != "ok":
            continue
        ok_tokens += (record["input_tokens"] or 0) + (record["output_tokens"] or 0)
        entry = truth.get(record["request_id"])
        if entry is None or entry["first_token_at"] is None or entry["finished_at"] is None:
            continue
        ttft_diff_ms.append(1000.0 * (record["ttft_s"] - (entry["first_token_at"] - entry["arrived_at"])))
        e2e_diff_ms.append(1000.0 * (record["e2e_s"] - (entry["finished_at"] - entry["arrived_at"])))
        # The TTFT difference split by wall clock (one machine, one clock): request path and response path.
        send_to_arrival_ms.append(1000.0 * (entry["arrived_at"] - record["started_at"]))
        write_to_read_ms.append(1000.0 * (record["started_at"] + record["ttft_s"] - entry["first_token_at"]))
    totals = stats["totals"]
    sim_tokens = totals["input_tokens"] + totals["output_tokens"]

    def summary(values: list[float]) -> dict[str, float | None]:
        return {name: None if (value := percentile(values, share)) is None else round(value, 3) for name, share in (("p1", 0.01), ("p50", 0.5), ("p99", 0.99), ("max", 1.0))}

    return {
        "fraction": fraction,
        "offered_requests_per_s": round(rate_per_s, 2),
        "requests": len(records),
        "ok": sum(record["outcome"] == "ok" for record in records),
        "matched": len(ttft_diff_ms),
        "generator_cpu_percent": round(100.0 * cpu_s / wall_s, 1) if wall_s > 0 else None,
        "ttft_diff_ms": summary(ttft_diff_ms),
        "e2e_diff_ms": summary(e2e_diff_ms),
        "send_to_arrival_ms": summary(send_to_arrival_ms),
        "first_token_write_to_read_ms": summary(write_to_read_ms),
        "ok_tokens_ours": ok_tokens,
        "tokens_simulator": sim_tokens,
        "token_count_diff_percent": round(100.0 * (ok_tokens - sim_tokens) / sim_tokens, 3) if sim_tokens else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="0.25,0.5,0.75,0.9", help="fractions of the calibrated generator capacity")
    parser.add_argument("--level-s", type=float, default=10.0, help="seconds of arrivals per level")
    parser.add_argument("--capacity", type=float, metavar="EVENTS_PER_S", help="skip calibration and use this capacity (events per CPU-second), e.g. from an earlier run")
    parser.add_argument("--calibration-s", type=float, default=3.0, help="seconds of each calibration step")
    parser.add_argument("--calibration-start-rps", type=float, default=100.0, help="requests per second of the first calibration step")
    parser.add_argument("--calibration-cpu", type=float, default=0.7, help="generator CPU share (of one core) at which calibration stops")
    parser.add_argument("--tokens", type=int, default=50, help="output tokens (= events) per request")
    parser.add_argument("--speed-tps", type=float, default=100.0, help="simulated generation speed, tokens/s")
    parser.add_argument("--ttft-ms", type=float, default=50.0, help="simulated time to first token, ms")
    parser.add_argument(
        "--gc-freeze", action=argparse.BooleanOptionalAction, default=True,
        help="call gc.freeze() in the generator after setup, as the Locust side does (default: on)",
    )
    parser.add_argument("--out", type=Path, help="result JSON (default bench/results/fidelity.json)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--sim-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.levels = [float(value) for value in str(args.levels).split(",") if value.strip()]

    if args.child:
        print(json.dumps(run_child(args)))
        return

    import benchlib

    output = benchlib.header(sys.argv)
    benchlib.print_machine(output["machine"])
    settings = simulator_settings(args.ttft_ms, args.speed_tps, args.tokens)
    output["simulator_settings"] = settings
    with benchlib.SimulatorProcess(settings) as simulator:
        argv = [
            __file__, "--child", "--base-url", simulator.base_url, "--sim-pid", str(simulator.process.pid), "--levels", ",".join(map(str, args.levels)), "--level-s", str(args.level_s),
            "--calibration-s", str(args.calibration_s), "--calibration-start-rps", str(args.calibration_start_rps), "--calibration-cpu", str(args.calibration_cpu), "--tokens", str(args.tokens), "--gc-freeze" if args.gc_freeze else "--no-gc-freeze",
            *(["--capacity", str(args.capacity)] if args.capacity is not None else []),
        ]
        cpu_before = simulator.cpu_seconds()
        result = benchlib.run_child(argv, benchlib.GENERATOR_CORE, timeout_s=args.calibration_s + len(args.levels) * (args.level_s + 130) + 60)
        output["simulator_cpu_percent_avg"] = round(100.0 * (simulator.cpu_seconds() - cpu_before) / result["child_wall_s"], 1)
    output.update(result)
    print(f"capacity: {result['calibration']['capacity_events_per_cpu_s']:,} events per CPU-second ({len(result['calibration']['steps'])} calibration steps)")
    print("level  cpu%  sim%   req    ttft diff p50/p99 ms   e2e diff p50/p99 ms   tokens ours/sim diff %")
    for level in result["levels"]:
        print(
            f"{level['fraction']:5.2f} {level['generator_cpu_percent']:5.1f} {level['simulator_cpu_percent']:5.1f} {level['requests']:5d}   "
            f"{level['ttft_diff_ms']['p50']:8.3f} / {level['ttft_diff_ms']['p99']:8.3f}   "
            f"{level['e2e_diff_ms']['p50']:8.3f} / {level['e2e_diff_ms']['p99']:8.3f}   {level['token_count_diff_percent']}"
        )
    benchlib.write_result("fidelity", output, args.out)


if __name__ == "__main__":
    main()

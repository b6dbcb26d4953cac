"""Measure how many concurrent streams and SSE events per second the simulator serves on one core.

Starts ``ptu-verify simulate`` as a subprocess pinned to one core, opens
STREAMS concurrent streaming requests from this process (pinned to another core) with plain asyncio sockets, counts the
events received and samples the server's CPU use. Prints one JSON line with the figures.

    python bench/bench_simulator.py --streams 2000 --speed-tps 30 --tokens 300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from pathlib import Path

import psutil

CHAT_PATH = "/compatible-mode/v1/chat/completions"
# With two or more cores the server and this client each get a core of their own.
SERVER_CORE = 1
READ_INTERVAL_S = 0.1
CLIENT_CORE = 0


def pin_to(core: int) -> None:
    """Pin the calling process to ``core`` when the machine has more than one usable core."""
    if not hasattr(os, "sched_setaffinity"):
        return
    available = os.sched_getaffinity(0)
    if core in available and len(available) > 1:
        os.sched_setaffinity(0, {core})


async def one_stream(host: str, port: int, body: bytes, counts: list[int], first_event_s: list[float], per_second: dict[int, int], start: float) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    request = (
        f"POST {CHAT_PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    sent = time.perf_counter()
    writer.write(request)
    await writer.drain()
    events = 0
    while True:
        data = await reader.read(65536)
        if not data:
            break
        if events == 0 and b"data: " in data:
            first_event_s.append(time.perf_counter() - sent)
        received = data.count(b"data: ")
        events += received
        second = int(time.perf_counter() - start)
        per_second[second] = per_second.get(second, 0) + received
        # Reading at most every READ_INTERVAL_S lets events pile up in the socket buffer, so the
        # client makes far fewer reads than the server makes writes and does not limit the rate.
        await asyncio.sleep(READ_INTERVAL_S)
    writer.close()
    counts.append(events)


async def sample_cpu(server: psutil.Process, start_at_s: float, end_at_s: float, result: dict[str, float]) -> None:
    """Store the server's CPU use (percent of one core) between two offsets from now."""
    await asyncio.sleep(start_at_s)
    server.cpu_percent(None)
    await asyncio.sleep(max(0.5, end_at_s - start_at_s))
    result["plateau_server_cpu_percent"] = server.cpu_percent(None)


async def drive(host: str, port: int, streams: int, ramp_s: float, tokens: int, speed_tps: float, server: psutil.Process | None = None) -> dict[str, float]:
    body = json.dumps({"model": "qwen-turbo-bench", "messages": [{"role": "user", "content": "hi"}], "max_tokens": tokens, "stream": True}).encode()
    counts: list[int] = []
    first_event_s: list[float] = []
    per_second: dict[int, int] = {}
    cpu: dict[str, float] = {}
    tasks = []
    if server is not None:
        tasks.append(asyncio.create_task(sample_cpu(server, ramp_s + 1.0, ramp_s + tokens / speed_tps - 0.5, cpu)))
    start = time.perf_counter()
    for index in range(streams):
        delay = start + ramp_s * index / streams - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one_stream(host, port, body, counts, first_event_s, per_second, start)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    first_event_s.sort()
    # Whole seconds after every stream had started and before the first one finished: the full-load plateau.
    plateau = [per_second.get(second, 0) for second in range(int(ramp_s) + 1, int(tokens / speed_tps))]
    return {
        **cpu,
        "plateau_events_per_s": sum(plateau) / len(plateau) if plateau else float("nan"),
        "elapsed_s": elapsed,
        "events": float(sum(counts)),
        "completed_streams": float(len(counts)),
        "first_event_p50_s": first_event_s[len(first_event_s) // 2] if first_event_s else float("nan"),
        "first_event_p99_s": first_event_s[int(len(first_event_s) * 0.99)] if first_event_s else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="1000,2000,3000,4000", help="comma-separated concurrent stream counts, one run each")
    parser.add_argument("--speed-tps", type=float, default=30.0, help="generation speed per stream, tokens/s (one event per token)")
    parser.add_argument("--tokens", type=int, default=300, help="output tokens per stream")
    parser.add_argument("--ramp-s", type=float, default=2.0, help="seconds over which the streams start")
    parser.add_argument("--out", type=Path, help="result JSON (default bench/results/simulator.json)")
    args = parser.parse_args()

    import benchlib

    benchlib.pin_to(benchlib.GENERATOR_CORE)  # the driver; the simulator gets the other core
    output = benchlib.header(sys.argv)
    benchlib.print_machine(output["machine"])
    levels = []
    for streams in [int(value) for value in args.streams.split(",") if value.strip()]:
        settings = {
            "capacity_factor": 1000.0, "enforce_qpm": False, "speed_tps": args.speed_tps, "speed_jitter": 0.0,
            "ttft_base_s": 0.05, "prefill_s_per_token": 0.0, "concurrency_knee": streams * 2, "natural_length_fixed": args.tokens,
        }
        with benchlib.SimulatorProcess(settings) as simulator:
            host, port = simulator.base_url.removeprefix("http://").rsplit(":", 1)
            server = psutil.Process(simulator.process.pid)
            result = asyncio.run(drive(host, int(port), streams, args.ramp_s, args.tokens, args.speed_tps, server))
        # Each stream gets a role chunk, `tokens` content chunks and a finish chunk (plus [DONE]).
        ideal_s = args.ramp_s + 0.05 + args.tokens / args.speed_tps
        figures = {
            "streams": streams,
            "speed_tps": args.speed_tps,
            "tokens_per_stream": args.tokens,
            "completed_streams": int(result["completed_streams"]),
            "events": int(result["events"]),
            "elapsed_s": round(result["elapsed_s"], 2),
            "ideal_elapsed_s": round(ideal_s, 2),
            "events_per_s_overall": round(result["events"] / result["elapsed_s"]),
            "plateau_events_per_s": None if math.isnan(result["plateau_events_per_s"]) else round(result["plateau_events_per_s"]),
            "peak_offered_events_per_s": round(streams * args.speed_tps),
            "plateau_server_cpu_percent": round(result.get("plateau_server_cpu_percent", float("nan")), 1),
            "first_event_p50_s": round(result["first_event_p50_s"], 3),
            "first_event_p99_s": round(result["first_event_p99_s"], 3),
        }
        # Kept up: every stream completed and the plateau delivered at least 95 % of the offered events.
        plateau = figures["plateau_events_per_s"]
        figures["kept_up"] = figures["completed_streams"] == streams and plateau is not None and plateau >= 0.95 * figures["peak_offered_events_per_s"]
        levels.append(figures)
        print(json.dumps(figures))
    kept = [level for level in levels if level["kept_up"]]
    output["settings"] = {"speed_tps": args.speed_tps, "tokens": args.tokens, "ramp_s": args.ramp_s}
    output["levels"] = levels
    output["max_streams_kept_up"] = max((level["streams"] for level in kept), default=None)
    output["max_plateau_events_per_s"] = max((level["plateau_events_per_s"] or 0 for level in levels), default=None)
    print(f"max concurrent streams kept up: {output['max_streams_kept_up']}; max plateau events/s: {output['max_plateau_events_per_s']}")
    benchlib.write_result("simulator", output, args.out)


if __name__ == "__main__":
    main()

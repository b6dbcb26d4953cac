"""Measure how many concurrent streams and SSE events per second the simulator serves on one core.

Starts ``ptu-verify simulate`` as a subprocess (one process, so one core for the server), opens
STREAMS concurrent streaming requests from this process with plain asyncio sockets, counts the
events received and samples the server's CPU use. Prints one JSON line with the figures.

    python bench/bench_simulator.py --streams 2000 --speed-tps 30 --tokens 300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

CHAT_PATH = "/compatible-mode/v1/chat/completions"


def start_server(config_path: Path) -> tuple[subprocess.Popen[str], str, int]:
    command = [
        sys.executable, "-c", "import sys; from ptu_verify.cli import main; sys.exit(main())",
        "simulate", "--model", "qwen-turbo-2025-04-28", "--ptu", "4", "--deployment-code", "qwen-turbo-bench",
        "--config", str(config_path),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("Listening on "):
        process.kill()
        raise SystemExit(f"simulator did not start: {line!r}")
    url = line.split()[-1]
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return process, host, int(port)


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
    # Seconds when every stream had started and none had finished: the full-load plateau.
    plateau = [per_second.get(second, 0) for second in range(int(ramp_s) + 1, int(ramp_s + tokens / speed_tps))]
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
    parser.add_argument("--streams", type=int, default=2000, help="concurrent streams")
    parser.add_argument("--speed-tps", type=float, default=30.0, help="generation speed per stream, tokens/s (one event per token)")
    parser.add_argument("--tokens", type=int, default=300, help="output tokens per stream")
    parser.add_argument("--ramp-s", type=float, default=2.0, help="seconds over which the streams start")
    args = parser.parse_args()

    settings = (
        f"capacity_factor = 1000.0\nenforce_qpm = false\nspeed_tps = {args.speed_tps}\nspeed_jitter = 0.0\n"
        f"ttft_base_s = 0.05\nprefill_s_per_token = 0.0\nconcurrency_knee = {args.streams * 2}\nnatural_length_fixed = {args.tokens}\n"
    )
    with tempfile.TemporaryDirectory() as folder:
        config_path = Path(folder) / "bench.toml"
        config_path.write_text(settings)
        process, host, port = start_server(config_path)
        try:
            server = psutil.Process(process.pid)
            result = asyncio.run(drive(host, port, args.streams, args.ramp_s, args.tokens, args.speed_tps, server))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(15)

    # Each stream gets a role chunk, `tokens` content chunks and a finish chunk (plus [DONE]).
    ideal_s = args.ramp_s + 0.05 + args.tokens / args.speed_tps
    figures = {
        "streams": args.streams,
        "speed_tps": args.speed_tps,
        "tokens_per_stream": args.tokens,
        "completed_streams": int(result["completed_streams"]),
        "events": int(result["events"]),
        "elapsed_s": round(result["elapsed_s"], 2),
        "ideal_elapsed_s": round(ideal_s, 2),
        "events_per_s_overall": round(result["events"] / result["elapsed_s"]),
        "plateau_events_per_s": round(result["plateau_events_per_s"]),
        "peak_offered_events_per_s": round(args.streams * args.speed_tps),
        "plateau_server_cpu_percent": round(result.get("plateau_server_cpu_percent", float("nan")), 1),
        "first_event_p50_s": round(result["first_event_p50_s"], 3),
        "first_event_p99_s": round(result["first_event_p99_s"], 3),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

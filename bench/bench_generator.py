"""Generator capacity per core: streamed SSE events/s and requests/s of our clients against a reference.

The simulator runs in its own process on core 1, set up so it is not the bottleneck. It has no limits
(capacity × 1e6, no QPM check), zero TTFT and a speed of 1e6 tokens/s, so every stream is written as
fast as the server can format it. The output length is fixed (--tokens, one token per SSE event). Each client
runs in a child process on core 0, one after the other, closed-loop with --concurrency requests in
flight, for a warm-up and then --duration measured seconds:

- ``fast-openai``, ``fast-dashscope``, ``sdk-openai``, ``sdk-dashscope``: loadtest.client.StreamClient
  in a gevent-patched process (as in a Locust worker); every attempt is reported to Locust's request
  events (a local runner's stats listen) and written by the Locust side's JsonlWriter to records.jsonl.
- ``ref-openai``, ``ref-dashscope``: a plain aiohttp asyncio loop with the same request bytes that
  reads the stream line by line and json-parses every data line; nothing is recorded.

Events are token-carrying SSE events (role, finish and usage events are read but not counted).
Events per CPU-second divides by the child's own CPU time, so a child that did not fill its core
is not penalised. The ratio is ours / the reference of the same API.

    python bench/bench_generator.py --duration 10 --concurrency 32 --tokens 200
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CLIENTS = ("ref-openai", "fast-openai", "sdk-openai", "ref-dashscope", "fast-dashscope", "sdk-dashscope")
FAKE_KEY = "sk-test-fake-0000"


def cpu_seconds() -> float:
    """Return the CPU time of this process (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def simulator_settings(tokens: int, concurrency: int) -> dict[str, Any]:
    """Simulator settings under which it serves as fast as it can: no limits, no latency, fixed length."""
    return {
        "capacity_factor": 1e6,
        "enforce_qpm": False,
        "ttft_base_s": 0.0,
        "prefill_s_per_token": 0.0,
        "speed_tps": 1e6,
        "speed_jitter": 0.0,
        "concurrency_knee": max(1000, concurrency * 4),
        "natural_length_fixed": tokens,
        "tokens_per_chunk": 1,
        "prompt_cache": False,
    }


# -- child: our client


def run_ours(api: str, transport: str, base_url: str, deployment_code: str, tokens: int, concurrency: int, warmup_s: float, duration_s: float) -> dict[str, Any]:
    """Closed loop with StreamClient + Locust request events + JsonlWriter; return counts over the measured window."""
    from gevent import monkey

    monkey.patch_all()
    import gevent
    from locust.env import Environment

    from loadtest.client import ClientConfig, StreamClient
    from loadtest.recorder import JsonlWriter
    from loadtest.users import fire_request_events
    from ptu_verify.requests import RequestSpec

    environment = Environment(user_classes=[])
    environment.create_local_runner()  # its stats listen to the request events, as in a Locust worker
    config = ClientConfig(
        api=api,  # type: ignore[arg-type]
        transport=transport,  # type: ignore[arg-type]
        base_url=base_url,
        deployment_code=deployment_code,
        api_key=FAKE_KEY,
        run_id="bench",
        worker_id="w0",
        connection_pool_size=concurrency + 8,
        request_timeout_s=60.0,
    )
    client = StreamClient(config)
    spec = RequestSpec(messages=[{"role": "user", "content": "Say something long."}], max_tokens=tokens, workload="bench", variant="default")
    folder = tempfile.TemporaryDirectory(prefix="ptu-bench-gen-")
    writer = JsonlWriter(Path(folder.name) / "records.jsonl")
    gc.freeze()  # as loadtest/runtime.py does once the load session is set up
    totals = {"requests": 0, "events": 0, "ok": 0}
    snapshots: dict[str, tuple[float, float, dict[str, int]]] = {}
    start = time.perf_counter()
    stop_at = start + warmup_s + duration_s

    def user() -> None:
        while time.perf_counter() < stop_at:
            records = client.send(spec, stage="bench")
            for record in records:
                fire_request_events(environment.events, record)
                totals["requests"] += 1
                totals["events"] += record["chunks"]
                totals["ok"] += record["outcome"] == "ok"
            writer.write(records)

    def mark(name: str, at_s: float) -> None:
        gevent.sleep(max(0.0, start + at_s - time.perf_counter()))
        snapshots[name] = (time.perf_counter(), cpu_seconds(), dict(totals))

    users = [gevent.spawn(user) for _ in range(concurrency)]
    gevent.joinall([gevent.spawn(mark, "begin", warmup_s), gevent.spawn(mark, "end", warmup_s + duration_s)])
    gevent.joinall(users, timeout=120)
    writer.close()
    client.close()
    lines = sum(1 for _ in (Path(folder.name) / "records.jsonl").open("rb"))
    folder.cleanup()
    result = window(snapshots)
    result["records_written"] = lines
    result["records_total"] = totals["requests"]
    return result


# -- child: reference client


def run_reference(api: str, base_url: str, deployment_code: str, tokens: int, concurrency: int, warmup_s: float, duration_s: float) -> dict[str, Any]:
    """Closed loop with plain aiohttp: read lines, json.loads every data line, count token events."""
    import asyncio

    import aiohttp

    from loadtest.protocol import build_request

    prepared = build_request(
        api,  # type: ignore[arg-type]
        base_url=base_url,
        deployment_code=deployment_code,
        messages=[{"role": "user", "content": "Say something long."}],
        max_tokens=tokens,
        api_key=FAKE_KEY,
        thinking=None,
    )
    body = prepared.body_bytes()
    totals = {"requests": 0, "events": 0, "ok": 0}
    snapshots: dict[str, tuple[float, float, dict[str, int]]] = {}

    def has_token(event: dict[str, Any]) -> bool:
        if api == "openai":
            choices = event.get("choices") or []
            return bool(choices and (choices[0].get("delta") or {}).get("content"))
        choices = (event.get("output") or {}).get("choices") or []
        return bool(choices and (choices[0].get("message") or {}).get("content"))

    async def user(session: aiohttp.ClientSession, stop_at: float) -> None:
        while time.perf_counter() < stop_at:
            events = 0
            done = False
            async with session.post(prepared.url, data=body, headers=prepared.headers) as response:
                async for line in response.content:
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        done = True
                        continue
                    event = json.loads(payload)
                    if has_token(event):
                        events += 1
                    if api == "dashscope" and (event.get("output") or {}).get("choices", [{}])[0].get("finish_reason") not in (None, "null"):
                        done = True
            totals["requests"] += 1
            totals["events"] += events
            totals["ok"] += done and response.status == 200

    async def mark(name: str, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        snapshots[name] = (time.perf_counter(), cpu_seconds(), dict(totals))

    async def main() -> None:
        start = time.perf_counter()
        stop_at = start + warmup_s + duration_s
        connector = aiohttp.TCPConnector(limit=concurrency + 8)
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(mark("begin", start + warmup_s), mark("end", stop_at), *(user(session, stop_at) for _ in range(concurrency)))

    asyncio.run(main())
    return window(snapshots)


def window(snapshots: dict[str, tuple[float, float, dict[str, int]]]) -> dict[str, Any]:
    """Return rates over the measured window between the begin and end snapshots."""
    begin_at, begin_cpu, begin = snapshots["begin"]
    end_at, end_cpu, end = snapshots["end"]
    wall_s = end_at - begin_at
    cpu_s = end_cpu - begin_cpu
    events = end["events"] - begin["events"]
    requests = end["requests"] - begin["requests"]
    return {
        "wall_s": round(wall_s, 3),
        "cpu_s": round(cpu_s, 3),
        "cpu_percent": round(100.0 * cpu_s / wall_s, 1),
        "requests": requests,
        "ok": end["ok"] - begin["ok"],
        "events": events,
        "events_per_s": round(events / wall_s),
        "requests_per_s": round(requests / wall_s, 1),
        "events_per_cpu_s": round(events / cpu_s) if cpu_s > 0 else None,
        "requests_per_cpu_s": round(requests / cpu_s, 1) if cpu_s > 0 else None,
    }


# -- parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per client")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds per client before measuring")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight per client")
    parser.add_argument("--tokens", type=int, default=200, help="output tokens (= token events) per request")
    parser.add_argument("--clients", default=",".join(CLIENTS), help=f"comma-separated subset of {', '.join(CLIENTS)}")
    parser.add_argument("--out", type=Path, help="result JSON (default bench/results/generator.json)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        kind, api = args.child.split("-")
        if kind == "ref":
            result = run_reference(api, args.base_url, "qwen-turbo-bench", args.tokens, args.concurrency, args.warmup, args.duration)
        else:
            result = run_ours(api, kind, args.base_url, "qwen-turbo-bench", args.tokens, args.concurrency, args.warmup, args.duration)
        print(json.dumps(result))
        return

    import benchlib

    output = benchlib.header(sys.argv)
    benchlib.print_machine(output["machine"])
    clients = [name.strip() for name in args.clients.split(",") if name.strip()]
    unknown = sorted(set(clients) - set(CLIENTS))
    if unknown:
        raise SystemExit(f"unknown client {unknown[0]!r}; choose from {', '.join(CLIENTS)}")
    settings = simulator_settings(args.tokens, args.concurrency)
    output.update({"simulator_settings": settings, "concurrency": args.concurrency, "tokens_per_request": args.tokens, "duration_s": args.duration, "warmup_s": args.warmup})
    results: dict[str, Any] = {}
    with benchlib.SimulatorProcess(settings) as simulator:
        for client in clients:
            api = client.split("-")[1]
            base_url = simulator.openai_url if api == "openai" else simulator.dashscope_url
            argv = [__file__, "--child", client, "--base-url", base_url, "--tokens", str(args.tokens), "--concurrency", str(args.concurrency), "--duration", str(args.duration), "--warmup", str(args.warmup)]
            simulator_cpu_before = simulator.cpu_seconds()
            result = benchlib.run_child(argv, benchlib.GENERATOR_CORE, timeout_s=args.warmup + args.duration + 180)
            result["simulator_cpu_percent_avg"] = round(100.0 * (simulator.cpu_seconds() - simulator_cpu_before) / result["child_wall_s"], 1)
            results[client] = result
            print(f"{client:15s} {result['events_per_s']:>8,} events/s {result['requests_per_s']:>7,.1f} req/s  cpu {result['cpu_percent']:5.1f} %  {result['events_per_cpu_s'] or 0:>8,} events/cpu-s  (simulator {result['simulator_cpu_percent_avg']:.0f} % of its core)")

    ratios: dict[str, Any] = {}
    for client, result in results.items():
        kind, api = client.split("-")
        reference = results.get(f"ref-{api}")
        if kind == "ref" or reference is None:
            continue
        ratios[client] = {
            "events_per_s": round(result["events_per_s"] / reference["events_per_s"], 3) if reference["events_per_s"] else None,
            "events_per_cpu_s": round(result["events_per_cpu_s"] / reference["events_per_cpu_s"], 3) if reference["events_per_cpu_s"] else None,
        }
        print(f"{client:15s} ours/reference: {ratios[client]['events_per_s']} (events/s), {ratios[client]['events_per_cpu_s']} (events per CPU-second)")
    output["results"] = results
    output["ratio_to_reference"] = ratios
    benchlib.write_result("generator", output, args.out)


if __name__ == "__main__":
    main()

"""Records checked against the simulator's ground truth (/sim/stats) for both APIs and both transports."""

from __future__ import annotations

import json
import select
import signal
import statistics
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from loadtest.client import ClientConfig, StreamClient
from ptu_verify.records import RequestRecord
from ptu_verify.requests import RequestSpec

pytest.importorskip("ptu_verify.simulator", reason="the simulator package is not importable yet")

# Scheduling noise on a busy machine is one-sided and occasional, so the median difference must be
# within 5 ms and every single one within 20 ms. Counting the role chunk as the first token would be
# off by the simulator's whole TTFT (50 ms here) and fail both.
TTFT_MEDIAN_TOLERANCE_S = 0.005
TTFT_MAX_TOLERANCE_S = 0.020
ROUNDS = 2
START_TIMEOUT_S = 30.0
SPECS = [
    RequestSpec(messages=[{"role": "user", "content": "用一句话介绍杭州。"}], max_tokens=24),
    RequestSpec(messages=[{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name three rivers."}], max_tokens=16),
    RequestSpec(messages=[{"role": "user", "content": "Count to five."}], max_tokens=12, thinking=True),
]

# The simulator runs in its own process: in this process its timestamps would wait for the GIL
# whenever the client holds it, which shifts its ground truth by milliseconds on a busy machine.
SERVE = """
import sys
from ptu_verify.simulator import SimulatorConfig, serve_forever
config = SimulatorConfig.for_model("qwen-plus-2025-04-28", ptu=8, deployment_code="qwen-plus-test",
                                   seed=7, ttft_base_s=0.05, speed_tps=400.0)
serve_forever(config, lambda url: print(url, flush=True))
"""


class SimulatorProcess:
    """A simulator subprocess and its base URL."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", SERVE], stdout=subprocess.PIPE, text=True)
        self.base_url = self._read_url()

    def _read_url(self) -> str:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], START_TIMEOUT_S)
        if not ready:
            self.process.kill()
            pytest.fail(f"the simulator printed no URL within {START_TIMEOUT_S} s")
        line = self.process.stdout.readline().strip()
        if not line.startswith("http://"):
            self.process.kill()
            pytest.fail(f"the simulator did not start, it printed {line!r}")
        return line

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.base_url + "/sim/stats", timeout=10) as response:
            result: dict[str, Any] = json.load(response)
        return result

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    running = SimulatorProcess()
    yield running
    running.stop()


@pytest.mark.parametrize("transport", ["fast", "sdk"])
@pytest.mark.parametrize("api", ["openai", "dashscope"])
def test_records_match_simulator_stats(sim: SimulatorProcess, api: str, transport: str) -> None:
    base_url = sim.base_url + ("/compatible-mode/v1" if api == "openai" else "/api/v1")
    client = StreamClient(ClientConfig(api=api, transport=transport, base_url=base_url, deployment_code="qwen-plus-test", request_timeout_s=30.0))  # type: ignore[arg-type]
    records: list[RequestRecord] = []
    try:
        # The first request also opens the connection and runs gevent's first DNS lookup. The client's
        # TTFT includes that and the server's cannot, so only the first request's tokens are checked.
        [warmup] = client.send(SPECS[0])
        for _ in range(ROUNDS):
            for spec in SPECS:
                records.extend(client.send(spec))
    finally:
        client.close()

    entries = {entry["request_id"]: entry for entry in sim.stats()["requests"]}
    assert warmup["outcome"] == "ok"
    assert warmup["output_tokens"] == entries[warmup["request_id"]]["output_tokens"]
    assert len(records) == ROUNDS * len(SPECS)
    differences_s = []
    for record in records:
        assert record["outcome"] == "ok", record
        entry = entries[record["request_id"]]
        assert record["output_tokens"] == entry["output_tokens"]
        assert record["input_tokens"] == entry["input_tokens"]
        assert (record["reasoning_tokens"] or 0) == entry["reasoning_tokens"]  # None: usage had no reasoning detail
        assert record["tokens_estimated"] is False
        assert record["ttft_s"] is not None
        differences_s.append(abs(record["ttft_s"] - (entry["first_token_at"] - entry["arrived_at"])))
    assert statistics.median(differences_s) <= TTFT_MEDIAN_TOLERANCE_S, differences_s
    assert max(differences_s) <= TTFT_MAX_TOLERANCE_S, differences_s

    thinking = records[2]
    assert thinking["reasoning_tokens"], "the thinking request produced no reasoning tokens"
    assert thinking["ttfa_s"] is not None
    assert thinking["ttft_s"] is not None
    assert thinking["ttfa_s"] > thinking["ttft_s"]

"""Records checked against the simulator's ground truth (/sim/stats) for both APIs and both transports."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from loadtest.client import ClientConfig, StreamClient
from ptu_verify.records import RequestRecord
from ptu_verify.requests import RequestSpec

simulator = pytest.importorskip("ptu_verify.simulator", reason="the simulator package is not importable yet")

TTFT_TOLERANCE_S = 0.005
REQUESTS_PER_COMBINATION = 3
SPECS = [
    RequestSpec(messages=[{"role": "user", "content": "用一句话介绍杭州。"}], max_tokens=24),
    RequestSpec(messages=[{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name three rivers."}], max_tokens=16),
    RequestSpec(messages=[{"role": "user", "content": "Count to five."}], max_tokens=12, thinking=True),
]


@pytest.fixture(scope="module")
def sim() -> Iterator[Any]:
    config = simulator.SimulatorConfig.for_model("qwen-plus-2025-04-28", ptu=8, deployment_code="qwen-plus-test", seed=7, ttft_base_s=0.05, speed_tps=400.0)
    with simulator.start_simulator(config) as running:
        yield running


@pytest.mark.parametrize("transport", ["fast", "sdk"])
@pytest.mark.parametrize("api", ["openai", "dashscope"])
def test_records_match_simulator_stats(sim: Any, api: str, transport: str) -> None:
    base_url = sim.openai_base_url if api == "openai" else sim.dashscope_base_url
    client = StreamClient(ClientConfig(api=api, transport=transport, base_url=base_url, deployment_code="qwen-plus-test", request_timeout_s=30.0))  # type: ignore[arg-type]
    records: list[RequestRecord] = []
    try:
        # The first request also opens the connection and runs gevent's first DNS lookup. The client's
        # TTFT includes that and the server's cannot, so only the first request's tokens are checked.
        [warmup] = client.send(SPECS[0])
        for spec in SPECS[:REQUESTS_PER_COMBINATION]:
            records.extend(client.send(spec))
    finally:
        client.close()

    entries = {entry["request_id"]: entry for entry in sim.stats()["requests"]}
    assert warmup["outcome"] == "ok"
    assert warmup["output_tokens"] == entries[warmup["request_id"]]["output_tokens"]
    assert len(records) == REQUESTS_PER_COMBINATION
    for record in records:
        assert record["outcome"] == "ok", record
        entry = entries[record["request_id"]]
        assert record["output_tokens"] == entry["output_tokens"]
        assert record["input_tokens"] == entry["input_tokens"]
        assert (record["reasoning_tokens"] or 0) == entry["reasoning_tokens"]  # None: usage had no reasoning detail
        assert record["tokens_estimated"] is False
        server_ttft_s = entry["first_token_at"] - entry["arrived_at"]
        assert record["ttft_s"] is not None
        assert abs(record["ttft_s"] - server_ttft_s) <= TTFT_TOLERANCE_S, (record["ttft_s"], server_ttft_s)
    assert records[2]["reasoning_tokens"], "the thinking request produced no reasoning tokens"
    assert records[2]["ttfa_s"] is not None and records[2]["ttft_s"] is not None
    assert records[2]["ttfa_s"] > records[2]["ttft_s"]

"""Latency model, output lengths, ground-truth statistics and configuration."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import httpx
import openai
import pytest
from conftest import make_config
from openai import OpenAI

from ptu_verify.errors import InputError
from ptu_verify.simulator import SimulatorConfig, load_config_file, start_simulator
from ptu_verify.simulator.parse import ChatRequest
from ptu_verify.simulator.server import SimulatorState

MESSAGES = [{"role": "user", "content": "hi"}]


def chat_request(input_tokens: int = 1000, max_tokens: int | None = 200, thinking: bool = False) -> ChatRequest:
    return ChatRequest(
        model="qwen-plus-test",
        stream=True,
        max_tokens=max_tokens,
        thinking=thinking,
        include_usage=True,
        incremental=True,
        result_format="message",
        input_tokens=input_tokens,
        image_tokens=0,
        images=0,
    )


def test_ttft_is_base_plus_prefill_times_factor() -> None:
    state = SimulatorState(make_config(ttft_base_s=0.2, prefill_s_per_token=0.0001, ttft_factor=3.0))

    plan = state.plan(chat_request(input_tokens=1000), cached_tokens=400, faults=set())

    assert plan.ttft_s == pytest.approx((0.2 + 0.0001 * 600) * 3.0)


def test_speed_factor_and_knee() -> None:
    state = SimulatorState(make_config(speed_tps=50.0, speed_factor=0.5, concurrency_knee=10, ttft_base_s=0.2, prefill_s_per_token=0.0))
    below = state.plan(chat_request(), 0, set())
    state.active_requests = 30
    above = state.plan(chat_request(), 0, set())

    assert below.speed_tps == pytest.approx(25.0)
    assert below.ttft_s == pytest.approx(0.2)
    assert above.speed_tps == pytest.approx(25.0 / 3)
    assert above.ttft_s == pytest.approx(0.2 * 3)


def test_default_knee_from_capacity() -> None:
    config = SimulatorConfig.for_model("qwen-plus-2025-04-28", ptu=8)

    # 200,000 TPM = 3,333 tokens/s; at 60 tokens/s that is 56 concurrent streams.
    assert config.effective_knee == 56


def test_family_defaults_differ() -> None:
    turbo = SimulatorConfig.for_model("qwen-turbo-2025-04-28", ptu=4).latency
    maximum = SimulatorConfig.for_model("qwen-max-2025-01-25", ptu=16).latency

    assert turbo.speed_tps > maximum.speed_tps
    assert turbo.ttft_base_s < maximum.ttft_base_s


def test_natural_length_median_and_max_tokens_binding() -> None:
    state = SimulatorState(SimulatorConfig.for_model("qwen-plus-2025-04-28", ptu=8, seed=3))
    unbounded = [state.plan(chat_request(max_tokens=None), 0, set()).output_tokens for _ in range(2001)]
    bounded = [state.plan(chat_request(max_tokens=512), 0, set()) for _ in range(500)]

    assert 850 <= statistics.median(unbounded) <= 1150
    binding = [plan for plan in bounded if plan.finish_reason == "length"]
    assert len(binding) > 400
    assert all(plan.output_tokens == 512 for plan in binding)
    assert all(plan.output_tokens <= 512 for plan in bounded if plan.finish_reason == "stop")


def test_reasoning_share_of_output() -> None:
    state = SimulatorState(make_config(natural_length_fixed=100, reasoning_share=0.3))

    plan = state.plan(chat_request(max_tokens=None, thinking=True), 0, set())

    assert plan.output_tokens == 100
    assert plan.reasoning_tokens == 30


def test_stats_match_what_clients_saw() -> None:
    config = make_config(capacity_factor=0.002, enforce_qpm=False, natural_length_fixed=50, window_s=60.0)
    # Token budget: 200,000 × 0.002 = 400 tokens per minute; each request costs 9 + 50.
    with start_simulator(config) as sim:
        client = OpenAI(base_url=sim.openai_base_url, api_key="sk-test-fake", max_retries=0)
        seen: dict[str, tuple[int, int]] = {}
        for index in range(10):
            stream = index % 2 == 0
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model="qwen-plus-test",
                    messages=MESSAGES,  # type: ignore[arg-type]
                    max_tokens=60,
                    stream=stream,
                    stream_options={"include_usage": True} if stream else None,  # type: ignore[arg-type]
                )
            except openai.RateLimitError as error:
                seen[error.response.headers["x-request-id"]] = (429, 0)
                continue
            parsed = raw.parse()
            if stream:
                usage = next(chunk.usage for chunk in parsed if chunk.usage is not None)  # type: ignore[union-attr]
            else:
                usage = parsed.usage  # type: ignore[union-attr]
            seen[raw.headers["x-request-id"]] = (raw.status_code, usage.completion_tokens)
        stats = sim.stats()

    totals = stats["totals"]
    statuses = [status for status, _tokens in seen.values()]
    assert totals["requests"] == 10
    assert totals["ok"] == statuses.count(200) == 7
    assert totals["throttled"] == statuses.count(429) == 3
    assert totals["throttled_by_code"] == {"insufficient_quota": 3}
    assert totals["output_tokens"] == sum(tokens for _status, tokens in seen.values())
    assert totals["input_tokens"] == 9 * 7
    entries = {entry["request_id"]: entry for entry in stats["requests"]}
    assert set(entries) == set(seen)
    for request_id, (status, tokens) in seen.items():
        entry = entries[request_id]
        assert entry["status"] == status
        assert entry["output_tokens"] == tokens
        assert entry["arrived_at"] <= entry["finished_at"]
        if status == 200:
            assert entry["arrived_at"] <= entry["first_token_at"] <= entry["finished_at"]
    series = stats["series"]
    assert sum(row["output_tokens"] for row in series) == totals["output_tokens"]
    assert sum(row["admitted_requests"] for row in series) == 7
    assert sum(row["throttled"] for row in series) == 3


def test_reset_clears_stats_and_limiter() -> None:
    with start_simulator(make_config(capacity_factor=0.0005, enforce_qpm=False, natural_length_fixed=100)) as sim:
        body = {"model": "qwen-plus-test", "messages": MESSAGES, "max_tokens": 100}
        assert httpx.post(sim.openai_base_url + "/chat/completions", json=body).status_code == 200
        assert httpx.post(sim.openai_base_url + "/chat/completions", json=body).status_code == 429
        assert httpx.post(sim.base_url + "/sim/reset").status_code == 200
        assert httpx.post(sim.openai_base_url + "/chat/completions", json=body).status_code == 200
        stats = httpx.get(sim.base_url + "/sim/stats").json()
        health = httpx.get(sim.base_url + "/health").json()

    assert stats["totals"]["requests"] == 1
    assert health["status"] == "ok"


def test_unknown_knob_is_input_error() -> None:
    with pytest.raises(InputError, match="speed_tpz"):
        SimulatorConfig.for_model("qwen-plus-2025-04-28", ptu=8, speed_tpz=3)


def test_invalid_values_are_input_errors() -> None:
    with pytest.raises(InputError, match="capacity_factor"):
        SimulatorConfig.for_model("qwen-plus-2025-04-28", ptu=8, capacity_factor=0)
    with pytest.raises(InputError, match="nonsense"):
        SimulatorConfig.for_model("qwen-plus-2025-04-28", ptu=8, faults={"nonsense": 0.1})
    with pytest.raises(InputError, match="limiter"):
        SimulatorConfig.for_model("qwen-plus-2025-04-28", ptu=8, limiter="leaky")


def test_config_file_yaml_and_toml(tmp_path: Path) -> None:
    yaml_file = tmp_path / "sim.yaml"
    yaml_file.write_text("capacity_factor: 0.5\nfaults:\n  stall: 0.1\nfault_schedule:\n  - {fault: http_503, start_s: 5, end_s: 10}\n")
    toml_file = tmp_path / "sim.toml"
    toml_file.write_text('limiter = "token_bucket"\nburst_s = 3\n[faults]\nreset = 0.2\n')

    from_yaml = SimulatorConfig.for_model("qwen-plus-2025-04-28", ptu=8, **load_config_file(yaml_file))
    from_toml = SimulatorConfig.for_model("qwen-plus-2025-04-28", ptu=8, **load_config_file(toml_file))

    assert from_yaml.capacity_factor == 0.5
    assert from_yaml.faults == {"stall": 0.1}
    assert from_yaml.fault_schedule[0].fault == "http_503"
    assert from_toml.limiter == "token_bucket"
    assert from_toml.faults == {"reset": 0.2}


def test_config_file_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("capacity_factr: 2\n")

    with pytest.raises(InputError) as caught:
        load_config_file(path)

    assert str(path) in caught.value.message
    assert "capacity_factr" in caught.value.message


def test_stats_without_request_list(sim) -> None:  # type: ignore[no-untyped-def]
    httpx.post(sim.openai_base_url + "/chat/completions", json={"model": "qwen-plus-test", "messages": MESSAGES, "max_tokens": 2})

    document = httpx.get(sim.base_url + "/sim/stats", params={"requests": "0"}).json()

    assert "requests" not in document
    assert document["totals"]["requests"] == 1
    assert "requests" not in sim.stats(include_requests=False)


def test_wrong_types_are_input_errors() -> None:
    with pytest.raises(InputError, match="prompt_cache"):
        SimulatorConfig.for_model("qwen-plus-2025-04-28", ptu=8, prompt_cache="no")
    with pytest.raises(InputError, match="tokens_per_chunk"):
        SimulatorConfig.for_model("qwen-plus-2025-04-28", ptu=8, tokens_per_chunk=2.5)
    with pytest.raises(InputError, match="window_s"):
        SimulatorConfig.for_model("qwen-plus-2025-04-28", ptu=8, window_s="10")


def test_client_disconnect_is_recorded() -> None:
    import socket
    import time

    body = json.dumps({"model": "qwen-plus-test", "messages": MESSAGES, "max_tokens": 500, "stream": True}).encode()
    with start_simulator(make_config(speed_tps=200.0)) as sim:
        host, port = sim.base_url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as connection:
            connection.sendall(
                b"POST /compatible-mode/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            received = b""
            while b"data: " not in received:
                received += connection.recv(65536)
        deadline = time.monotonic() + 10
        entry = sim.stats()["requests"][0]
        while entry["outcome"] == "pending" and time.monotonic() < deadline:
            time.sleep(0.05)  # polling the server's state with a deadline, not synchronising on time
            entry = sim.stats()["requests"][0]
        after = httpx.post(sim.openai_base_url + "/chat/completions", json={"model": "qwen-plus-test", "messages": MESSAGES, "max_tokens": 2})

    assert entry["outcome"] == "client_disconnect"
    assert 1 <= entry["output_tokens"] < 500
    assert after.status_code == 200


def test_stats_show_effective_config_without_key() -> None:
    with start_simulator(make_config(api_key="sk-test-secret-1111", concurrency_knee=12)) as sim:
        document = httpx.get(sim.base_url + "/sim/stats").text

    config = json.loads(document)["config"]
    assert "sk-test-secret-1111" not in document
    assert config["api_key"] == "set"
    assert config["effective_knee"] == 12
    assert config["latency"]["speed_tps"] == 5000.0

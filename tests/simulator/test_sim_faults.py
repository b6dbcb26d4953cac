"""Fault injection: every fault type, by probability and by schedule."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import aiohttp
import httpx
import openai
import pytest
from conftest import make_config
from openai import OpenAI

from ptu_verify import tokens
from ptu_verify.simulator import FaultWindow, RunningSimulator, start_simulator

COMPAT_PATH = "/compatible-mode/v1/chat/completions"
NATIVE_PATH = "/api/v1/services/aigc/text-generation/generation"
MESSAGES = [{"role": "user", "content": "hi"}]


def compat_body(max_tokens: int = 8) -> dict[str, Any]:
    return {"model": "qwen-plus-test", "messages": MESSAGES, "max_tokens": max_tokens, "stream": True, "stream_options": {"include_usage": True}}


def native_body(max_tokens: int = 8) -> dict[str, Any]:
    return {"model": "qwen-plus-test", "input": {"messages": MESSAGES}, "parameters": {"max_tokens": max_tokens, "incremental_output": True}}


def fault_sim(fault: str, **knobs: Any) -> RunningSimulator:
    return start_simulator(make_config(faults={fault: 1.0}, **knobs))


async def read_timed(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> list[tuple[float, bytes]]:
    """Return every read from a streaming response with its arrival time."""
    reads: list[tuple[float, bytes]] = []
    async with aiohttp.ClientSession() as session, session.post(url, json=body, headers=headers or {}) as response:
        async for data in response.content.iter_any():
            reads.append((time.perf_counter(), data))
    return reads


def data_lines(text: str) -> list[str]:
    return [line.split(":", 1)[1].strip() for line in text.split("\n") if line.startswith("data:")]


def test_http_500_and_503_in_both_shapes() -> None:
    for fault, status, native_code, compat_code in (("http_500", 500, "InternalError", "internal_error"), ("http_503", 503, "ModelUnavailable", "model_unavailable")):
        with fault_sim(fault) as sim:
            compat = httpx.post(sim.base_url + COMPAT_PATH, json=compat_body())
            native = httpx.post(sim.base_url + NATIVE_PATH, json=native_body())
            totals = sim.stats()["totals"]

        assert compat.status_code == status
        assert compat.json()["error"]["code"] == compat_code
        assert native.status_code == status
        assert native.json()["code"] == native_code
        assert totals["errors"] == 2
        assert totals["outcomes"] == {"http_error": 2}


def test_http_500_raises_in_openai_sdk() -> None:
    with fault_sim("http_500") as sim:
        client = OpenAI(base_url=sim.openai_base_url, api_key="sk-test-fake", max_retries=0)
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="qwen-plus-test", messages=MESSAGES, max_tokens=3)  # type: ignore[arg-type]


def test_stream_error_event_mid_stream() -> None:
    with fault_sim("stream_error") as sim:
        response = httpx.post(sim.base_url + NATIVE_PATH, json=native_body(), headers={"X-DashScope-SSE": "enable"})
        entry = sim.stats()["requests"][0]

    assert response.status_code == 200
    blocks = response.text.strip("\n").split("\n\n")
    assert blocks[0].startswith("id:1\nevent:result\n")
    last = blocks[-1].split("\n")
    assert last[1] == "event:error"
    assert last[2] == ":HTTP_STATUS/500"
    assert json.loads(last[3][len("data:"):])["code"] == "InternalError"
    assert last[0] == f"id:{len(blocks)}"
    assert entry["outcome"] == "stream_error"
    assert entry["status"] == 500
    assert 1 <= entry["output_tokens"] < 8
    assert entry["output_tokens"] == len(blocks) - 1


def test_reset_mid_stream() -> None:
    with fault_sim("reset") as sim:
        with pytest.raises(httpx.TransportError):
            httpx.post(sim.base_url + COMPAT_PATH, json=compat_body())
        entry = sim.stats()["requests"][0]

    assert entry["outcome"] == "connection_reset"
    assert entry["finished_at"] is not None
    assert 1 <= entry["output_tokens"] < 8


def test_stall_leaves_a_gap() -> None:
    with fault_sim("stall", stall_s=0.4) as sim:
        reads = asyncio.run(read_timed(sim.base_url + COMPAT_PATH, compat_body()))
        entry = sim.stats()["requests"][0]

    gaps = [later[0] - earlier[0] for earlier, later in itertools.pairwise(reads)]
    assert max(gaps) >= 0.35
    assert entry["outcome"] == "ok"
    assert entry["output_tokens"] == 8


def test_malformed_chunk_between_valid_ones() -> None:
    with fault_sim("malformed") as sim:
        response = httpx.post(sim.base_url + COMPAT_PATH, json=compat_body())

    payloads = data_lines(response.text)
    broken = []
    text = ""
    for payload in payloads:
        if payload == "[DONE]":
            continue
        try:
            chunk = json.loads(payload)
        except ValueError:
            broken.append(payload)
            continue
        if chunk["choices"]:
            text += chunk["choices"][0]["delta"].get("content") or ""
        else:
            assert chunk["usage"]["completion_tokens"] == 8
    assert len(broken) == 1
    assert tokens.count_tokens(text) == 8


def test_keepalive_comments_do_not_break_sdk() -> None:
    with fault_sim("keepalive") as sim:
        raw = httpx.post(sim.base_url + NATIVE_PATH, json=native_body(), headers={"X-DashScope-SSE": "enable"})
        client = OpenAI(base_url=sim.openai_base_url, api_key="sk-test-fake", max_retries=0)
        chunks = list(client.chat.completions.create(model="qwen-plus-test", messages=MESSAGES, max_tokens=8, stream=True, stream_options={"include_usage": True}))  # type: ignore[arg-type]

    assert raw.text.count(": keep-alive\n\n") >= 1
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 8


def test_coalesce_puts_several_events_in_one_write() -> None:
    with fault_sim("coalesce", coalesce_events=4, speed_tps=100.0) as sim:
        reads = asyncio.run(read_timed(sim.base_url + NATIVE_PATH, native_body(12), {"X-DashScope-SSE": "enable"}))

    events_per_read = [data.count(b"event:result") for _at, data in reads]
    assert sum(events_per_read) == 13
    assert max(events_per_read) >= 4


def test_split_event_across_writes() -> None:
    with fault_sim("split", speed_tps=100.0) as sim:
        reads = asyncio.run(read_timed(sim.base_url + NATIVE_PATH, native_body(6), {"X-DashScope-SSE": "enable"}))

    joined = b"".join(data for _at, data in reads)
    assert any(not data.endswith(b"\n\n") for _at, data in reads)
    assert joined.count(b"event:result") == 7


def test_multi_token_chunks() -> None:
    with fault_sim("multi_token", multi_token_count=4) as sim:
        response = httpx.post(sim.base_url + NATIVE_PATH, json=native_body(10), headers={"X-DashScope-SSE": "enable"})

    payloads = [json.loads(line) for line in data_lines(response.text)]
    texts = [payload["output"]["text"] for payload in payloads]
    assert [tokens.count_tokens(text) for text in texts] == [4, 4, 2, 0]
    assert [payload["usage"]["output_tokens"] for payload in payloads] == [4, 8, 10, 10]


def test_role_gap_sends_role_chunk_early() -> None:
    with fault_sim("role_gap", role_gap_s=0.3) as sim:
        reads = asyncio.run(read_timed(sim.base_url + COMPAT_PATH, compat_body(3)))
        entry = sim.stats()["requests"][0]

    assert b'"role":"assistant"' in reads[0][1]
    assert b'"content":""' in reads[0][1]
    assert reads[0][1].count(b"data: ") == 1
    assert reads[1][0] - reads[0][0] >= 0.25
    assert entry["first_token_at"] is not None


def test_fault_schedule_window() -> None:
    schedule = [FaultWindow("http_503", start_s=0.0, end_s=3600.0), FaultWindow("http_500", start_s=3600.0, end_s=7200.0)]
    with start_simulator(make_config(fault_schedule=schedule)) as sim:
        response = httpx.post(sim.base_url + COMPAT_PATH, json=compat_body())

    assert response.status_code == 503


def test_fault_probability_share() -> None:
    with start_simulator(make_config(faults={"http_503": 0.3})) as sim, httpx.Client(base_url=sim.base_url) as http:
        statuses = [http.post(COMPAT_PATH, json={**compat_body(1), "stream": False}).status_code for _ in range(200)]

    assert set(statuses) == {200, 503}
    assert 30 <= statuses.count(503) <= 90


def test_truncate_closes_without_finish() -> None:
    with fault_sim("truncate") as sim:
        with pytest.raises(httpx.TransportError):
            httpx.post(sim.base_url + COMPAT_PATH, json=compat_body())
        entry = sim.stats()["requests"][0]

    assert entry["outcome"] == "truncated"
    assert entry["finish_reason"] is None
    assert 1 <= entry["output_tokens"] < 8


def test_compat_data_shaped_stream_error() -> None:
    with fault_sim("stream_error", compat_stream_error="data") as sim:
        client = OpenAI(base_url=sim.openai_base_url, api_key="sk-test-fake", max_retries=0)
        received: list[str] = []
        with pytest.raises(openai.APIError) as caught:
            for chunk in client.chat.completions.create(model="qwen-plus-test", messages=MESSAGES, max_tokens=8, stream=True):  # type: ignore[arg-type]
                received.append(chunk.choices[0].delta.content or "")

    assert "internal error" in caught.value.message
    assert 1 <= len(received) < 9


def test_split_cuts_multibyte_characters() -> None:
    with fault_sim("split", speed_tps=2000.0, tokens_per_chunk=400) as sim:
        reads = asyncio.run(read_timed(sim.base_url + COMPAT_PATH, {**compat_body(400), "stream_options": None}))

    joined = b"".join(data for _at, data in reads)
    assert any(_cuts_character(data) for _at, data in reads)
    text = "".join(json.loads(line)["choices"][0]["delta"].get("content") or "" for line in data_lines(joined.decode()) if line != "[DONE]")
    assert tokens.count_tokens(text) == 400


def _cuts_character(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return True
    return False


def test_keepalive_comments_while_waiting() -> None:
    with fault_sim("keepalive", ttft_base_s=0.35, keepalive_interval_s=0.1) as sim:
        response = httpx.post(sim.base_url + COMPAT_PATH, json=compat_body(2))

    before_first_data = response.text.split("data: ", 1)[0]
    assert before_first_data.count(": keep-alive\n\n") >= 3
    assert response.text.endswith("data: [DONE]\n\n")

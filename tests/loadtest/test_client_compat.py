"""Measurement cases C1–C11 over the OpenAI-compatible API, against scripted servers.

Cases run on the fast transport; those marked with TRANSPORTS also run through the openai SDK.

A scripted write at ``t`` happens t seconds after the server read the request, so a correct client
measures at least ``t`` and at most ``t`` plus local overhead (TOLERANCE_S).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import gevent
import pytest
from scripted_server import (
    DEFAULT_SPEC,
    DONE,
    FAKE_KEY,
    ReceivedRequest,
    Script,
    ScriptedServer,
    compat_chunk,
    compat_usage,
    data_event,
    json_script,
    native_error_event,
    send_requests,
    sse_script,
)

from loadtest.client import ClientConfig, StreamClient
from loadtest.transports import READ_BLOCK_BYTES
from ptu_verify.records import RequestRecord
from ptu_verify.requests import RequestSpec
from ptu_verify.tokens import count_tokens

TOLERANCE_S = 0.05
TRANSPORTS = pytest.mark.parametrize("transport", ["fast", "sdk"])
SPEC = DEFAULT_SPEC


def assert_time(value: float | None, expected: float) -> None:
    assert value is not None
    assert expected <= value < expected + TOLERANCE_S, f"measured {value:.4f} s, expected {expected} s"


def content_run(start_s: float, step_s: float, texts: list[str]) -> list[tuple[float, bytes]]:
    return [(start_s + i * step_s, compat_chunk({"content": text})) for i, text in enumerate(texts)]


# ---------------------------------------------------------------- time to first token


@TRANSPORTS
def test_c1_reasoning_counts_as_first_token(transport: str) -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        events = [(0.30, compat_chunk({"role": "assistant", "content": None, "reasoning_content": ""}))]
        events.append((0.50, compat_chunk({"content": None, "reasoning_content": "好"})))
        events += [(0.50 + 0.05 * i, compat_chunk({"content": None, "reasoning_content": "想"})) for i in range(1, 41)]
        events += content_run(2.55, 0.05, ["是"] * 11)
        end = 2.55 + 0.05 * 11
        events += [(end, compat_chunk({"content": ""}, finish_reason="stop")), (end, compat_usage(11, 60, reasoning_tokens=41)), (end, DONE)]
        return sse_script(events)

    [record], _ = send_requests(respond, transport=transport)
    assert record["outcome"] == "ok"
    assert_time(record["ttft_s"], 0.50)
    assert_time(record["ttfa_s"], 2.55)
    assert record["output_tokens"] == 60
    assert record["reasoning_tokens"] == 41
    assert record["tokens_estimated"] is False
    assert record["chunks"] == 52


@TRANSPORTS
def test_c1_ends_inside_reasoning(transport: str) -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        events = [(0.30, compat_chunk({"role": "assistant", "content": ""}))]
        events += [(0.50 + 0.05 * i, compat_chunk({"reasoning_content": "嗯"})) for i in range(6)]
        events += [(0.80, compat_chunk({"reasoning_content": ""}, finish_reason="length")), (0.80, compat_usage(11, 32, reasoning_tokens=32)), (0.80, DONE)]
        return sse_script(events)

    [record], _ = send_requests(respond, transport=transport)
    assert record["outcome"] == "ok"
    assert record["finish_reason"] == "length"
    assert_time(record["ttft_s"], 0.50)
    assert record["ttfa_s"] is None
    assert record["output_tokens"] == 32


def test_c2_role_only_chunk_is_not_a_token() -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        events = [(0.90, compat_chunk({"role": "assistant", "content": ""}))]
        events += content_run(2.20, 0.02, ["The"] + [" word"] * 20)
        events += [(2.62, compat_chunk({"content": ""}, finish_reason="stop")), (2.62, compat_usage(11, 21)), (2.62, DONE)]
        return sse_script(events)

    [record], _ = send_requests(respond)
    assert record["outcome"] == "ok"
    assert_time(record["ttft_s"], 2.20)
    assert record["chunks"] == 21
    # The 1.30 s wait for the first token is not a gap between token-carrying events.
    assert record["chunk_gap_max_s"] is not None
    assert record["chunk_gap_max_s"] < 0.5


def test_c2_role_chunk_with_null_content() -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        events = [(0.005, compat_chunk({"role": "assistant", "content": None}))]
        events += content_run(0.30, 0.02, ["Hi", " there"])
        events += [(0.34, compat_chunk({}, finish_reason="stop")), (0.34, compat_usage(11, 2)), (0.34, DONE)]
        return sse_script(events)

    [record], _ = send_requests(respond)
    assert record["outcome"] == "ok"
    assert_time(record["ttft_s"], 0.30)


@TRANSPORTS
def test_c3a_single_chunk_answer(transport: str) -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        usage = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
        return sse_script([(0.40, compat_chunk({"role": "assistant", "content": "Yes, it is."}, finish_reason="stop", usage=usage)), (0.40, DONE)])

    [record], _ = send_requests(respond, transport=transport)
    assert record["outcome"] == "ok"
    assert_time(record["ttft_s"], 0.40)
    assert_time(record["e2e_s"], 0.40)
    assert record["output_tokens"] == 3
    assert record["input_tokens"] == 11
    assert record["chunks"] == 1
    assert record["gen_speed_tps"] is None


@TRANSPORTS
def test_c3b_separate_usage_chunk(transport: str) -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        events = content_run(0.40, 1.0 / 9, ["tok"] * 10)
        events += [(1.40, compat_chunk({}, finish_reason="stop")), (1.45, compat_usage(11, 10, cached_tokens=4)), (1.45, DONE)]
        return sse_script(events)

    [record], _ = send_requests(respond, transport=transport)
    assert record["outcome"] == "ok"
    assert_time(record["ttft_s"], 0.40)
    assert_time(record["e2e_s"], 1.45)
    assert record["output_tokens"] == 10
    assert record["cached_tokens"] == 4
    assert record["error_code"] is None


def test_c4_several_tokens_per_event() -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        events = content_run(0.20, 0.08, ["a b c d"] * 32)
        events += [(2.68, compat_chunk({}, finish_reason="stop")), (2.68, compat_usage(11, 128)), (2.68, DONE)]
        return sse_script(events)

    [record], _ = send_requests(respond)
    assert record["outcome"] == "ok"
    assert record["output_tokens"] == 128
    assert record["chunks"] == 32
    assert record["gen_speed_tps"] == pytest.approx(127 / 2.48, rel=0.03)
    assert record["chunk_gap_mean_s"] == pytest.approx(0.08, abs=0.005)
    assert "itl_s" not in record
    assert "tpot_s" not in record


# ---------------------------------------------------------------- SSE framing


def test_c5a_events_in_one_read_share_timestamp() -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        three = compat_chunk({"content": "one"}) + compat_chunk({"content": " two"}) + compat_chunk({"content": " three"})
        return sse_script([(0.30, three), (0.40, compat_chunk({}, finish_reason="stop") + compat_usage(11, 3) + DONE)])

    [record], _ = send_requests(respond)
    assert record["outcome"] == "ok"
    assert record["chunks"] == 3
    assert_time(record["ttft_s"], 0.30)
    assert record["chunk_gap_max_s"] == 0.0


def test_c5b_event_split_mid_json() -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        event = compat_chunk({"content": "split here"})
        return sse_script([(0.30, event[:25]), (0.35, event[25:]), (0.40, compat_chunk({}, finish_reason="stop") + DONE)])

    [record], _ = send_requests(respond)
    assert record["outcome"] == "ok"
    assert record["chunks"] == 1
    assert_time(record["ttft_s"], 0.35)
    assert record["tokens_estimated"] is True
    assert record["output_tokens"] == count_tokens("split here")


def test_c5c_utf8_character_split_across_reads() -> None:
    text = "代码改变世界"

    def respond(request: ReceivedRequest, index: int) -> Script:
        event = compat_chunk({"content": text})
        cut = event.index(text.encode()) + 1  # inside the first 3-byte character
        return sse_script([(0.20, event[:cut]), (0.25, event[cut:]), (0.30, compat_chunk({}, finish_reason="stop") + DONE)])

    [record], _ = send_requests(respond)
    assert record["outcome"] == "ok"
    assert record["output_tokens"] == count_tokens(text) == 3


def test_c5_close_delimited_body_with_crlf() -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        crlf = [(0.10 + 0.01 * i, compat_chunk({"content": "x"}).replace(b"\n", b"\r\n")) for i in range(3)]
        crlf += [(0.15, (compat_chunk({}, finish_reason="stop") + compat_usage(11, 3) + DONE).replace(b"\n", b"\r\n"))]
        return sse_script(crlf, chunked=False)

    [record], _ = send_requests(respond)
    assert record["outcome"] == "ok"
    assert record["chunks"] == 3
    assert record["output_tokens"] == 3


def test_c6_keepalive_comments_are_not_tokens() -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        events = [(0.5 * i, b": keep-alive\n\n") for i in range(1, 11)]
        events += content_run(5.20, 0.01, ["答"] * 11)
        events += [(5.31, compat_chunk({}, finish_reason="stop")), (5.31, compat_usage(11, 11)), (5.31, DONE)]
        return sse_script(events)

    [record], _ = send_requests(respond)
    assert record["outcome"] == "ok"
    assert_time(record["ttft_s"], 5.20)
    assert record["chunks"] == 11
    assert record["output_tokens"] == 11


# ---------------------------------------------------------------- tokens


def spaces_script(with_usage: bool) -> Callable[[ReceivedRequest, int], Script]:
    def respond(request: ReceivedRequest, index: int) -> Script:
        events = content_run(0.10, 0.001, [" "] * 120)
        tail = compat_chunk({}, finish_reason="stop") + (compat_usage(11, 120) if with_usage else b"") + DONE
        return sse_script(events + [(0.25, tail)])

    return respond


def test_c7_output_tokens_come_from_usage() -> None:
    [record], _ = send_requests(spaces_script(with_usage=True))
    assert record["outcome"] == "ok"
    assert record["output_tokens"] == 120
    assert record["tokens_estimated"] is False
    assert count_tokens(" " * 120) < 120


@TRANSPORTS
def test_c8_no_usage_estimates_and_flags(transport: str) -> None:
    [record], server = send_requests(spaces_script(with_usage=False), transport=transport)
    assert record["outcome"] == "ok"
    assert record["tokens_estimated"] is True
    assert record["output_tokens"] == count_tokens(" " * 120)
    assert record["output_tokens"] > 0
    assert record["input_tokens"] == 11  # prompt estimate: "你是谁？" is 11 tokens with the chat template
    body = server.requests[0].json()
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


# ---------------------------------------------------------------- failures


@TRANSPORTS
def test_c9a_error_event_after_content(transport: str) -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        events = content_run(0.10, 0.02, ["a", "b", "c"])
        events.append((0.20, data_event({"error": {"message": "boom", "type": "server_error"}})))
        return sse_script(events, finish=False)

    [record], _ = send_requests(respond, transport=transport)
    assert record["outcome"] == "stream_error"
    assert record["error_code"] == "server_error"
    assert record["error_message"] == "boom"
    assert record["status_code"] == 200
    assert record["ttft_s"] is not None  # kept for diagnostics; outcome keeps it out of percentiles


@TRANSPORTS
def test_c9b_error_event_first(transport: str) -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        return sse_script([(0.10, data_event({"error": {"message": "boom", "type": "server_error"}}))], finish=False)

    [record], _ = send_requests(respond, transport=transport)
    assert record["outcome"] == "stream_error"
    assert record["ttft_s"] is None
    assert record["output_tokens"] == 0


@TRANSPORTS
def test_c9c_connection_closes_without_done(transport: str) -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        return sse_script(content_run(0.10, 0.02, ["a", "b", "c", "d", "e"]), finish=False)

    [record], _ = send_requests(respond, transport=transport)
    assert record["outcome"] == "truncated"
    assert record["chunks"] == 5


def test_c9c_close_delimited_body_without_done() -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        return sse_script(content_run(0.10, 0.02, ["a", "b", "c", "d", "e"]) + [(0.2, compat_chunk({}, finish_reason="stop"))], chunked=False)

    [record], _ = send_requests(respond)
    assert record["outcome"] == "truncated"
    assert record["error_message"] == "stream ended without [DONE]"


@TRANSPORTS
def test_c10_throttling_frame_in_compat_stream(transport: str) -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        return sse_script([(0.05, native_error_event("Throttling.AllocationQuota", "Allocated quota exceeded"))], finish=False)

    [record], _ = send_requests(respond, transport=transport)
    assert record["outcome"] == "throttled"
    assert record["error_code"] == "Throttling.AllocationQuota"
    # The openai SDK drops SSE comments, so only the fast transport reads the :HTTP_STATUS line.
    assert record["status_code"] == (429 if transport == "fast" else 200)


def test_compat_error_with_status_comment() -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        frame = b":HTTP_STATUS/429\n" + data_event({"error": {"message": "rate", "type": "limit_requests", "code": "limit_requests"}})
        return sse_script([(0.05, frame)], finish=False)

    [record], _ = send_requests(respond)
    assert record["outcome"] == "throttled"
    assert record["error_code"] == "limit_requests"
    assert record["status_code"] == 429


def normal_stream(request_id: str) -> Script:
    events = content_run(0.02, 0.01, ["ok", " done"])
    events.append((0.05, compat_chunk({}, finish_reason="stop") + compat_usage(11, 2) + DONE))
    return sse_script(events, request_id=request_id)


@TRANSPORTS
@pytest.mark.parametrize(("status", "code", "outcome"), [(429, "limit_requests", "throttled"), (503, "ModelUnavailable", "http_error")])
def test_c11_no_hidden_retries(transport: str, status: int, code: str, outcome: str) -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        if index % 3 == 0:
            return json_script(status, {"error": {"message": "busy", "type": code, "code": code}, "request_id": f"req-{index}"}, request_id=f"req-{index}")
        return normal_stream(f"req-{index}")

    records, server = send_requests(respond, count=9, transport=transport)
    assert len(server.requests) == 9
    assert len(records) == 9
    assert [r["attempt"] for r in records] == [1] * 9
    failed = [r for r in records if r["outcome"] != "ok"]
    assert len(failed) == 3
    assert {r["outcome"] for r in failed} == {outcome}
    assert {r["error_code"] for r in failed} == {code}
    assert {r["status_code"] for r in failed} == {status}
    assert [r["request_id"] for r in failed] == ["req-0", "req-3", "req-6"]


def test_retry_429_records_every_attempt() -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        if index < 2:
            body = {"error": {"message": "quota", "type": "insufficient_quota", "code": "insufficient_quota"}}
            return json_script(429, body, request_id=f"req-{index}", extra_headers={"retry-after-ms": "150"})
        return normal_stream(f"req-{index}")

    records, server = send_requests(respond, retry_429=True, max_attempts=3)
    assert len(server.requests) == 3
    assert [r["attempt"] for r in records] == [1, 2, 3]
    assert [r["outcome"] for r in records] == ["throttled", "throttled", "ok"]
    assert records[0]["retry_after_s"] == pytest.approx(0.15)
    assert len({r["client_request_id"] for r in records}) == 3
    last = records[2]
    assert last["user_latency_s"] is not None and last["e2e_s"] is not None
    assert last["user_latency_s"] >= last["e2e_s"] + 0.30  # two waits of 150 ms before the last attempt
    assert records[0]["user_latency_s"] == pytest.approx(records[0]["e2e_s"])


def test_retry_429_gives_up_after_max_attempts() -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        return json_script(429, {"code": "Throttling.RateQuota", "message": "slow down"}, extra_headers={"Retry-After": "0"})

    records, server = send_requests(respond, retry_429=True, max_attempts=2)
    assert len(server.requests) == 2
    assert [r["outcome"] for r in records] == ["throttled", "throttled"]
    assert records[1]["error_code"] == "Throttling.RateQuota"


@TRANSPORTS
def test_stall_mid_stream_times_out(transport: str) -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        return sse_script(content_run(0.05, 0.01, ["a", "b"]) + [(3.0, DONE)])

    [record], _ = send_requests(respond, request_timeout_s=0.5, transport=transport)
    assert record["outcome"] == "timeout"
    assert_time(record["ttft_s"], 0.05)
    # Without gevent patching the SDK can only time out request_timeout_s after the last byte (t=0.06).
    assert_time(record["e2e_s"], 0.50 if transport == "fast" else 0.56)
    assert record["chunks"] == 2


def test_stall_before_headers_times_out() -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        return [(3.0, b"HTTP/1.1 200 OK\r\n\r\n")]

    [record], _ = send_requests(respond, request_timeout_s=0.3)
    assert record["outcome"] == "timeout"
    assert record["status_code"] is None
    assert_time(record["e2e_s"], 0.30)


def test_connection_refused_is_connection_error() -> None:
    server = ScriptedServer(lambda request, index: [])
    port = server.port
    server.__exit__()  # closed listener: nothing accepts on this port
    client = StreamClient(ClientConfig(api="openai", transport="fast", base_url=f"http://127.0.0.1:{port}/compatible-mode/v1", deployment_code="qwen-plus-test", request_timeout_s=2.0))
    [record] = client.send(SPEC)
    client.close()
    assert record["outcome"] == "connection_error"
    assert record["status_code"] is None
    assert record["request_id"] is None


@TRANSPORTS
def test_api_key_never_in_records(transport: str) -> None:
    leaky = f"Incorrect API key provided: {FAKE_KEY}. Header Authorization: Bearer {FAKE_KEY} url=https://h/x?api_key={FAKE_KEY}&a=1"

    def respond(request: ReceivedRequest, index: int) -> Script:
        return json_script(401, {"error": {"message": leaky, "type": "invalid_api_key", "code": "invalid_api_key"}, "request_id": FAKE_KEY})

    [record], server = send_requests(respond, transport=transport)
    assert server.requests[0].headers["authorization"] == f"Bearer {FAKE_KEY}"
    assert record["outcome"] == "http_error"
    assert record["error_code"] == "invalid_api_key"
    text = json.dumps(record)
    assert FAKE_KEY not in text
    assert "sk-test" not in text
    assert record["error_message"] is not None and "api_key=***" in record["error_message"]


def test_error_message_truncated() -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        return json_script(500, {"error": {"message": "x" * 5000, "type": "internal_error"}})

    [record], _ = send_requests(respond)
    assert record["outcome"] == "http_error"
    assert record["error_message"] is not None
    assert len(record["error_message"]) <= 300


@TRANSPORTS
def test_record_has_every_field(transport: str) -> None:
    [record], _ = send_requests(lambda request, index: normal_stream("req-full"), transport=transport)
    assert set(RequestRecord.__required_keys__) <= set(record)
    assert record["request_id"] == "req-full"
    assert record["run_id"] == "run-1"
    assert record["worker_id"] == "w1"
    assert record["transport"] == transport
    assert record["api"] == "openai"
    assert record["max_tokens"] == 256
    assert record["stage"] == "s1"


def test_thinking_and_extra_params_in_body() -> None:
    spec = RequestSpec(messages=[{"role": "user", "content": "hi"}], max_tokens=8, extra_params={"temperature": 0.1})
    _, server = send_requests(lambda request, index: normal_stream("r"), spec=spec, thinking=True)
    body = server.requests[0].json()
    assert body["enable_thinking"] is True
    assert body["temperature"] == 0.1
    assert body["max_tokens"] == 8
    assert body["model"] == "qwen-plus-test"
    assert server.requests[0].path == "/compatible-mode/v1/chat/completions"


def test_large_event_bigger_than_one_read() -> None:
    big = "字" * (READ_BLOCK_BYTES // 2)  # 3 bytes each: the event spans several reads

    def respond(request: ReceivedRequest, index: int) -> Script:
        return sse_script([(0.05, compat_chunk({"content": big})), (0.06, compat_chunk({}, finish_reason="stop") + compat_usage(11, 1000) + DONE)])

    [record], _ = send_requests(respond)
    assert record["outcome"] == "ok"
    assert record["chunks"] == 1
    assert record["output_tokens"] == 1000


def test_unserializable_spec_is_client_error() -> None:
    spec = RequestSpec(messages=[{"role": "user", "content": "x"}], max_tokens=8, extra_params={"bad": {1, 2}})
    [record], server = send_requests(lambda request, index: normal_stream("r"), spec=spec)
    assert record["outcome"] == "client_error"
    assert record["error_code"] == "TypeError"
    assert server.requests == []


def test_fast_transport_concurrent_greenlets() -> None:
    """Greenlets share one client; each stream is timed from its own send, none waits for another."""

    def respond(request: ReceivedRequest, index: int) -> Script:
        events = content_run(0.30, 0.05, ["a", "b", "c"])
        events.append((0.45, compat_chunk({}, finish_reason="stop") + compat_usage(11, 3) + DONE))
        return sse_script(events, request_id=f"req-{index}")

    with ScriptedServer(respond) as server:
        client = StreamClient(ClientConfig(api="openai", transport="fast", base_url=server.base + "/compatible-mode/v1", deployment_code="qwen-plus-test", connection_pool_size=8))
        greenlets = [gevent.spawn(client.send, SPEC) for _ in range(8)]
        gevent.joinall(greenlets, timeout=10, raise_error=True)
        client.close()
    records = [record for greenlet in greenlets for record in greenlet.value]
    assert len(records) == 8
    assert len({record["request_id"] for record in records}) == 8
    for record in records:
        assert record["outcome"] == "ok"
        assert_time(record["ttft_s"], 0.30)
        assert_time(record["e2e_s"], 0.45)


def test_json_error_in_200_response() -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        return json_script(200, {"error": {"message": "overloaded", "type": "server_error", "code": "server_error"}})

    [record], _ = send_requests(respond)
    assert record["outcome"] == "stream_error"
    assert record["error_code"] == "server_error"


def test_non_streaming_completion_in_200_response() -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        body = {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13},
        }
        return json_script(200, body)

    [record], _ = send_requests(respond)
    assert record["outcome"] == "ok"
    assert record["output_tokens"] == 2
    assert record["chunks"] == 1

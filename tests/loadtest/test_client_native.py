"""The DashScope native API over both transports (fast: our parser; sdk: the dashscope SDK), against scripted servers."""

from __future__ import annotations

import json

import pytest
from scripted_server import (
    FAKE_KEY,
    ReceivedRequest,
    Script,
    json_script,
    native_error_event,
    native_event,
    send_requests,
    sse_script,
)

from ptu_verify.requests import RequestSpec
from ptu_verify.tokens import count_tokens

TOLERANCE_S = 0.05
TRANSPORTS = pytest.mark.parametrize("transport", ["fast", "sdk"])


def assert_time(value: float | None, expected: float) -> None:
    assert value is not None
    assert expected <= value < expected + TOLERANCE_S, f"measured {value:.4f} s, expected {expected} s"


def running_usage_stream(request: ReceivedRequest, index: int) -> Script:
    """Return ten events of one token each. Every event carries the running usage, the last one 10 tokens."""
    events = [(0.20 + 0.02 * i, native_event(i + 1, content="字", output_tokens=i + 1)) for i in range(9)]
    events.append((0.40, native_event(10, content="。", output_tokens=10, finish_reason="stop")))
    return sse_script(events, request_id="native-req-1")


@TRANSPORTS
def test_running_usage_takes_last_not_sum(transport: str) -> None:
    [record], server = send_requests(running_usage_stream, api="dashscope", transport=transport)
    assert record["outcome"] == "ok"
    assert record["output_tokens"] == 10
    assert record["input_tokens"] == 20
    assert record["tokens_estimated"] is False
    assert record["finish_reason"] == "stop"
    assert record["chunks"] == 10
    assert record["request_id"] == "native-req-1"
    assert_time(record["ttft_s"], 0.20)
    assert_time(record["e2e_s"], 0.40)
    request = server.requests[0]
    assert request.path == "/api/v1/services/aigc/text-generation/generation"
    assert request.headers["x-dashscope-sse"] == "enable"
    assert request.headers["authorization"] == f"Bearer {FAKE_KEY}"
    body = request.json()
    assert body["model"] == "qwen-plus-test"
    assert body["input"]["messages"] == [{"role": "user", "content": "你是谁？"}]
    assert body["parameters"]["result_format"] == "message"
    assert body["parameters"]["max_tokens"] == 256


@TRANSPORTS
def test_cumulative_output_counts_new_text(transport: str) -> None:
    pieces = ["代码", "改变", "世界"]

    def respond(request: ReceivedRequest, index: int) -> Script:
        # Reply in the mode the client requested. The dashscope SDK requests increments and merges them itself.
        incremental = request.json()["parameters"]["incremental_output"]
        texts = pieces if incremental else ["".join(pieces[: i + 1]) for i in range(len(pieces))]
        events = [(0.10 + 0.02 * i, native_event(i + 1, content=text, output_tokens=i + 1)) for i, text in enumerate(texts)]
        events.append((0.20, native_event(4, content="" if incremental else texts[-1], output_tokens=3, finish_reason="stop")))
        return sse_script(events)

    [record], server = send_requests(respond, api="dashscope", transport=transport, incremental_output=False)
    assert record["outcome"] == "ok"
    assert record["chunks"] == 3
    assert record["output_tokens"] == 3
    if transport == "fast":
        assert server.requests[0].json()["parameters"]["incremental_output"] is False


def test_cumulative_output_estimate_uses_difference() -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        texts = ["代码", "代码改变", "代码改变世界"]
        frames = [native_event(i + 1, content=text, with_usage=False) for i, text in enumerate(texts)]
        frames.append(native_event(4, content=texts[-1], finish_reason="stop", with_usage=False))
        return sse_script([(0.05 * (i + 1), frame) for i, frame in enumerate(frames)])

    [record], _ = send_requests(respond, api="dashscope", incremental_output=False)
    assert record["outcome"] == "ok"
    assert record["tokens_estimated"] is True
    assert record["output_tokens"] == count_tokens("代码改变世界")
    assert record["chunks"] == 3  # the final event repeats the text and adds nothing


@TRANSPORTS
def test_thinking_stream_times_reasoning_and_answer(transport: str) -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        events = [(0.20, native_event(1, content="", reasoning="", output_tokens=0))]
        events += [(0.30 + 0.02 * i, native_event(i + 2, content="", reasoning="想", output_tokens=i + 1, reasoning_tokens=i + 1)) for i in range(10)]
        events += [(0.60 + 0.02 * i, native_event(i + 12, content="是", reasoning="", output_tokens=11 + i, reasoning_tokens=10)) for i in range(5)]
        events.append((0.70, native_event(17, content="", reasoning="", output_tokens=15, reasoning_tokens=10, finish_reason="stop")))
        return sse_script(events)

    [record], server = send_requests(respond, api="dashscope", transport=transport, thinking=True)
    assert record["outcome"] == "ok"
    assert_time(record["ttft_s"], 0.30)
    assert_time(record["ttfa_s"], 0.60)
    assert record["output_tokens"] == 15
    assert record["reasoning_tokens"] == 10
    assert record["chunks"] == 15
    parameters = server.requests[0].json()["parameters"]
    assert parameters["enable_thinking"] is True
    assert parameters["incremental_output"] is True


@TRANSPORTS
def test_multimodal_request_and_content_lists(transport: str) -> None:
    image_url = "data:image/png;base64,iVBORw0KGgo="
    spec = RequestSpec(
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": "描述这张图"}]}],
        max_tokens=64,
    )

    def respond(request: ReceivedRequest, index: int) -> Script:
        events = [(0.10, native_event(1, content=[{"text": "一只"}], input_tokens=1260, output_tokens=1, image_tokens=1247))]
        events.append((0.15, native_event(2, content=[{"text": "猫"}], input_tokens=1260, output_tokens=2, image_tokens=1247, finish_reason="stop")))
        return sse_script(events)

    [record], server = send_requests(respond, api="dashscope", transport=transport, spec=spec, deployment_code="qwen-vl-plus-test")
    assert record["outcome"] == "ok"
    assert record["image_tokens"] == 1247
    assert record["input_tokens"] == 1260
    assert record["output_tokens"] == 2
    assert record["chunks"] == 2
    request = server.requests[0]
    assert request.path == "/api/v1/services/aigc/multimodal-generation/generation"
    assert request.json()["input"]["messages"] == [{"role": "user", "content": [{"image": image_url}, {"text": "描述这张图"}]}]


@TRANSPORTS
def test_null_string_finish_reason_is_not_an_end(transport: str) -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        return sse_script([(0.05 * (i + 1), native_event(i + 1, content="字", output_tokens=i + 1)) for i in range(4)])

    [record], _ = send_requests(respond, api="dashscope", transport=transport)
    assert record["outcome"] == "truncated"
    assert record["finish_reason"] is None
    assert record["output_tokens"] == 4


@TRANSPORTS
def test_c10_throttling_frame_in_native_stream(transport: str) -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        frame = native_error_event("Throttling.AllocationQuota", "Allocated quota exceeded, please increase your quota limit.", request_id="thr-1")
        return sse_script([(0.05, frame)], finish=False, request_id="thr-1")

    [record], _ = send_requests(respond, api="dashscope", transport=transport)
    assert record["outcome"] == "throttled"
    assert record["error_code"] == "Throttling.AllocationQuota"
    assert record["request_id"] == "thr-1"
    # The dashscope SDK ignores the :HTTP_STATUS comment, so it keeps the HTTP status.
    assert record["status_code"] == (429 if transport == "fast" else 200)
    assert record["ttft_s"] is None


@TRANSPORTS
def test_error_frame_mid_stream_is_stream_error(transport: str) -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        events = [(0.05 + 0.01 * i, native_event(i + 1, content="字", output_tokens=i + 1)) for i in range(3)]
        events.append((0.10, native_error_event("InternalError", "internal error", status=500)))
        return sse_script(events, finish=False)

    [record], _ = send_requests(respond, api="dashscope", transport=transport)
    assert record["outcome"] == "stream_error"
    assert record["error_code"] == "InternalError"
    assert record["chunks"] == 3


@TRANSPORTS
def test_http_429_with_native_body(transport: str) -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        return json_script(429, {"code": "Throttling.RateQuota", "message": "Requests rate limit exceeded", "request_id": "rq-429"}, request_id="rq-429")

    records, server = send_requests(respond, api="dashscope", transport=transport, count=2)
    assert len(server.requests) == 2  # no hidden retry
    assert [r["outcome"] for r in records] == ["throttled", "throttled"]
    assert records[0]["status_code"] == 429
    assert records[0]["error_code"] == "Throttling.RateQuota"
    assert records[0]["request_id"] == "rq-429"


@TRANSPORTS
def test_native_key_never_in_records(transport: str) -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        return json_script(401, {"code": "InvalidApiKey", "message": f"Invalid API-key provided: {FAKE_KEY}", "request_id": "k-1"})

    [record], _ = send_requests(respond, api="dashscope", transport=transport)
    assert record["outcome"] == "http_error"
    assert record["error_code"] == "InvalidApiKey"
    assert FAKE_KEY not in json.dumps(record)


def test_native_crlf_and_spaces_after_colons() -> None:
    def respond(request: ReceivedRequest, index: int) -> Script:
        frames = [native_event(i + 1, content="x", output_tokens=i + 1, finish_reason="stop" if i == 2 else "null") for i in range(3)]
        spaced = [frame.replace(b"id:", b"id: ").replace(b"event:", b"event: ").replace(b"data:", b"data: ").replace(b"\n", b"\r\n") for frame in frames]
        return sse_script([(0.05, spaced[0]), (0.06, spaced[1] + spaced[2])], chunked=False)

    [record], _ = send_requests(respond, api="dashscope")
    assert record["outcome"] == "ok"
    assert record["chunks"] == 3
    assert record["output_tokens"] == 3

"""The incremental SSE parser and the event interpreters, fed byte by byte and in odd splits."""

from __future__ import annotations

import json
from typing import Any

import pytest

from loadtest.protocol import (
    DashScopeInterpreter,
    OpenAIInterpreter,
    build_request,
    to_native_messages,
)
from loadtest.sse import SSEEvent, SSEParser


def feed_all(pieces: list[bytes]) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for piece in pieces:
        events.extend(parser.feed(piece))
    return events


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


STREAM = 'data: {"a": 1}\n\n: keep-alive\n\nid:7\nevent:result\n:HTTP_STATUS/200\ndata:{"b":"好"}\n\ndata: [DONE]\n\n'.encode()


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_parser_same_events_for_any_split(newline: bytes) -> None:
    data = STREAM.replace(b"\n", newline)
    whole = feed_all([data])
    assert feed_all(byte_by_byte(data)) == whole
    for cut in range(1, len(data)):
        assert feed_all([data[:cut], data[cut:]]) == whole, cut


def test_parser_fields_and_comments() -> None:
    events = feed_all([STREAM])
    assert [event.data for event in events] == ['{"a": 1}', None, '{"b":"好"}', "[DONE]"]
    assert events[1].comments == [" keep-alive"]
    assert events[2].id == "7"
    assert events[2].event == "result"
    assert events[2].http_status == 200
    assert events[0].http_status is None


def test_parser_space_after_colon_is_optional() -> None:
    [spaced, bare] = feed_all([b"event: error\ndata: x\n\nevent:error\ndata:x\n\n"])
    assert spaced == bare


def test_parser_multiline_data_joined() -> None:
    [event] = feed_all([b"data: line one\ndata: line two\n\n"])
    assert event.data == "line one\nline two"


def test_parser_utf8_split_inside_character() -> None:
    data = 'data: 代码改变世界\n\n'.encode()
    cut = data.index("码".encode()) + 1
    [event] = feed_all([data[:cut], data[cut:]])
    assert event.data == "代码改变世界"


def test_parser_keeps_unfinished_event_pending() -> None:
    parser = SSEParser()
    assert parser.feed(b'data: {"partial"') == []
    assert parser.has_pending
    assert parser.feed(b": 1}\n") == []
    assert parser.has_pending
    [event] = parser.feed(b"\n")
    assert event.data == '{"partial": 1}'
    assert not parser.has_pending


def test_parser_blank_lines_alone_dispatch_nothing() -> None:
    assert feed_all([b"\n\n\r\n\n"]) == []


def test_parser_unknown_fields_ignored() -> None:
    [event] = feed_all([b"retry: 100\nstatus:429\nfoo\ndata: x\n\n"])
    assert event.data == "x"


def event(data: str, *, name: str | None = None, comments: list[str] | None = None) -> SSEEvent:
    return SSEEvent(data=data, event=name, comments=comments or [])


def test_compat_usage_chunk_with_empty_choices() -> None:
    update = OpenAIInterpreter().interpret_event(event(json.dumps({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7, "completion_tokens_details": {"reasoning_tokens": 3}}})))
    assert update is not None
    assert not update.generated
    assert update.usage is not None
    assert (update.usage.input_tokens, update.usage.output_tokens, update.usage.reasoning_tokens) == (5, 7, 3)


def test_compat_tool_call_counts_as_generated() -> None:
    chunk = {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"name": "get_weather", "arguments": '{"city"'}}]}, "finish_reason": None}]}
    update = OpenAIInterpreter().interpret_event(event(json.dumps(chunk)))
    assert update is not None
    assert update.generated
    assert update.tool_text == 'get_weather{"city"'


def test_compat_role_only_and_empty_are_not_generated() -> None:
    interpreter = OpenAIInterpreter()
    for delta in ({"role": "assistant", "content": ""}, {"role": "assistant", "content": None}, {"content": "", "reasoning_content": None}, {}):
        update = interpreter.interpret_event(event(json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]})))
        assert update is not None
        assert not update.generated, delta


def test_compat_invalid_json_is_an_error() -> None:
    update = OpenAIInterpreter().interpret_event(event("{not json"))
    assert update is not None
    assert update.error is not None
    assert update.error.code == "invalid_event"


def test_native_error_event_takes_status_from_comment() -> None:
    frame = event(json.dumps({"request_id": "r1", "code": "Throttling.RateQuota", "message": "slow"}), name="error", comments=["HTTP_STATUS/429"])
    update = DashScopeInterpreter().interpret_event(frame)
    assert update is not None
    assert update.error is not None
    assert (update.error.code, update.error.status_code) == ("Throttling.RateQuota", 429)
    assert update.request_id == "r1"


def test_native_cumulative_text_difference() -> None:
    interpreter = DashScopeInterpreter(incremental_output=False)
    texts = []
    for full in ["Hel", "Hello", "Hello, world", "Hello, world"]:
        update = interpreter.interpret_chunk({"output": {"choices": [{"message": {"content": full}, "finish_reason": "null"}]}})
        texts.append(update.content)
    assert texts == ["Hel", "lo", ", world", ""]


def test_native_text_result_format() -> None:
    update = DashScopeInterpreter().interpret_chunk({"output": {"text": "hi", "finish_reason": "stop"}, "usage": {"input_tokens": 3, "output_tokens": 1}})
    assert update.content == "hi"
    assert update.finish_reason == "stop"


def test_native_messages_from_openai_parts() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "what is"}, {"type": "image_url", "image_url": {"url": "https://x/cat.png"}}]},
    ]
    assert to_native_messages(messages, multimodal=True) == [
        {"role": "system", "content": [{"text": "be brief"}]},
        {"role": "user", "content": [{"text": "what is"}, {"image": "https://x/cat.png"}]},
    ]
    text_only = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    assert to_native_messages(text_only, multimodal=False) == [{"role": "user", "content": "ab"}]


def test_compat_request_always_asks_for_usage() -> None:
    request = build_request(
        "openai",
        base_url="http://h/compatible-mode/v1/",
        deployment_code="d",
        messages=[{"role": "user", "content": "x"}],
        max_tokens=5,
        api_key=None,
        thinking=False,
        extra_params={"stream_options": {"include_usage": False}},
    )
    assert request.url == "http://h/compatible-mode/v1/chat/completions"
    assert request.body["stream_options"] == {"include_usage": True}
    assert request.body["enable_thinking"] is False
    assert "Authorization" not in request.headers

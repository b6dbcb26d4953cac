"""The DashScope native endpoints, driven by the official dashscope SDK and by raw HTTP."""

from __future__ import annotations

import base64
import io
import itertools
import json
from typing import Any

import httpx
from conftest import make_config
from dashscope import Generation, MultiModalConversation

from ptu_verify import tokens
from ptu_verify.simulator import RunningSimulator, start_simulator

MESSAGES = [{"role": "user", "content": "你是谁？"}]
TEXT_PATH = "/api/v1/services/aigc/text-generation/generation"


def png_data_url(width: int, height: int) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 30)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def generate(sim: RunningSimulator, **kwargs: Any) -> Any:
    return Generation.call(model="qwen-plus-test", api_key="sk-test-fake", base_address=sim.dashscope_base_url, **kwargs)


def parse_events(text: str) -> list[dict[str, str]]:
    """Split a native SSE body into events: a dict of field -> value, with the status comment as 'status'."""
    events = []
    for block in text.strip("\n").split("\n\n"):
        event: dict[str, str] = {}
        for line in block.split("\n"):
            if line.startswith(":HTTP_STATUS/"):
                event["status"] = line[len(":HTTP_STATUS/"):]
            elif ":" in line and not line.startswith(":"):
                name, value = line.split(":", 1)
                event[name] = value
        events.append(event)
    return events


def test_non_streaming_message_format(sim: RunningSimulator) -> None:
    response = generate(sim, messages=MESSAGES, result_format="message", max_tokens=12)

    assert response.status_code == 200
    content = response.output.choices[0].message.content
    assert tokens.count_tokens(content) == 12
    assert response.usage.input_tokens == 11
    assert response.usage.output_tokens == 12
    assert response.output.choices[0].finish_reason == "length"


def test_non_streaming_text_format(sim: RunningSimulator) -> None:
    response = generate(sim, messages=MESSAGES, max_tokens=4)

    assert response.status_code == 200
    assert tokens.count_tokens(response.output.text) == 4
    assert response.output.finish_reason == "length"


def test_streaming_incremental_running_usage(sim: RunningSimulator) -> None:
    events = list(generate(sim, messages=MESSAGES, result_format="message", max_tokens=15, stream=True, incremental_output=True))

    assert all(event.status_code == 200 for event in events)
    usages = [event.usage.output_tokens for event in events]
    assert usages == list(range(1, 16)) + [15]
    pieces = [event.output.choices[0].message.content for event in events]
    for piece in pieces[:-1]:
        assert tokens.count_tokens(piece) == 1
    assert tokens.count_tokens("".join(pieces)) == 15
    assert [event.output.choices[0].finish_reason for event in events][-2:] == ["null", "length"]
    assert len({event.request_id for event in events}) == 1


def test_streaming_cumulative_text(sim: RunningSimulator) -> None:
    events = list(generate(sim, messages=MESSAGES, result_format="message", max_tokens=6, stream=True, incremental_output=False))

    texts = [event.output.choices[0].message.content for event in events]
    for before, after in itertools.pairwise(texts):
        assert after.startswith(before)
    assert tokens.count_tokens(texts[-1]) == 6
    assert [tokens.count_tokens(text) for text in texts[:-1]] == [event.usage.output_tokens for event in events[:-1]]


def test_thinking_stream_reasoning_first(sim: RunningSimulator) -> None:
    events = list(
        generate(sim, messages=MESSAGES, result_format="message", max_tokens=20, stream=True, incremental_output=True, enable_thinking=True)
    )

    reasoning = "".join(event.output.choices[0].message.get("reasoning_content", "") or "" for event in events)
    content = "".join(event.output.choices[0].message.content for event in events)
    first_content = next(index for index, event in enumerate(events) if event.output.choices[0].message.content)
    last_reasoning = max(index for index, event in enumerate(events) if event.output.choices[0].message.get("reasoning_content"))
    assert last_reasoning < first_content
    assert events[-1].usage.output_tokens == 20
    assert events[-1].usage.output_tokens_details["reasoning_tokens"] == tokens.count_tokens(reasoning) == 10
    assert tokens.count_tokens(content) == 10


def test_thinking_requires_incremental_output(sim: RunningSimulator) -> None:
    response = generate(sim, messages=MESSAGES, result_format="message", max_tokens=5, enable_thinking=True, incremental_output=False)

    assert response.status_code == 400
    assert response.code == "InvalidParameter"


def test_multimodal_content_list_and_image_tokens(vl_sim: RunningSimulator) -> None:
    messages = [{"role": "user", "content": [{"image": png_data_url(2048, 1365)}, {"text": "描述这张图"}]}]
    response = MultiModalConversation.call(
        model="qwen-vl-plus-test", messages=messages, api_key="sk-test-fake", base_address=vl_sim.dashscope_base_url, max_tokens=8
    )

    assert response.status_code == 200
    content = response.output.choices[0].message.content
    assert isinstance(content, list)
    assert tokens.count_tokens(content[0]["text"]) == 8
    assert response.usage.image_tokens == 1247
    assert response.usage.input_tokens == tokens.count_tokens("描述这张图") + 5 + 3 + 1247 + tokens.VISION_MARKER_TOKENS


def test_multimodal_streaming(vl_sim: RunningSimulator) -> None:
    messages = [{"role": "user", "content": [{"image": png_data_url(300, 200)}, {"text": "hi"}]}]
    events = list(
        MultiModalConversation.call(
            model="qwen-vl-plus-test",
            messages=messages,
            api_key="sk-test-fake",
            base_address=vl_sim.dashscope_base_url,
            max_tokens=5,
            stream=True,
            incremental_output=True,
        )
    )

    assert all(event.status_code == 200 for event in events)
    text = "".join(part["text"] for event in events for part in event.output.choices[0].message.content)
    assert tokens.count_tokens(text) == 5
    image = tokens.image_tokens(300, 200, patch_px=28)
    assert events[-1].usage.image_tokens == image
    assert events[-1].usage.output_tokens == 5


def test_raw_event_layout(sim: RunningSimulator) -> None:
    response = httpx.post(
        sim.base_url + TEXT_PATH,
        headers={"X-DashScope-SSE": "enable"},
        json={"model": "qwen-plus-test", "input": {"messages": MESSAGES}, "parameters": {"max_tokens": 3, "incremental_output": True, "result_format": "message"}},
    )

    assert response.headers["content-type"] == "text/event-stream;charset=UTF-8"
    events = parse_events(response.text)
    assert [event["id"] for event in events] == ["1", "2", "3", "4"]
    assert {event["event"] for event in events} == {"result"}
    assert {event["status"] for event in events} == {"200"}
    payloads = [json.loads(event["data"]) for event in events]
    assert [payload["output"]["choices"][0]["finish_reason"] for payload in payloads] == ["null", "null", "null", "length"]
    assert {payload["request_id"] for payload in payloads} == {response.headers["x-request-id"]}
    assert "[DONE]" not in response.text


def test_text_endpoint_rejects_vision_model(vl_sim: RunningSimulator) -> None:
    response = httpx.post(vl_sim.base_url + TEXT_PATH, json={"model": "qwen-vl-plus-test", "input": {"messages": MESSAGES}})

    assert response.status_code == 400
    assert response.json()["code"] == "InvalidParameter"


def test_thinking_off_template_tokens() -> None:
    with start_simulator(make_config(template_thinking_off=4)) as sim:
        plain = generate(sim, messages=MESSAGES, result_format="message", max_tokens=2)
        off = generate(sim, messages=MESSAGES, result_format="message", max_tokens=2, enable_thinking=False)

    assert plain.usage.input_tokens == 11
    assert off.usage.input_tokens == 15


def test_global_base_url_setting(sim: RunningSimulator) -> None:
    import dashscope

    previous = dashscope.base_http_api_url
    dashscope.base_http_api_url = sim.dashscope_base_url
    try:
        response = Generation.call(model="qwen-plus-test", messages=MESSAGES, api_key="sk-test-fake", result_format="message", max_tokens=3)
    finally:
        dashscope.base_http_api_url = previous

    assert response.status_code == 200
    assert response.usage.output_tokens == 3

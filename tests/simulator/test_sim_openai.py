"""The OpenAI-compatible endpoint, driven by the official openai SDK."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from conftest import make_config
from openai import OpenAI

from ptu_verify import tokens
from ptu_verify.simulator import RunningSimulator, start_simulator

MESSAGES = [{"role": "user", "content": "你是谁？"}]


def client(sim: RunningSimulator) -> OpenAI:
    return OpenAI(base_url=sim.openai_base_url, api_key="sk-test-fake", max_retries=0)


def png_data_url(width: int, height: int) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_non_streaming_usage_matches_tokenizer(sim: RunningSimulator) -> None:
    response = client(sim).chat.completions.create(model="qwen-plus-test", messages=MESSAGES, max_tokens=40)

    text = response.choices[0].message.content or ""
    assert response.usage is not None
    assert response.usage.prompt_tokens == 11
    assert response.usage.completion_tokens == 40
    assert tokens.count_tokens(text) == 40
    assert response.choices[0].finish_reason == "length"
    assert response.id.startswith("chatcmpl-")


def test_model_version_accepted_as_name(sim: RunningSimulator) -> None:
    response = client(sim).chat.completions.create(model="qwen-plus-2025-04-28", messages=MESSAGES, max_tokens=3)

    assert response.usage is not None
    assert response.usage.completion_tokens == 3


def test_streaming_chunks_and_usage(sim: RunningSimulator) -> None:
    stream = client(sim).chat.completions.create(
        model="qwen-plus-test", messages=MESSAGES, max_tokens=25, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    first = chunks[0]
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.content == ""
    texts = [chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices]
    for text in texts[1:-1]:
        assert tokens.count_tokens(text) == 1
    finish = [chunk for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason]
    assert [chunk.choices[0].finish_reason for chunk in finish] == ["length"]
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == 25
    assert tokens.count_tokens("".join(texts)) == 25
    assert len({chunk.id for chunk in chunks}) == 1


def test_streaming_without_include_usage_sends_no_usage(sim: RunningSimulator) -> None:
    chunks = list(client(sim).chat.completions.create(model="qwen-plus-test", messages=MESSAGES, max_tokens=5, stream=True))

    assert all(chunk.usage is None for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


def test_thinking_streams_reasoning_first(sim: RunningSimulator) -> None:
    stream = client(sim).chat.completions.create(
        model="qwen-plus-test",
        messages=MESSAGES,
        max_tokens=30,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"enable_thinking": True},
    )
    kinds: list[str] = []
    reasoning = content = ""
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        extra = getattr(delta, "reasoning_content", None)
        if extra:
            kinds.append("reasoning")
            reasoning += extra
        if delta.content:
            kinds.append("content")
            content += delta.content

    assert kinds.index("content") > kinds.index("reasoning")
    assert "reasoning" not in kinds[kinds.index("content"):]
    assert usage is not None
    assert usage.completion_tokens == 30
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == tokens.count_tokens(reasoning)
    assert tokens.count_tokens(reasoning) + tokens.count_tokens(content) == 30


def test_thinking_non_streaming(sim: RunningSimulator) -> None:
    response = client(sim).chat.completions.create(
        model="qwen-plus-test", messages=MESSAGES, max_tokens=20, extra_body={"enable_thinking": True}
    )
    message = response.choices[0].message

    reasoning = getattr(message, "reasoning_content", None) or ""
    assert response.usage is not None
    assert response.usage.completion_tokens_details is not None
    assert response.usage.completion_tokens_details.reasoning_tokens == tokens.count_tokens(reasoning) == 10
    assert tokens.count_tokens(message.content or "") == 10


def test_vision_image_tokens_from_data_url(vl_sim: RunningSimulator) -> None:
    url = png_data_url(2048, 1365)
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "描述这张图"}]}]

    response = client(vl_sim).chat.completions.create(model="qwen-vl-plus-test", messages=messages, max_tokens=5)  # type: ignore[arg-type]
    high = client(vl_sim).chat.completions.create(
        model="qwen-vl-plus-test", messages=messages, max_tokens=5, extra_body={"vl_high_resolution_images": True}  # type: ignore[arg-type]
    )

    text_tokens = tokens.count_tokens("描述这张图") + 5 + 3
    assert response.usage is not None
    assert response.usage.prompt_tokens == text_tokens + 1247 + tokens.VISION_MARKER_TOKENS
    assert high.usage is not None
    assert high.usage.prompt_tokens == text_tokens + 3577 + tokens.VISION_MARKER_TOKENS


def test_vision_streaming(vl_sim: RunningSimulator) -> None:
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_data_url(56, 56)}}, {"type": "text", "text": "hi"}]}]
    chunks = list(
        client(vl_sim).chat.completions.create(
            model="qwen-vl-plus-test", messages=messages, max_tokens=6, stream=True, stream_options={"include_usage": True}  # type: ignore[arg-type]
        )
    )

    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 6
    assert chunks[-1].usage.prompt_tokens == tokens.count_tokens("hi") + 5 + 3 + 4 + tokens.VISION_MARKER_TOKENS


def test_repeated_prefix_reports_cached_tokens(sim: RunningSimulator) -> None:
    system = {"role": "system", "content": "You are a careful assistant. " * 80}
    first = client(sim).chat.completions.create(model="qwen-plus-test", messages=[system, {"role": "user", "content": "one"}], max_tokens=2)
    second = client(sim).chat.completions.create(model="qwen-plus-test", messages=[system, {"role": "user", "content": "two"}], max_tokens=2)

    assert first.usage is not None and second.usage is not None
    assert first.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.usage.prompt_tokens_details is not None
    assert second.usage.prompt_tokens_details.cached_tokens == tokens.count_tokens(system["content"]) + 5


def test_prompt_cache_can_be_switched_off() -> None:
    system = {"role": "system", "content": "You are a careful assistant. " * 80}
    with start_simulator(make_config(prompt_cache=False)) as sim:
        for question in ("one", "two"):
            response = client(sim).chat.completions.create(
                model="qwen-plus-test", messages=[system, {"role": "user", "content": question}], max_tokens=2
            )
            assert response.usage is not None
            assert response.usage.prompt_tokens_details is not None
            assert response.usage.prompt_tokens_details.cached_tokens == 0


def test_models_lists_both_names(sim: RunningSimulator) -> None:
    names = {model.id for model in client(sim).models.list()}

    assert names == {"qwen-plus-test", "qwen-plus-2025-04-28"}


def test_request_id_header_matches_body(sim: RunningSimulator) -> None:
    raw = client(sim).chat.completions.with_raw_response.create(model="qwen-plus-test", messages=MESSAGES, max_tokens=2)

    request_id = raw.headers["x-request-id"]
    assert raw.parse().id == f"chatcmpl-{request_id}"
    entries = sim.stats()["requests"]
    assert [entry["request_id"] for entry in entries] == [request_id]


def test_unknown_model_is_404(sim: RunningSimulator) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client(sim).chat.completions.create(model="qwen-plus-other", messages=MESSAGES, max_tokens=2)

    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"


def test_stream_option_over_raw_http(sim: RunningSimulator) -> None:
    response = httpx.post(
        sim.openai_base_url + "/chat/completions",
        json={"model": "qwen-plus-test", "messages": MESSAGES, "max_tokens": 3, "stream": True},
    )

    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.endswith("data: [DONE]\n\n")
    assert response.text.count("data: ") == 6

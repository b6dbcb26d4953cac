"""Error shapes of both APIs, and the two delivery styles of errors on streaming requests."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from conftest import make_config
from dashscope import Generation
from openai import OpenAI

from ptu_verify.simulator import RunningSimulator, start_simulator

COMPAT_PATH = "/compatible-mode/v1/chat/completions"
NATIVE_PATH = "/api/v1/services/aigc/text-generation/generation"
MESSAGES = [{"role": "user", "content": "hi"}]


def compat_body(**fields: Any) -> dict[str, Any]:
    return {"model": "qwen-plus-test", "messages": MESSAGES, "max_tokens": 3, **fields}


def native_body(messages: Any = MESSAGES, **parameters: Any) -> dict[str, Any]:
    return {"model": "qwen-plus-test", "input": {"messages": messages}, "parameters": {"max_tokens": 3, **parameters}}


def error_code(path: str, response: httpx.Response) -> str:
    payload = response.json()
    assert payload["request_id"] == response.headers["x-request-id"]
    if path == COMPAT_PATH:
        assert set(payload["error"]) == {"message", "type", "param", "code"}
        return str(payload["error"]["code"])
    assert set(payload) == {"code", "message", "request_id"}
    return str(payload["code"])


@pytest.fixture(scope="module")
def keyed_sim() -> Any:
    with start_simulator(make_config(api_key="sk-test-right", max_body_bytes=20_000)) as running:
        yield running


@pytest.mark.parametrize(
    ("path", "content", "status", "code"),
    [
        (COMPAT_PATH, b"{not json", 400, "invalid_parameter_error"),
        (NATIVE_PATH, b"{not json", 400, "InvalidParameter"),
        (COMPAT_PATH, json.dumps(compat_body(messages=[])).encode(), 400, "invalid_parameter_error"),
        (NATIVE_PATH, json.dumps(native_body(messages=[])).encode(), 400, "InvalidParameter"),
        (COMPAT_PATH, json.dumps(compat_body(max_tokens=0)).encode(), 400, "invalid_parameter_error"),
        (NATIVE_PATH, json.dumps(native_body(max_tokens=100_000)).encode(), 400, "InvalidParameter"),
        (COMPAT_PATH, json.dumps(compat_body(messages=[{"role": "user", "content": {"text": "hi"}}])).encode(), 400, "invalid_parameter_error"),
        (NATIVE_PATH, json.dumps(native_body(messages=[{"role": "user", "content": 42}])).encode(), 400, "InvalidParameter"),
        (COMPAT_PATH, json.dumps(compat_body(model="qwen-max-abc")).encode(), 404, "model_not_found"),
        (NATIVE_PATH, json.dumps({**native_body(), "model": "qwen-max-abc"}).encode(), 404, "ModelNotFound"),
        (COMPAT_PATH, json.dumps(compat_body(padding="x" * 30_000)).encode(), 413, "request_too_large"),
        (NATIVE_PATH, json.dumps({**native_body(), "padding": "x" * 30_000}).encode(), 413, "RequestTooLarge"),
    ],
)
def test_error_shapes(keyed_sim: RunningSimulator, path: str, content: bytes, status: int, code: str) -> None:
    response = httpx.post(
        keyed_sim.base_url + path, content=content, headers={"Authorization": "Bearer sk-test-right", "Content-Type": "application/json"}
    )

    assert response.status_code == status
    assert error_code(path, response) == code


@pytest.mark.parametrize(("path", "code"), [(COMPAT_PATH, "invalid_api_key"), (NATIVE_PATH, "InvalidApiKey")])
def test_wrong_key_is_401(keyed_sim: RunningSimulator, path: str, code: str) -> None:
    body = compat_body() if path == COMPAT_PATH else native_body()
    response = httpx.post(keyed_sim.base_url + path, json=body, headers={"Authorization": "Bearer sk-test-wrong"})

    assert response.status_code == 401
    assert error_code(path, response) == code


def test_right_key_is_served(keyed_sim: RunningSimulator) -> None:
    client = OpenAI(base_url=keyed_sim.openai_base_url, api_key="sk-test-right", max_retries=0)

    response = client.chat.completions.create(model="qwen-plus-test", messages=MESSAGES, max_tokens=2)  # type: ignore[arg-type]

    assert response.usage is not None
    assert response.usage.completion_tokens == 2


def test_sdks_see_401(keyed_sim: RunningSimulator) -> None:
    client = OpenAI(base_url=keyed_sim.openai_base_url, api_key="sk-test-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="qwen-plus-test", messages=MESSAGES, max_tokens=2)  # type: ignore[arg-type]
    native = Generation.call(model="qwen-plus-test", messages=MESSAGES, api_key="sk-test-wrong", base_address=keyed_sim.dashscope_base_url)

    assert caught.value.code == "invalid_api_key"
    assert native.status_code == 401
    assert native.code == "InvalidApiKey"


def throttled_sim(**knobs: Any) -> RunningSimulator:
    """A simulator whose token budget is spent by the first 100-token request."""
    return start_simulator(make_config(capacity_factor=0.0005, enforce_qpm=False, natural_length_fixed=100, **knobs))


def test_plain_http_style_on_streams() -> None:
    with throttled_sim() as sim:
        client = OpenAI(base_url=sim.openai_base_url, api_key="sk-test-fake", max_retries=0)
        client.chat.completions.create(model="qwen-plus-test", messages=MESSAGES, max_tokens=100)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError) as caught:
            list(client.chat.completions.create(model="qwen-plus-test", messages=MESSAGES, max_tokens=100, stream=True))  # type: ignore[arg-type]
        native = list(Generation.call(model="qwen-plus-test", messages=MESSAGES, api_key="sk-test-fake", base_address=sim.dashscope_base_url, stream=True))

    assert caught.value.status_code == 429
    assert caught.value.code == "insufficient_quota"
    assert native[0].status_code == 429
    assert native[0].code == "Throttling.AllocationQuota"


def test_sse_event_style_on_streams() -> None:
    with throttled_sim(error_style="sse_event") as sim:
        httpx.post(sim.base_url + COMPAT_PATH, json=compat_body(max_tokens=100))
        compat = httpx.post(sim.base_url + COMPAT_PATH, json=compat_body(stream=True))
        native = httpx.post(sim.base_url + NATIVE_PATH, json=native_body(), headers={"X-DashScope-SSE": "enable"})
        not_streaming = httpx.post(sim.base_url + NATIVE_PATH, json=native_body())
        totals = sim.stats()["totals"]

    for response, code in ((compat, "insufficient_quota"), (native, "Throttling.AllocationQuota")):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.text.strip("\n").split("\n")
        assert lines[:3] == ["id:1", "event:error", ":HTTP_STATUS/429"]
        payload = json.loads(lines[3][len("data:"):])
        assert payload["code"] == code
        assert payload["request_id"] == response.headers["x-request-id"]
    assert not_streaming.status_code == 429
    assert totals["throttled_by_code"] == {"insufficient_quota": 1, "Throttling.AllocationQuota": 2}


def test_sse_event_style_through_sdks() -> None:
    with throttled_sim(error_style="sse_event") as sim:
        client = OpenAI(base_url=sim.openai_base_url, api_key="sk-test-fake", max_retries=0)
        client.chat.completions.create(model="qwen-plus-test", messages=MESSAGES, max_tokens=100)  # type: ignore[arg-type]
        chunks = list(client.chat.completions.create(model="qwen-plus-test", messages=MESSAGES, max_tokens=100, stream=True))  # type: ignore[arg-type]
        native = list(Generation.call(model="qwen-plus-test", messages=MESSAGES, api_key="sk-test-fake", base_address=sim.dashscope_base_url, stream=True))

    assert len(chunks) == 1
    assert chunks[0].choices is None
    assert (chunks[0].model_extra or {})["code"] == "insufficient_quota"
    # dashscope 2.0.2 ignores the :HTTP_STATUS line and reports in-stream errors as 400.
    assert native[0].status_code == 400
    assert native[0].code == "Throttling.AllocationQuota"

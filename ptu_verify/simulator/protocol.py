"""Wire shapes of both APIs: SSE frames, final bodies and error bodies.

Frames are built by string formatting from pieces that were JSON-escaped once, so the per-event
cost is one format call (no json.dumps on the hot path).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "ERRORS",
    "CompatFrames",
    "ErrorKind",
    "ErrorSpec",
    "NativeFrames",
    "Usage",
    "error_body",
    "sse_error_frame",
]

ErrorKind = Literal["token", "request", "burst", "bad_request", "auth", "not_found", "too_large", "internal", "unavailable"]


@dataclass(frozen=True)
class ErrorSpec:
    """One error: HTTP status, native code, compat code and type, and the default message."""

    status: int
    native_code: str
    compat_code: str
    compat_type: str
    message: str


# Codes and messages as the DashScope error-code page documents them. The 413 code is not
# documented; RequestTooLarge is this simulator's choice.
ERRORS: dict[str, ErrorSpec] = {
    "token": ErrorSpec(429, "Throttling.AllocationQuota", "insufficient_quota", "insufficient_quota", "Allocated quota exceeded, please increase your quota limit."),
    "request": ErrorSpec(429, "Throttling.RateQuota", "limit_requests", "limit_requests", "Requests rate limit exceeded, please try again later."),
    "burst": ErrorSpec(
        429,
        "Throttling.BurstRate",
        "limit_burst_rate",
        "limit_burst_rate",
        "Request rate increased too quickly. To ensure system stability, please adjust your client logic to scale requests more smoothly over time.",
    ),
    "bad_request": ErrorSpec(400, "InvalidParameter", "invalid_parameter_error", "invalid_request_error", "Invalid parameter."),
    "auth": ErrorSpec(401, "InvalidApiKey", "invalid_api_key", "invalid_request_error", "Invalid API-key provided."),
    "not_found": ErrorSpec(404, "ModelNotFound", "model_not_found", "invalid_request_error", "Model not found."),
    "too_large": ErrorSpec(413, "RequestTooLarge", "request_too_large", "invalid_request_error", "Request body is too large."),
    "internal": ErrorSpec(500, "InternalError", "internal_error", "internal_error", "An internal error has occured, please try again later."),
    "unavailable": ErrorSpec(503, "ModelUnavailable", "model_unavailable", "service_unavailable", "Model is unavailable, please try again later."),
}


@dataclass(frozen=True)
class Usage:
    """Token counts of one response."""

    input_tokens: int
    cached_tokens: int
    image_tokens: int
    output_tokens: int
    reasoning_tokens: int


def error_body(api: str, kind: str, request_id: str, message: str | None = None) -> dict[str, Any]:
    """Return the JSON error body in the shape of ``api`` (openai or dashscope)."""
    spec = ERRORS[kind]
    text = message or spec.message
    if api == "openai":
        return {"error": {"message": text, "type": spec.compat_type, "param": None, "code": spec.compat_code}, "request_id": request_id}
    return {"code": spec.native_code, "message": text, "request_id": request_id}


def sse_error_frame(api: str, kind: str, request_id: str, event_id: int = 1, message: str | None = None, compat_shape: str = "event") -> str:
    """Return an in-band error frame.

    The ``event`` shape is an ``event:error`` frame carrying the real status in a ``:HTTP_STATUS/<code>``
    line. With ``compat_shape="data"`` an openai stream gets ``data: {"error": {...}}`` instead, the
    shape OpenAI-style servers use.
    """
    spec = ERRORS[kind]
    if api == "openai" and compat_shape == "data":
        return f"data: {json.dumps(error_body(api, kind, request_id, message), ensure_ascii=False)}\n\n"
    body = {"request_id": request_id, "code": spec.native_code if api == "dashscope" else spec.compat_code, "message": message or spec.message}
    return f"id:{event_id}\nevent:error\n:HTTP_STATUS/{spec.status}\ndata:{json.dumps(body, ensure_ascii=False)}\n\n"


def _compat_usage(usage: Usage) -> str:
    total = usage.input_tokens + usage.output_tokens
    return (
        f'{{"prompt_tokens":{usage.input_tokens},"completion_tokens":{usage.output_tokens},"total_tokens":{total},'
        f'"prompt_tokens_details":{{"cached_tokens":{usage.cached_tokens}}},'
        f'"completion_tokens_details":{{"reasoning_tokens":{usage.reasoning_tokens}}}}}'
    )


class CompatFrames:
    """OpenAI-compatible chunks of one response."""

    def __init__(self, request_id: str, model: str, thinking: bool, include_usage: bool) -> None:
        self.thinking = thinking
        self.include_usage = include_usage
        created = int(time.time())
        usage_field = ',"usage":null' if include_usage else ""
        self._head = f'data: {{"id":"chatcmpl-{request_id}","object":"chat.completion.chunk","created":{created},"model":{json.dumps(model)},"choices":[{{"index":0,"delta":'
        self._tail_open = f',"finish_reason":null,"logprobs":null}}]{usage_field}}}\n\n'
        self._usage_head = f'data: {{"id":"chatcmpl-{request_id}","object":"chat.completion.chunk","created":{created},"model":{json.dumps(model)},"choices":[],"usage":'
        if thinking:
            self._content_open = self._head + '{"content":"'
            self._content_close = '","reasoning_content":null}' + self._tail_open
            self._reasoning_open = self._head + '{"content":null,"reasoning_content":"'
        else:
            self._content_open = self._reasoning_open = self._head + '{"content":"'
            self._content_close = '"}' + self._tail_open
        self._reasoning_close = '"}' + self._tail_open

    def role(self) -> str:
        """Return the first chunk: the role with empty content."""
        if self.thinking:
            return self._head + '{"content":null,"role":"assistant","reasoning_content":""}' + self._tail_open
        return self._head + '{"content":"","role":"assistant"}' + self._tail_open

    def text(self, escaped: str, reasoning: bool, produced: int) -> str:
        """Return a chunk with generated text (``produced`` is unused: compat chunks carry no running usage)."""
        if reasoning:
            return self._reasoning_open + escaped + self._reasoning_close
        return self._content_open + escaped + self._content_close

    def finish(self, finish_reason: str, usage: Usage) -> str:
        """Return the finish chunk, the usage chunk (with include_usage) and ``[DONE]``."""
        usage_field = ',"usage":null' if self.include_usage else ""
        frames = self._head + '{"content":""}' + f',"finish_reason":"{finish_reason}","logprobs":null}}]{usage_field}}}\n\n'
        if self.include_usage:
            frames += self._usage_head + _compat_usage(usage) + "}\n\n"
        return frames + "data: [DONE]\n\n"

    def malformed(self) -> str:
        """Return a chunk whose JSON is cut short."""
        return self._head + '{"content":"\n\n'

    @staticmethod
    def body(request_id: str, model: str, content: str, reasoning: str | None, finish_reason: str, usage: Usage) -> dict[str, Any]:
        """Return a non-streaming chat.completion object."""
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if reasoning is not None:
            message["reasoning_content"] = reasoning
        return {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
            "usage": json.loads(_compat_usage(usage)),
            "system_fingerprint": None,
        }


class NativeFrames:
    """DashScope native events of one response: id/event/:HTTP_STATUS/data with running usage."""

    def __init__(
        self,
        request_id: str,
        usage_base: Usage,
        thinking: bool,
        multimodal: bool,
        incremental: bool,
        result_format: str,
    ) -> None:
        self.request_id = request_id
        self.thinking = thinking
        self.multimodal = multimodal
        self.incremental = incremental
        self.text_format = result_format == "text" and not multimodal
        self.input_tokens = usage_base.input_tokens
        self.cached_tokens = usage_base.cached_tokens
        self.image_tokens = usage_base.image_tokens
        self.event_id = 0
        self._content_so_far: list[str] = []
        self._reasoning_so_far: list[str] = []

    def _usage(self, produced: int, reasoning_tokens: int) -> str:
        parts = [f'"input_tokens":{self.input_tokens}', f'"output_tokens":{produced}', f'"total_tokens":{self.input_tokens + produced}']
        if self.image_tokens:
            parts.append(f'"image_tokens":{self.image_tokens}')
        if self.cached_tokens:
            parts.append(f'"prompt_tokens_details":{{"cached_tokens":{self.cached_tokens}}}')
        if self.thinking:
            parts.append(f'"output_tokens_details":{{"reasoning_tokens":{reasoning_tokens}}}')
        return "{" + ",".join(parts) + "}"

    def _output(self, content: str, reasoning: str, finish_reason: str) -> str:
        if self.text_format:
            return f'{{"text":"{content}","finish_reason":"{finish_reason}"}}'
        content_field = f'[{{"text":"{content}"}}]' if self.multimodal else f'"{content}"'
        reasoning_field = f',"reasoning_content":"{reasoning}"' if self.thinking else ""
        return f'{{"choices":[{{"message":{{"content":{content_field}{reasoning_field},"role":"assistant"}},"finish_reason":"{finish_reason}"}}]}}'

    def _event(self, output: str, usage: str) -> str:
        self.event_id += 1
        return f'id:{self.event_id}\nevent:result\n:HTTP_STATUS/200\ndata:{{"output":{output},"usage":{usage},"request_id":"{self.request_id}"}}\n\n'

    def text(self, escaped: str, reasoning: bool, produced: int, reasoning_tokens: int = 0) -> str:
        """Return an event with new text (incremental) or all text so far (cumulative)."""
        if reasoning:
            content, thought = "", escaped
        else:
            content, thought = escaped, ""
        if not self.incremental:
            # Thinking requires incremental output, so cumulative text is always content.
            self._content_so_far.append(escaped)
            content = "".join(self._content_so_far)
        return self._event(self._output(content, thought, "null"), self._usage(produced, reasoning_tokens))

    def finish(self, finish_reason: str, usage: Usage) -> str:
        """Return the last event: empty text (incremental) or the whole text (cumulative), the finish reason."""
        content = "" if self.incremental else "".join(self._content_so_far)
        return self._event(self._output(content, "", finish_reason), self._usage(usage.output_tokens, usage.reasoning_tokens))

    def malformed(self) -> str:
        """Return an event whose JSON is cut short."""
        self.event_id += 1
        return f'id:{self.event_id}\nevent:result\n:HTTP_STATUS/200\ndata:{{"output":{{"choices":[{{"message":\n\n'

    def error(self, kind: str) -> str:
        """Return an in-band error event that continues the event numbering."""
        self.event_id += 1
        return sse_error_frame("dashscope", kind, self.request_id, self.event_id)

    def body(self, content: str, reasoning: str | None, finish_reason: str, usage: Usage) -> dict[str, Any]:
        """Return a non-streaming response body."""
        usage_json = json.loads(self._usage(usage.output_tokens, usage.reasoning_tokens))
        if self.text_format:
            output: dict[str, Any] = {"text": content, "finish_reason": finish_reason}
        else:
            message: dict[str, Any] = {"role": "assistant", "content": [{"text": content}] if self.multimodal else content}
            if reasoning is not None:
                message["reasoning_content"] = reasoning
            output = {"choices": [{"finish_reason": finish_reason, "message": message}]}
        return {"output": output, "usage": usage_json, "request_id": self.request_id}

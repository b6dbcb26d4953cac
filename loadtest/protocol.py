"""Request bodies and stream interpretation for the OpenAI-compatible and the DashScope native API.

Nothing here does I/O or reads a clock: ``build_request`` turns a RequestSpec into URL, headers and
JSON body, and the interpreters turn one parsed event (or SDK chunk as a dict) into a StreamUpdate
that measure.py times. Transports that parse the stream themselves and transports that use an SDK
share these interpreters, so both APIs are read by one set of rules.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from loadtest.sse import SSEEvent

__all__ = [
    "Api",
    "DashScopeInterpreter",
    "OpenAIInterpreter",
    "PreparedRequest",
    "StreamError",
    "StreamUpdate",
    "Usage",
    "build_request",
    "has_images",
    "make_interpreter",
    "parse_error_body",
    "to_native_messages",
]

Api = Literal["openai", "dashscope"]

COMPAT_CHAT_PATH = "/chat/completions"
NATIVE_TEXT_PATH = "/services/aigc/text-generation/generation"
NATIVE_MULTIMODAL_PATH = "/services/aigc/multimodal-generation/generation"


@dataclass
class PreparedRequest:
    """One HTTP request ready to send. ``headers`` include the Authorization header: never log them."""

    url: str
    headers: dict[str, str]
    body: dict[str, Any]
    multimodal: bool  # native API only: the multimodal-generation endpoint is used

    def body_bytes(self) -> bytes:
        """Return the JSON body, UTF-8 encoded."""
        return json.dumps(self.body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass
class Usage:
    """Token usage reported by the server, in the record's terms."""

    input_tokens: int | None = None
    output_tokens: int | None = None  # includes reasoning tokens
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None
    image_tokens: int | None = None


@dataclass
class StreamError:
    """An error reported by the server, in the HTTP status or inside the stream."""

    code: str | None
    message: str | None
    status_code: int | None = None  # the :HTTP_STATUS/<code> comment of an in-stream error frame


@dataclass
class StreamUpdate:
    """The change one event brings. ``content``, ``reasoning`` and ``tool_text`` contain only the new text."""

    content: str = ""
    reasoning: str = ""
    tool_call: bool = False  # the event carried a tool-call fragment
    tool_text: str = ""  # tool-call name and argument text, for token estimation
    usage: Usage | None = None
    finish_reason: str | None = None
    done: bool = False  # the compat [DONE] sentinel
    error: StreamError | None = None
    request_id: str | None = None

    @property
    def generated(self) -> bool:
        """True when the event carried a generated token of any kind."""
        return bool(self.content or self.reasoning or self.tool_call)


# ---------------------------------------------------------------- requests


def has_images(messages: list[dict[str, Any]]) -> bool:
    """Return True when any message has an image part, in either API's shape."""
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and (part.get("type") == "image_url" or "image" in part):
                    return True
    return False


def to_native_messages(messages: list[dict[str, Any]], *, multimodal: bool) -> list[dict[str, Any]]:
    """Convert OpenAI-style messages to the native shape.

    For the multimodal endpoint every content becomes a list of ``{"image": url}`` / ``{"text": …}``
    parts; for the text endpoint content lists are joined into one string.
    """
    converted: list[dict[str, Any]] = []
    for message in messages:
        new_message = {key: value for key, value in message.items() if key != "content"}
        content = message.get("content")
        parts = _native_parts(content)
        if multimodal:
            new_message["content"] = parts
        elif isinstance(content, list):
            new_message["content"] = "".join(part.get("text", "") for part in parts)
        else:
            new_message["content"] = content
        converted.append(new_message)
    return converted


def _native_parts(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}]
    parts: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            parts.append({"image": url})
        elif part.get("type") == "text":
            parts.append({"text": part.get("text", "")})
        else:
            parts.append(dict(part))  # already native: {"text": …}, {"image": …}
    return parts


def build_request(
    api: Api,
    *,
    base_url: str,
    deployment_code: str,
    messages: list[dict[str, Any]],
    max_tokens: int | None,
    api_key: str | None,
    thinking: bool | None,
    incremental_output: bool = True,
    extra_params: dict[str, Any] | None = None,
) -> PreparedRequest:
    """Build the streaming request for ``api``. ``base_url`` is …/compatible-mode/v1 or …/api/v1."""
    base = base_url.rstrip("/")
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    extra = copy.deepcopy(extra_params or {})

    if api == "openai":
        body: dict[str, Any] = {"model": deployment_code, "messages": messages, "stream": True}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if thinking is not None:
            body["enable_thinking"] = thinking
        body.update(extra)
        # Usage is always requested: without it output tokens can only be estimated.
        stream_options = dict(body.get("stream_options") or {})
        stream_options["include_usage"] = True
        body["stream_options"] = stream_options
        return PreparedRequest(base + COMPAT_CHAT_PATH, headers, body, multimodal=False)

    multimodal = has_images(messages)
    parameters: dict[str, Any] = {"result_format": "message", "incremental_output": incremental_output}
    if max_tokens is not None:
        parameters["max_tokens"] = max_tokens
    if thinking is not None:
        parameters["enable_thinking"] = thinking
        if thinking:
            parameters["incremental_output"] = True  # the service rejects thinking without it
    parameters.update(extra)
    body = {
        "model": deployment_code,
        "input": {"messages": to_native_messages(messages, multimodal=multimodal)},
        "parameters": parameters,
    }
    headers["X-DashScope-SSE"] = "enable"
    path = NATIVE_MULTIMODAL_PATH if multimodal else NATIVE_TEXT_PATH
    return PreparedRequest(base + path, headers, body, multimodal=multimodal)


# ---------------------------------------------------------------- responses


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    """Return the text of a content value: a string, or a list of text parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(part.get("text", "") for part in value if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


def _tool_text(tool_calls: Any) -> tuple[bool, str]:
    """Return whether ``tool_calls`` contains any fragment, and its name and argument text."""
    if not isinstance(tool_calls, list) or not tool_calls:
        return False, ""
    pieces: list[str] = []
    for call in tool_calls:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            pieces.append(str(function.get("name") or ""))
            pieces.append(str(function.get("arguments") or ""))
    return True, "".join(pieces)


def _finish_reason(value: Any) -> str | None:
    # The native API sends the string "null" until the last event.
    if not isinstance(value, str) or value in ("", "null"):
        return None
    return value


def _error_from_mapping(obj: dict[str, Any], status: int | None) -> StreamError | None:
    """Return the error in a compat ``{"error": …}`` or native ``{"code": …}`` body, or None."""
    error = obj.get("error")
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        return StreamError(str(code) if code else None, _str_or_none(error.get("message")), status)
    if isinstance(error, str) and error:
        return StreamError(None, error, status)
    code = obj.get("code")
    if isinstance(code, str) and code and "choices" not in obj and "output" not in obj:
        return StreamError(code, _str_or_none(obj.get("message")), status)
    return None


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _load_json(data: str) -> Any:
    # orjson cuts the fast transport's CPU per event by about a quarter compared with json
    # (docs/benchmarks.md). Like json, it raises a ValueError subclass on bad input.
    try:
        return orjson.loads(data)
    except ValueError:
        return None


def _is_error_frame(event: SSEEvent) -> bool:
    """True for ``event:error`` frames and frames whose ``:HTTP_STATUS`` comment is an error status."""
    status = event.http_status
    return event.event == "error" or (status is not None and status >= 400)


def _decode_event(event: SSEEvent) -> StreamUpdate | dict[str, Any] | None:
    """Return the JSON object of an event, or the update for events that have none ([DONE], bad data)."""
    if event.data is None:
        if _is_error_frame(event):
            return StreamUpdate(error=StreamError(None, "error event without data", event.http_status))
        return None
    data = event.data.strip()
    if data == "[DONE]":
        return StreamUpdate(done=True)
    obj = _load_json(data)
    if not isinstance(obj, dict):
        message = "event data is not a JSON object: " + data[:80]
        return StreamUpdate(error=StreamError("invalid_event", message, event.http_status))
    return obj


class OpenAIInterpreter:
    """Interpret OpenAI-compatible chat-completion chunks."""

    def interpret_event(self, event: SSEEvent) -> StreamUpdate | None:
        """Interpret one SSE event; None for events without data (comments, keep-alives)."""
        decoded = _decode_event(event)
        if not isinstance(decoded, dict):
            return decoded
        update = self.interpret_chunk(decoded, status=event.http_status)
        if update.error is None and _is_error_frame(event):
            update.error = StreamError(None, (event.data or "")[:200], event.http_status)
        return update

    def interpret_chunk(self, obj: dict[str, Any], *, status: int | None = None) -> StreamUpdate:
        """Interpret one chunk (also a non-streaming completion, whose choices carry ``message``)."""
        # Fast path for the common chunk: one choice whose delta contains only text. The general code
        # below gives the same update, and this path saves about 5 % of the CPU per event.
        choices = obj.get("choices")
        if type(choices) is list and len(choices) == 1 and "error" not in obj:
            choice = choices[0]
            delta = choice.get("delta") if type(choice) is dict else None
            if type(delta) is dict and delta and not delta.get("tool_calls") and not delta.get("reasoning_content"):
                content = delta.get("content")
                if content is None or type(content) is str:
                    usage = obj.get("usage")
                    return StreamUpdate(
                        content=content or "",
                        finish_reason=_finish_reason(choice.get("finish_reason")),
                        usage=_compat_usage(usage) if isinstance(usage, dict) else None,
                        request_id=_str_or_none(obj.get("request_id")),
                    )

        update = StreamUpdate(request_id=_str_or_none(obj.get("request_id")))
        update.error = _error_from_mapping(obj, status)
        if update.error is not None:
            return update

        choices = obj.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if not isinstance(choice, dict):
                    continue
                delta = _mapping(choice.get("delta") or choice.get("message"))
                update.content += _text(delta.get("content"))
                reasoning = delta.get("reasoning_content")
                update.reasoning += reasoning if isinstance(reasoning, str) else ""
                has_tool, tool_text = _tool_text(delta.get("tool_calls"))
                update.tool_call = update.tool_call or has_tool
                update.tool_text += tool_text
                update.finish_reason = _finish_reason(choice.get("finish_reason")) or update.finish_reason

        usage = obj.get("usage")
        if isinstance(usage, dict):
            update.usage = _compat_usage(usage)
        return update


def _compat_usage(usage: dict[str, Any]) -> Usage:
    prompt_details = _mapping(usage.get("prompt_tokens_details"))
    completion_details = _mapping(usage.get("completion_tokens_details"))
    return Usage(
        input_tokens=_int(usage.get("prompt_tokens")),
        output_tokens=_int(usage.get("completion_tokens")),
        reasoning_tokens=_int(completion_details.get("reasoning_tokens")),
        cached_tokens=_int(prompt_details.get("cached_tokens")),
        image_tokens=_int(prompt_details.get("image_tokens")),
    )


class DashScopeInterpreter:
    """Interpret DashScope native stream events.

    With ``incremental_output=False`` every event contains the whole text so far, so the new text is
    the difference to the previous event. Usage is running: each event's usage replaces the last.
    """

    def __init__(self, *, incremental_output: bool = True) -> None:
        self.incremental_output = incremental_output
        self._content_so_far = ""
        self._reasoning_so_far = ""

    def interpret_event(self, event: SSEEvent) -> StreamUpdate | None:
        """Interpret one SSE event; None for events without data (comments, keep-alives)."""
        decoded = _decode_event(event)
        if not isinstance(decoded, dict):
            return decoded
        return self.interpret_chunk(decoded, status=event.http_status, is_error=_is_error_frame(event))

    def interpret_chunk(self, obj: dict[str, Any], *, status: int | None = None, is_error: bool = False) -> StreamUpdate:
        """Interpret one event body ``{"output": …, "usage": …, "request_id": …}``."""
        update = StreamUpdate(request_id=_str_or_none(obj.get("request_id")))
        update.error = _error_from_mapping(obj, status)
        if update.error is None and is_error:
            update.error = StreamError(_str_or_none(obj.get("code")), _str_or_none(obj.get("message")), status)
        if update.error is not None:
            return update

        output = obj.get("output")
        if isinstance(output, dict):
            self._read_output(output, update)
        usage = obj.get("usage")
        if isinstance(usage, dict):
            update.usage = _native_usage(usage)
        return update

    def _read_output(self, output: dict[str, Any], update: StreamUpdate) -> None:
        content = ""
        reasoning = ""
        choices = output.get("choices")
        if isinstance(choices, list) and choices:
            choice = _mapping(choices[0])
            message = _mapping(choice.get("message"))
            content = _text(message.get("content"))
            reasoning_value = message.get("reasoning_content")
            reasoning = reasoning_value if isinstance(reasoning_value, str) else ""
            update.tool_call, update.tool_text = _tool_text(message.get("tool_calls"))
            update.finish_reason = _finish_reason(choice.get("finish_reason"))
        else:
            # result_format "text": {"text": …, "finish_reason": …}
            content = _text(output.get("text"))
            update.finish_reason = _finish_reason(output.get("finish_reason"))

        if self.incremental_output:
            update.content, update.reasoning = content, reasoning
            return
        update.content = _new_text(self._content_so_far, content)
        update.reasoning = _new_text(self._reasoning_so_far, reasoning)
        self._content_so_far = content or self._content_so_far
        self._reasoning_so_far = reasoning or self._reasoning_so_far


def _new_text(before: str, now: str) -> str:
    """Return the text added in cumulative mode; an event that rewrote the text counts whole."""
    if not now:
        return ""
    if now.startswith(before):
        return now[len(before) :]
    return now


def _native_usage(usage: dict[str, Any]) -> Usage:
    output_details = _mapping(usage.get("output_tokens_details"))
    input_details = _mapping(usage.get("input_tokens_details") or usage.get("prompt_tokens_details"))
    image_tokens = _int(usage.get("image_tokens"))
    if image_tokens is None:
        image_tokens = _int(input_details.get("image_tokens"))
    return Usage(
        input_tokens=_int(usage.get("input_tokens")),
        output_tokens=_int(usage.get("output_tokens")),
        reasoning_tokens=_int(output_details.get("reasoning_tokens")),
        cached_tokens=_int(input_details.get("cached_tokens")),
        image_tokens=image_tokens,
    )


def make_interpreter(api: Api, *, incremental_output: bool = True) -> OpenAIInterpreter | DashScopeInterpreter:
    """Return a fresh interpreter for one stream of ``api``."""
    if api == "openai":
        return OpenAIInterpreter()
    return DashScopeInterpreter(incremental_output=incremental_output)


def parse_error_body(body: bytes) -> tuple[StreamError, str | None]:
    """Return the error and request id in a non-2xx response body of either API."""
    text = body.decode("utf-8", errors="replace").strip()
    obj = _load_json(text) if text else None
    if isinstance(obj, dict):
        error = _error_from_mapping(obj, None)
        request_id = _str_or_none(obj.get("request_id"))
        if error is not None:
            return error, request_id
        return StreamError(None, text[:300]), request_id
    return StreamError(None, text[:300] or None), None

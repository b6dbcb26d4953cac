"""Request bodies of both APIs turned into one ChatRequest, with prompt and image tokens counted."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import io
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from .. import tokens
from .config import SimulatorConfig

__all__ = ["ChatRequest", "PrefixCache", "RequestRejected", "parse_request"]

logger = logging.getLogger(__name__)


class RequestRejected(Exception):
    """A request rejected with an error before admission. ``kind`` is a key of protocol.ERRORS."""

    def __init__(self, kind: str, message: str | None = None) -> None:
        super().__init__(message or kind)
        self.kind = kind
        self.message = message


@dataclass
class ChatRequest:
    """A chat request of either API, reduced to the fields the simulator uses."""

    model: str
    stream: bool
    max_tokens: int | None
    thinking: bool
    include_usage: bool
    incremental: bool
    result_format: str
    input_tokens: int
    image_tokens: int
    images: int
    message_tokens: list[int] = field(default_factory=list)  # per message: content tokens + template overhead
    message_keys: list[bytes] = field(default_factory=list)  # running hash of the messages up to each one


@functools.lru_cache(maxsize=65536)
def _cached_count(text: str) -> int:
    return tokens.count_tokens(text)


def _image_size(url: str, config: SimulatorConfig) -> tuple[int, int]:
    """Return an image's size: decoded from a data URL, or the configured default for other URLs."""
    if not url.startswith("data:"):
        return config.default_image_width, config.default_image_height
    try:
        header, encoded = url.split(",", 1)
        raw = base64.b64decode(encoded, validate=False) if ";base64" in header else encoded.encode()
        from PIL import Image, UnidentifiedImageError

        with Image.open(io.BytesIO(raw)) as image:
            width, height = image.size
            return int(width), int(height)
    except (ValueError, binascii.Error, OSError, UnidentifiedImageError) as error:
        raise RequestRejected("bad_request", f"The image data URL could not be decoded: {error}.") from None


def _image_urls(content: Any) -> list[str]:
    if not isinstance(content, list):
        return []
    urls: list[str] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "image_url":
            image_url = part.get("image_url")
            urls.append(str(image_url.get("url", "")) if isinstance(image_url, dict) else str(image_url or ""))
        elif "image" in part:
            urls.append(str(part["image"]))
    return urls


def _positive_int(value: Any, name: str, limit: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise RequestRejected("bad_request", f"Range of {name} should be [1, {limit}], got {value!r}.")
    return value


def parse_request(
    api: str,
    body: Any,
    *,
    native_stream: bool,
    multimodal_endpoint: bool,
    config: SimulatorConfig,
) -> ChatRequest:
    """Validate a request body and count its prompt tokens; raise RequestRejected when invalid."""
    if not isinstance(body, dict):
        raise RequestRejected("bad_request", "The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestRejected("bad_request", "Field 'model' is required.")
    if model not in config.model_names():
        raise RequestRejected("not_found", f"Model not exist: {model}.")

    if api == "openai":
        messages = body.get("messages")
        parameters = body
        stream = bool(body.get("stream", False))
        stream_options = body.get("stream_options") or {}
        include_usage = bool(stream_options.get("include_usage")) if isinstance(stream_options, dict) else False
        incremental = True
        result_format = "message"
    else:
        inputs = body.get("input")
        messages = inputs.get("messages") if isinstance(inputs, dict) else None
        raw_parameters = body.get("parameters") or {}
        if not isinstance(raw_parameters, dict):
            raise RequestRejected("bad_request", "Field 'parameters' must be an object.")
        parameters = raw_parameters
        stream = native_stream
        include_usage = True
        incremental = bool(parameters.get("incremental_output", False))
        result_format = str(parameters.get("result_format", "text"))

    if not isinstance(messages, list) or not messages:
        raise RequestRejected("bad_request", "Field 'messages' must be a non-empty list.")
    for message in messages:
        if not isinstance(message, dict) or "role" not in message:
            raise RequestRejected("bad_request", "Each message must be an object with 'role' and 'content'.")
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise RequestRejected("bad_request", "Field 'content' of a message must be a string or a list of parts.")

    max_tokens = _positive_int(parameters.get("max_tokens"), "max_tokens", config.max_output_tokens)
    if api == "openai" and max_tokens is None:
        max_tokens = _positive_int(parameters.get("max_completion_tokens"), "max_completion_tokens", config.max_output_tokens)
    enable_thinking = parameters.get("enable_thinking")
    thinking = bool(enable_thinking)
    if thinking and not incremental:
        raise RequestRejected("bad_request", "This model only support stream mode with incremental_output when enable_thinking is true.")

    vision = config.modality == "vision"
    if api == "dashscope" and multimodal_endpoint != vision:
        endpoint = "multimodal-generation" if vision else "text-generation"
        raise RequestRejected("bad_request", f"Model {model} is served by the {endpoint} endpoint.")

    high_resolution = bool(parameters.get("vl_high_resolution_images", False))
    template = tokens.ChatTemplate(
        per_message=config.template_per_message,
        reply_primer=config.template_reply_primer,
        thinking_off=config.template_thinking_off,
        per_image=config.template_per_image,
    )
    message_tokens: list[int] = []
    keys: list[bytes] = []
    running = hashlib.blake2b(digest_size=16)
    image_total = 0
    images = 0
    for message in messages:
        text, _count = tokens.message_text(message.get("content"))
        urls = _image_urls(message.get("content"))
        if urls and not vision:
            raise RequestRejected("bad_request", f"Model {model} does not accept images.")
        for url in urls:
            width, height = _image_size(url, config)
            image_total += tokens.image_tokens(width, height, patch_px=config.vision_patch_px, high_resolution=high_resolution)
        images += len(urls)
        message_tokens.append(_cached_count(text) + template.per_message + len(urls) * (template.per_image + tokens.VISION_MARKER_TOKENS))
        running.update(json.dumps(message, sort_keys=True, ensure_ascii=False).encode())
        keys.append(running.copy().digest())

    input_tokens = sum(message_tokens) + template.reply_primer + image_total
    if enable_thinking is False:
        input_tokens += template.thinking_off
    return ChatRequest(
        model=model,
        stream=stream,
        max_tokens=max_tokens,
        thinking=thinking,
        include_usage=include_usage,
        incremental=incremental,
        result_format=result_format,
        input_tokens=input_tokens,
        image_tokens=image_total,
        images=images,
        message_tokens=message_tokens,
        message_keys=keys,
    )


class PrefixCache:
    """Prompt prefixes seen before, for cached_tokens: the longest run of leading messages already seen."""

    def __init__(self, min_tokens: int, max_entries: int = 200_000) -> None:
        self.min_tokens = min_tokens
        self.max_entries = max_entries
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def lookup_and_store(self, request: ChatRequest) -> int:
        """Return the cached tokens of ``request`` and remember its prefixes."""
        cached = 0
        running = 0
        for key, count in zip(request.message_keys, request.message_tokens):
            running += count
            if key in self._seen:
                self._seen.move_to_end(key)
                cached = running
        for key in request.message_keys:
            self._seen[key] = None
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
        return cached if cached >= self.min_tokens else 0

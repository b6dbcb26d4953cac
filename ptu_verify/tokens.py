"""Qwen token counting with the tokenizer shipped in the dashscope wheel (works offline)."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "VISION_MARKER_TOKENS",
    "ChatTemplate",
    "DEFAULT_TEMPLATE",
    "count_tokens",
    "encode",
    "decode",
    "message_text",
    "prompt_tokens",
    "image_tokens",
]


# Vision start and end markers around each image, counted in input_tokens but not in image_tokens.
VISION_MARKER_TOKENS = 2


@functools.lru_cache(maxsize=1)
def _tokenizer() -> Any:
    import dashscope

    return dashscope.get_tokenizer("qwen-plus")


def encode(text: str) -> list[int]:
    """Return the Qwen token ids of ``text``."""
    if not text:
        return []
    return list(_tokenizer().encode(text))


def decode(token_ids: Iterable[int]) -> str:
    """Return the text of Qwen token ids."""
    return str(_tokenizer().decode(list(token_ids)))


def count_tokens(text: str) -> int:
    """Return the number of Qwen tokens in ``text``."""
    return len(encode(text))


@dataclass(frozen=True)
class ChatTemplate:
    """Prompt-token overhead of the ChatML chat template.

    Each message costs its content tokens + ``per_message`` (``<|im_start|>role\\n…<|im_end|>\\n``),
    and the reply costs ``reply_primer`` (``<|im_start|>assistant\\n``). Qwen3 hybrid models add
    ``thinking_off`` when thinking is disabled; vision models add ``per_image`` for the
    "Picture N: " label. These are measured against documented usage, not published constants.
    """

    per_message: int = 5
    reply_primer: int = 3
    thinking_off: int = 0
    per_image: int = 0


DEFAULT_TEMPLATE = ChatTemplate()


def message_text(content: Any) -> tuple[str, int]:
    """Return the text of a message's content and its number of images.

    ``content`` is a string or a list of parts in either API's shape
    (``{"type": "text", "text": …}``, ``{"type": "image_url", …}``, ``{"text": …}``, ``{"image": …}``).
    """
    if content is None:
        return "", 0
    if isinstance(content, str):
        return content, 0
    texts: list[str] = []
    images = 0
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, Mapping):
                continue
            if "text" in part and isinstance(part["text"], str):
                texts.append(part["text"])
            elif part.get("type") == "image_url" or "image" in part:
                images += 1
    return "".join(texts), images


def prompt_tokens(
    messages: Iterable[Mapping[str, Any]],
    *,
    template: ChatTemplate = DEFAULT_TEMPLATE,
    thinking: bool | None = None,
) -> int:
    """Return the prompt tokens of a chat request, text only (add image tokens separately).

    ``thinking=False`` adds the template's ``thinking_off`` tokens.
    """
    total = template.reply_primer
    for message in messages:
        text, images = message_text(message.get("content"))
        total += count_tokens(text) + template.per_message + images * template.per_image
    if thinking is False:
        total += template.thinking_off
    return total


def image_tokens(width: int, height: int, *, patch_px: int = 28, high_resolution: bool = False) -> int:
    """Return the tokens of one image for Qwen-VL models, after the service's resize rule.

    The image is scaled to a multiple of ``patch_px`` within [4, 1280] patches (16384 with
    ``high_resolution``). The result is the ``image_tokens`` usage figure; the prompt's
    ``input_tokens`` also counts VISION_MARKER_TOKENS per image.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    factor = patch_px
    min_pixels = 4 * factor * factor
    max_pixels = (16384 if high_resolution else 1280) * factor * factor

    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return (h * w) // (factor * factor)

"""The request spec: what a workload produces and a load-generator client sends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["RequestSpec"]


@dataclass
class RequestSpec:
    """One chat request to send, independent of the API used to send it.

    ``messages`` are OpenAI-style; an image is a content part
    ``{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}`` and the client
    converts it for the native API.
    """

    messages: list[dict[str, Any]]
    max_tokens: int
    workload: str = "default"
    variant: str = "default"
    thinking: bool | None = None  # None: do not send enable_thinking
    extra_params: dict[str, Any] = field(default_factory=dict)  # merged into the request body
    expected_input_tokens: int | None = None  # prompt tokens the workload aimed for, template included
    trace_offset_s: float | None = None  # seconds after the trace's start, for trace timing

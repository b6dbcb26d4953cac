"""Measured statistics of a workload: token counts of generated requests, from the tokenizer."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from ..requests import RequestSpec
from ..tokens import DEFAULT_TEMPLATE, VISION_MARKER_TOKENS, image_tokens, prompt_tokens
from .images import png_size_from_data_url

__all__ = ["TokenStats", "VariantStats", "WorkloadStats", "measure_workload", "measured_input_tokens", "percentile"]


class _RequestSource(Protocol):
    name: str

    def next_request(self) -> RequestSpec: ...


@dataclass(frozen=True)
class TokenStats:
    """Mean and percentiles of a token count over a sample."""

    mean: float
    p50: float
    p90: float
    p99: float
    minimum: int
    maximum: int

    @classmethod
    def of(cls, values: Sequence[int]) -> TokenStats:
        ordered = sorted(values)
        if not ordered:
            return cls(0.0, 0.0, 0.0, 0.0, 0, 0)
        return cls(
            mean=sum(ordered) / len(ordered),
            p50=percentile(ordered, 50),
            p90=percentile(ordered, 90),
            p99=percentile(ordered, 99),
            minimum=ordered[0],
            maximum=ordered[-1],
        )


@dataclass(frozen=True)
class VariantStats:
    """Statistics of one variant (sub-profile) of a workload."""

    variant: str
    requests: int
    share: float  # fraction of the sample
    input_tokens: TokenStats  # measured with the tokenizer, template and images included
    output_tokens: TokenStats  # max_tokens
    tokens_per_request: float  # mean input + mean max_tokens
    images_per_request: float


@dataclass(frozen=True)
class WorkloadStats:
    """The load a workload makes, measured on ``sample`` generated requests."""

    workload: str
    sample: int
    input_tokens: TokenStats
    output_tokens: TokenStats
    tokens_per_request: float
    variants: list[VariantStats]
    # Requests whose measured input differs from expected_input_tokens by more than one token.
    off_target_requests: int
    max_target_error_tokens: int
    generation_requests_per_s: float  # measured without the first request; 0 when sample is 1
    thinking_requests: int

    def qpm_for_tpm(self, tpm: float) -> float:
        """Return the requests per minute that make ``tpm`` tokens per minute (max_tokens fully used)."""
        return tpm / self.tokens_per_request if self.tokens_per_request > 0 else 0.0

    def tpm_for_qpm(self, qpm: float) -> float:
        """Return the tokens per minute that ``qpm`` requests per minute make (max_tokens fully used)."""
        return qpm * self.tokens_per_request

    def as_dict(self) -> dict[str, Any]:
        """Return the statistics as JSON-ready data."""
        return asdict(self)


def percentile(ordered: Sequence[int], percent: float) -> float:
    """Return the ``percent`` percentile of sorted values by linear interpolation."""
    if not ordered:
        return 0.0
    position = (len(ordered) - 1) * percent / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def measured_input_tokens(spec: RequestSpec) -> tuple[int, int]:
    """Return (prompt tokens counted with the tokenizer, number of images) of a request.

    Image tokens follow the resize rule of ptu_verify.tokens.image_tokens. An image whose size
    cannot be read from its data URL (not a PNG data URL) counts only its vision markers.
    """
    total = prompt_tokens(spec.messages, template=DEFAULT_TEMPLATE, thinking=spec.thinking)
    high_resolution = bool(spec.extra_params.get("vl_high_resolution_images", False))
    images = 0
    for message in spec.messages:
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            if not isinstance(part, Mapping):
                continue
            url = _image_url(part)
            if url is None:
                continue
            images += 1
            size = png_size_from_data_url(url)
            total += VISION_MARKER_TOKENS
            if size is not None:
                total += image_tokens(size[0], size[1], high_resolution=high_resolution)
    return total, images


def _image_url(part: Mapping[str, Any]) -> str | None:
    if part.get("type") == "image_url":
        image_url = part.get("image_url")
        if isinstance(image_url, Mapping) and isinstance(image_url.get("url"), str):
            return str(image_url["url"])
        return ""
    if isinstance(part.get("image"), str):
        return str(part["image"])
    return None


def measure_workload(workload: _RequestSource, *, sample: int = 1000) -> WorkloadStats:
    """Generate ``sample`` requests, tokenize each, and summarize per variant and overall."""
    if sample < 1:
        raise ValueError(f"sample must be >= 1, got {sample}")
    # The first request builds shared state (sentence pools, system prompts), so the rate leaves it out.
    specs: list[RequestSpec] = [workload.next_request()]
    started = time.perf_counter()
    for _ in range(sample - 1):
        specs.append(workload.next_request())
    generation_s = time.perf_counter() - started
    timed_requests = sample - 1

    inputs: list[int] = []
    images: list[int] = []
    off_target = 0
    max_error = 0
    for spec in specs:
        measured, image_count = measured_input_tokens(spec)
        inputs.append(measured)
        images.append(image_count)
        if spec.expected_input_tokens is not None:
            error = abs(measured - spec.expected_input_tokens)
            max_error = max(max_error, error)
            off_target += error > 1
    outputs = [spec.max_tokens for spec in specs]

    by_variant: dict[str, list[int]] = {}
    for index, spec in enumerate(specs):
        by_variant.setdefault(spec.variant, []).append(index)
    variants = []
    for variant, indices in by_variant.items():
        variant_inputs = TokenStats.of([inputs[index] for index in indices])
        variant_outputs = TokenStats.of([outputs[index] for index in indices])
        variants.append(
            VariantStats(
                variant=variant,
                requests=len(indices),
                share=len(indices) / sample,
                input_tokens=variant_inputs,
                output_tokens=variant_outputs,
                tokens_per_request=variant_inputs.mean + variant_outputs.mean,
                images_per_request=sum(images[index] for index in indices) / len(indices),
            )
        )
    variants.sort(key=lambda item: -item.requests)

    overall_inputs = TokenStats.of(inputs)
    overall_outputs = TokenStats.of(outputs)
    return WorkloadStats(
        workload=workload.name,
        sample=sample,
        input_tokens=overall_inputs,
        output_tokens=overall_outputs,
        tokens_per_request=overall_inputs.mean + overall_outputs.mean,
        variants=variants,
        off_target_requests=off_target,
        max_target_error_tokens=max_error,
        generation_requests_per_s=timed_requests / generation_s if generation_s > 0 and timed_requests else 0.0,
        thinking_requests=sum(1 for spec in specs if spec.thinking),
    )

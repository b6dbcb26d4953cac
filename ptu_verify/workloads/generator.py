"""Request generation for profiles: messages whose prompt tokens equal the drawn target."""

from __future__ import annotations

import bisect
import hashlib
import itertools
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..requests import RequestSpec
from ..tokens import DEFAULT_TEMPLATE, VISION_MARKER_TOKENS, count_tokens, image_tokens
from .images import png_data_url
from .profile import LeafProfile, MixProfile, SystemPromptSpec
from .textgen import ProseFiller, code_filler, prose_filler, tools_text

__all__ = ["LeafBuilder", "ProfileWorkload"]

logger = logging.getLogger(__name__)

# Fixed parts of the last user message per task and language: (prefix, middle, suffix).
# A prefix ends with a newline; a middle or suffix starts with punctuation, so counts add up.
_TASK_TEXT: dict[tuple[str, str], tuple[str, str, str]] = {
    ("rag", "zh"): ("请根据以下参考资料回答问题。如果资料中没有答案，请直接说明。\n\n", "。\n\n问题：\n", "？"),
    ("rag", "en"): ("Answer the question using only the reference material below. Say so if the answer is not there.\n\n", ".\n\nQuestion:\n", "?"),
    ("summarize", "zh"): ("", "", "。\n\n请用三到五句话总结上文的要点。"),
    ("summarize", "en"): ("", "", ".\n\nSummarize the main points of the text above in three to five sentences."),
    ("code", "zh"): ("请检查下面的代码，指出其中的问题，并给出修改后的版本。\n\n```python\n", "", "```"),
    ("code", "en"): ("Review the code below, point out the problems and give a corrected version.\n\n```python\n", "", "```"),
}
_SYSTEM_OPENING = {
    "zh": "你是一个专业、耐心的智能助手。请用简洁准确的语言回答用户的问题。\n",
    "en": "You are a careful and helpful assistant. Answer the user's questions clearly and accurately.\n",
}
_NONCE_FORMAT = {"zh": "请求编号：{nonce}\n", "en": "Request id: {nonce}\n"}
# Tokens a question in a RAG prompt gets: drawn in this range, then capped by the budget.
_QUESTION_TOKENS = (8, 40)


@dataclass(frozen=True)
class _SystemPrompt:
    text: str
    tokens: int


class LeafBuilder:
    """Builds requests for one leaf profile; the shared system prompt is built once per language."""

    def __init__(self, leaf: LeafProfile) -> None:
        self.leaf = leaf
        self.raised_targets = 0  # requests whose drawn input was below the fixed parts' minimum
        self._system: dict[str, _SystemPrompt] = {}
        self._task_counts: dict[str, tuple[int, int, int]] = {}
        self._size_cumulative = list(itertools.accumulate(leaf.images.weights)) if leaf.images is not None else []

    def build(self, rng: random.Random, *, workload: str) -> RequestSpec:
        """Draw one request."""
        leaf = self.leaf
        language = leaf.language if leaf.language != "mixed" else rng.choice(("zh", "en"))
        target = leaf.input_tokens.sample(rng)
        max_tokens = leaf.output_tokens.sample(rng)
        turns = leaf.turns.sample(rng)

        messages: list[dict[str, Any]] = []
        system_tokens = 0
        if leaf.system_prompt is not None:
            system = self._system_prompt(language, leaf.system_prompt)
            text, system_tokens = system.text, system.tokens
            if leaf.system_prompt.nonce:
                nonce_line = _NONCE_FORMAT[language].format(nonce=f"{rng.getrandbits(64):016x}")
                text = nonce_line + text
                system_tokens += count_tokens(nonce_line)
            messages.append({"role": "system", "content": text})

        # Template: every message costs content + per_message; the reply primer and thinking switch once.
        template = DEFAULT_TEMPLATE
        fixed = template.reply_primer + (template.thinking_off if leaf.thinking is False else 0)
        final_minimum = self._final_minimum(language)
        while turns > 1 and target - fixed - system_tokens - _message_overhead(len(messages), turns) < final_minimum + 4 * (turns - 1):
            turns -= 1
        overhead = fixed + system_tokens + _message_overhead(len(messages), turns)
        budget = target - overhead
        if budget < final_minimum:
            self.raised_targets += 1
            budget = final_minimum

        filler = prose_filler(language)
        history_budgets, final_budget = self._split(rng, budget, turns, final_minimum)
        for index, tokens in enumerate(history_budgets):
            role = "user" if index % 2 == 0 else "assistant"
            messages.append({"role": role, "content": _sentence_block(rng, filler, tokens, question=role == "user")})
        content_text = self._final_text(rng, language, final_budget)
        input_tokens = overhead + budget

        content: Any = content_text
        if leaf.images is not None:
            parts: list[dict[str, Any]] = []
            high_resolution = bool(leaf.extra_params.get("vl_high_resolution_images", False))
            for _ in range(leaf.images.count.sample(rng)):
                width, height = self._image_size(rng)
                parts.append({"type": "image_url", "image_url": {"url": png_data_url(width, height)}})
                input_tokens += image_tokens(width, height, high_resolution=high_resolution) + VISION_MARKER_TOKENS + template.per_image
            if parts:
                content = [*parts, {"type": "text", "text": content_text}]
        messages.append({"role": "user", "content": content})

        return RequestSpec(
            messages=messages,
            max_tokens=max_tokens,
            workload=workload,
            variant=leaf.name,
            thinking=leaf.thinking,
            extra_params=dict(leaf.extra_params),
            expected_input_tokens=input_tokens,
        )

    def _system_prompt(self, language: str, spec: SystemPromptSpec) -> _SystemPrompt:
        cached = self._system.get(language)
        if cached is not None:
            return cached
        if spec.text is not None:
            built = _SystemPrompt(spec.text, count_tokens(spec.text))
        else:
            assert spec.tokens is not None
            built = _generated_system_prompt(self.leaf.name, language, spec.tokens, spec.style)
        self._system[language] = built
        return built

    def _task_parts(self, language: str) -> tuple[str, str, str]:
        return _TASK_TEXT.get((self.leaf.task, language), ("", "", ""))

    def _task_counts_for(self, language: str) -> tuple[int, int, int]:
        counts = self._task_counts.get(language)
        if counts is None:
            prefix, middle, suffix = self._task_parts(language)
            counts = (count_tokens(prefix), count_tokens(middle), count_tokens(suffix))
            self._task_counts[language] = counts
        return counts

    def _final_minimum(self, language: str) -> int:
        prefix, middle, suffix = self._task_counts_for(language)
        if self.leaf.task == "chat":
            return 2  # one word and a question mark
        if self.leaf.task == "rag":
            return prefix + middle + suffix + 1 + 1
        return prefix + middle + suffix + 1

    def _split(self, rng: random.Random, budget: int, turns: int, final_minimum: int) -> tuple[list[int], int]:
        """Share the content budget between history messages (user, assistant, ...) and the last message."""
        if turns == 1:
            return [], budget
        # History weights: a user turn 1, an assistant turn 2; the last message 1 for chat, 4x the history for documents.
        history_weights = [(1.0 if index % 2 == 0 else 2.0) * rng.uniform(0.5, 1.5) for index in range(2 * (turns - 1))]
        final_weight = 1.0 if self.leaf.task == "chat" else 4.0 * sum(history_weights)
        total_weight = sum(history_weights) + final_weight
        spare = budget - final_minimum - 2 * len(history_weights)
        history = [2 + int(spare * weight / total_weight) for weight in history_weights]
        return history, budget - sum(history)

    def _final_text(self, rng: random.Random, language: str, tokens: int) -> str:
        task = self.leaf.task
        filler = prose_filler(language)
        if task == "chat":
            return _sentence_block(rng, filler, tokens, question=True)
        prefix, middle, suffix = self._task_parts(language)
        prefix_tokens, middle_tokens, suffix_tokens = self._task_counts_for(language)
        body_tokens = tokens - prefix_tokens - middle_tokens - suffix_tokens
        if task == "rag":
            # The suffix is the question mark, so the question takes its tokens too.
            question_tokens = min(rng.randint(*_QUESTION_TOKENS), max(1, body_tokens // 4))
            document = filler.fill(rng, body_tokens - question_tokens, paragraph_every=4)
            return prefix + document + middle + filler.question(rng, question_tokens + suffix_tokens)
        if task == "summarize":
            return prefix + filler.fill(rng, body_tokens, paragraph_every=4) + suffix
        return prefix + code_filler().fill(rng, body_tokens) + suffix

    def _image_size(self, rng: random.Random) -> tuple[int, int]:
        assert self.leaf.images is not None
        index = bisect.bisect_right(self._size_cumulative, rng.random() * self._size_cumulative[-1])
        return self.leaf.images.sizes[min(index, len(self.leaf.images.sizes) - 1)]


def _message_overhead(system_messages: int, turns: int) -> int:
    """Return the template tokens of the system messages and ``turns`` user turns with their replies."""
    return DEFAULT_TEMPLATE.per_message * (system_messages + 2 * turns - 1)


def _sentence_block(rng: random.Random, filler: ProseFiller, tokens: int, *, question: bool) -> str:
    """Return sentences of exactly ``tokens`` tokens (>= 2) ending with a full stop or question mark."""
    if question:
        return filler.question(rng, tokens)
    return filler.fill(rng, tokens - filler.closing_tokens) + filler.connectors.closing


def _generated_system_prompt(name: str, language: str, tokens: int, style: str) -> _SystemPrompt:
    """Build a system prompt of exactly ``tokens`` tokens; the same for every request and process.

    The random generator is seeded from the profile name, so every Locust user and worker
    sends the same prefix, as one application does (a cacheable prefix).
    """
    seed = int.from_bytes(hashlib.sha256(f"{name}:{language}:{style}".encode()).digest()[:8], "big")
    rng = random.Random(seed)
    filler = prose_filler(language)
    head = _SYSTEM_OPENING[language]
    head_tokens = count_tokens(head)
    if style == "tools":
        # As many tool definitions as fit, then prose rules fill the rest.
        heading, blocks = tools_text(language)
        with_tools = head + heading
        for block in blocks:
            candidate = with_tools + block
            if count_tokens(candidate) + filler.closing_tokens + 1 > tokens:
                break
            with_tools = candidate
        if with_tools != head + heading:
            head, head_tokens = with_tools, count_tokens(with_tools)
    body = filler.fill(rng, tokens - head_tokens - filler.closing_tokens, paragraph_every=5)
    return _SystemPrompt(head + body + filler.connectors.closing, tokens)


class ProfileWorkload:
    """A Workload over a leaf or mix profile; deterministic for a seed."""

    def __init__(self, profile: LeafProfile | MixProfile, *, seed: int | None = None) -> None:
        self.name = profile.name
        self.profile = profile
        self.seed = seed
        self._rng = random.Random(seed)
        variants: Sequence[tuple[LeafProfile, float]] = profile.variants if isinstance(profile, MixProfile) else ((profile, 1.0),)
        self.builders = [LeafBuilder(leaf) for leaf, _share in variants]
        self.shares = [share for _leaf, share in variants]
        self._cumulative = list(itertools.accumulate(self.shares))
        self._expected_tokens: float | None = None

    def next_request(self) -> RequestSpec:
        """Draw the next request: pick a variant by weight, then build it."""
        index = 0
        if len(self.builders) > 1:
            index = min(bisect.bisect_right(self._cumulative, self._rng.random() * self._cumulative[-1]), len(self.builders) - 1)
        return self.builders[index].build(self._rng, workload=self.name)

    def expected_tokens_per_request(self, sample: int = 400) -> float:
        """Return mean input tokens + mean max_tokens over ``sample`` requests drawn with a separate generator."""
        if self._expected_tokens is None:
            probe = ProfileWorkload(self.profile, seed=_probe_seed(self.seed))
            total = 0
            for _ in range(sample):
                spec = probe.next_request()
                total += (spec.expected_input_tokens or 0) + spec.max_tokens
            self._expected_tokens = total / sample
        return self._expected_tokens

    def describe(self, sample: int = 1000) -> Any:
        """Return WorkloadStats measured by tokenizing ``sample`` requests drawn with this seed."""
        from .stats import measure_workload

        return measure_workload(ProfileWorkload(self.profile, seed=self.seed), sample=sample)


def _probe_seed(seed: int | None) -> int:
    return 0x5EED if seed is None else seed + 0x5EED

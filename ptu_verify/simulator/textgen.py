"""Seeded output text with exact token accounting.

The text is built from pieces that are each exactly one Qwen token and one pre-tokenizer unit:
a word with its leading space, a comma, a full stop or a paragraph break. So the token count of
any run of pieces is the number of pieces. The pool is built once; a response takes a
run of pieces from a random sentence start, so generation does no tokenizer calls.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass

from .. import tokens

__all__ = ["TokenPool", "build_pool"]

logger = logging.getLogger(__name__)

_WORDS = ["the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "with", "was", "on", "be", "by", "this", "are", "from", "at", "or", "an", "have", "not", "but", "which", "one", "all", "their", "there", "been", "has", "more", "when", "will", "would", "can", "into", "other", "than", "its", "these", "some", "time", "only", "new", "also", "about", "two", "first", "may", "then", "such", "most", "many", "over", "any", "where", "after", "made", "those", "through", "each", "between", "same", "under", "while", "both", "well", "long", "three", "used", "because", "should", "during", "before", "state", "data", "model", "system", "value", "result", "process", "level", "number", "form", "order", "group", "point", "case", "part", "place", "work", "change", "power", "field", "use", "rate", "load", "test", "request", "token", "stream", "server", "client", "query", "answer", "measure", "capacity", "limit", "window", "minute", "second", "latency", "speed", "first", "output", "input", "deployment", "service", "cluster", "network", "memory", "cache", "queue", "budget", "report", "stage", "plan", "profile", "sample", "record", "error", "retry", "response", "throughput", "traffic", "peak", "average", "median", "steady", "growth", "demand", "supply", "price", "cost", "hour", "month", "team", "user", "design", "review", "check", "verify", "build", "run", "start", "stop", "keep", "scale", "reach", "hold", "show", "find", "give", "take", "make", "read", "write", "send", "receive", "open", "close", "follow", "lead", "move", "turn", "set", "carry", "help", "need", "want", "seem", "small", "large", "high", "low", "early", "late", "short", "full", "clear", "simple", "common", "local", "global", "stable", "careful", "quick", "slow", "good", "great", "real", "main", "final", "total", "single", "several", "certain", "general", "recent", "public", "we", "they", "you", "he", "she", "people", "day", "year", "way", "world", "life", "hand", "night", "water", "city", "room", "line", "word", "story", "question", "problem", "area", "fact", "idea", "example", "reason", "method", "theory", "market", "table", "figure", "paper", "study"]
# Single-token words with multi-byte UTF-8, so streamed text also exercises split characters.
_MULTIBYTE_WORDS = (" 数据", " 用户", " 请求")
_TARGET_PIECES = 120_000


@dataclass(frozen=True)
class TokenPool:
    """Pre-encoded one-token pieces and the indices where sentences start."""

    texts: tuple[str, ...]  # piece text, e.g. " model"
    escaped: tuple[str, ...]  # the same, JSON-string escaped without quotes
    first_escaped: tuple[str, ...]  # escaped form to use when the piece starts a response
    first_texts: tuple[str, ...]
    sentence_starts: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.texts)

    def start_offset(self, rng: random.Random) -> int:
        """Return a random sentence start."""
        return self.sentence_starts[rng.randrange(len(self.sentence_starts))]

    def text(self, offset: int, count: int) -> str:
        """Return the text of ``count`` pieces from ``offset`` (wrapping), as the first output of a response."""
        return "".join(self.piece_text(offset, index) for index in range(count))

    def piece_text(self, offset: int, index: int) -> str:
        """Return piece ``index`` of a response starting at ``offset``."""
        position = (offset + index) % len(self.texts)
        return self.first_texts[position] if index == 0 else self.texts[position]

    def piece_escaped(self, offset: int, index: int) -> str:
        """Return piece ``index`` of a response starting at ``offset``, JSON-escaped."""
        position = (offset + index) % len(self.texts)
        return self.first_escaped[position] if index == 0 else self.escaped[position]


def _one_token(text: str) -> bool:
    return tokens.count_tokens(text) == 1


def build_pool(seed: int | None = 0, pieces: int = _TARGET_PIECES) -> TokenPool:
    """Build a pool of about ``pieces`` one-token pieces of English-looking prose."""
    rng = random.Random(seed)

    # Words usable in every position: " word", " Word" (after a full stop) and "Word" (after a
    # paragraph break or at the start of a response) must all be single tokens.
    vocabulary = [w for w in dict.fromkeys(_WORDS) if _one_token(" " + w) and _one_token(" " + w.capitalize()) and _one_token(w.capitalize())]
    # A flattened Zipf weighting: frequent words dominate without repeating every few words.
    weights = [1.0 / (rank + 12) ** 0.8 for rank in range(len(vocabulary))]

    texts: list[str] = []
    starts: list[int] = []
    paragraph_start = True
    while len(texts) < pieces:
        starts.append(len(texts))
        words = rng.choices(vocabulary, weights=weights, k=rng.randint(6, 20))
        first = words[0].capitalize()
        texts.append(first if paragraph_start else " " + first)
        previous = words[0]
        for position, word in enumerate(words[1:], start=1):
            if word == previous:
                continue
            if position > 3 and rng.random() < 0.08 and texts[-1] != ",":
                texts.append(",")
            elif position > 2 and rng.random() < 0.02:
                texts.append(" —")  # always followed by a word: " —." would be one pre-token unit
            if rng.random() < 0.03:
                texts.append(rng.choice(_MULTIBYTE_WORDS))
            else:
                texts.append(" " + word)
            previous = word
        paragraph_start = rng.random() < 0.2
        texts.append(".\n\n" if paragraph_start else ".")

    first_texts = [text.lstrip(" ") for text in texts]
    pool = TokenPool(
        texts=tuple(texts),
        escaped=tuple(json.dumps(text, ensure_ascii=False)[1:-1] for text in texts),
        first_escaped=tuple(json.dumps(text, ensure_ascii=False)[1:-1] for text in first_texts),
        first_texts=tuple(first_texts),
        sentence_starts=tuple(starts),
    )
    _check_additive(pool)
    logger.info("Built output token pool: %d pieces, %d words in vocabulary", len(texts), len(vocabulary))
    return pool


def _check_additive(pool: TokenPool) -> None:
    """Tokenize a stretch of the pool and check one piece is one token; raise if the construction broke."""
    sample = min(len(pool), 10_000)  # stays below the tokenizer's 100,000-character split
    text = pool.text(0, sample)
    counted = tokens.count_tokens(text)
    if counted != sample:
        raise RuntimeError(f"token pool is not additive: {sample} pieces tokenize to {counted} tokens")

"""Token-exact text: prose and code whose Qwen token count equals a target.

The Qwen tokenizer splits text into pre-tokens with a regular expression before BPE, and BPE
never merges across pre-tokens. A punctuation mark attaches to the letters that follow it
("。今天" is one pre-token) but never to the letters before it, and a newline ends the
pre-token it closes. So the pools store each sentence body (starting and ending with a letter
or digit) with the connector that joins it to the previous sentence ("。" + body), and count
every form once. The count of a concatenation is then the sum of the counts of its pieces;
the tests check this on generated prompts with the tokenizer.
"""

from __future__ import annotations

import functools
import json
import random
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from ..tokens import count_tokens
from .builtin import builtin_profiles_folder

__all__ = ["LANGUAGES", "CodeFiller", "ProseFiller", "code_filler", "prose_filler", "tools_text"]

LANGUAGES = ("zh", "en")

# Options kept per token count in the finishing tables. More options mean more distinct short
# texts, so two trace blocks with different hash ids rarely get the same text.
_OPTIONS_PER_COUNT = 400
# Random picks tried before a greedy step scans all sentences for one that fits.
_RANDOM_TRIES = 24
# Shortest comment line that ends a code excerpt (shorter tails only end tiny fills).
_MIN_TAIL = 4


def _data_text(name: str) -> str:
    return builtin_profiles_folder().joinpath("data").joinpath(name).read_text(encoding="utf-8")


def _is_word_char(char: str) -> bool:
    return unicodedata.category(char)[0] in ("L", "N")


@dataclass(frozen=True)
class _Connectors:
    sentence: str  # between two sentences of a paragraph
    paragraph: str  # ends a paragraph; the next sentence starts a new line
    closing: str  # ends the last sentence
    question: str  # ends the last sentence when it is a question


_CONNECTORS = {
    "zh": _Connectors(sentence="。", paragraph="。\n", closing="。", question="？"),
    "en": _Connectors(sentence=". ", paragraph=".\n\n", closing=".", question="?"),
}


class ProseFiller:
    """Natural-looking sentences in one language, assembled to an exact token count.

    ``fill`` returns text that starts with a letter and ends with a letter, so callers add
    ``connectors.closing`` (one token) or a suffix that starts with punctuation.
    """

    def __init__(self, language: str, bodies: Sequence[str], questions: Sequence[str] = ()) -> None:
        self.language = language
        self.connectors = _CONNECTORS[language]
        for body in [*bodies, *questions]:
            if not body or not _is_word_char(body[0]) or not _is_word_char(body[-1]):
                raise ValueError(f"sentence body must start and end with a letter or digit: {body!r}")
        self.questions = list(questions)
        self.question_start_counts = [count_tokens(question) for question in self.questions]
        self.question_sentence_counts = [count_tokens(self.connectors.sentence + question) for question in self.questions]
        self.bodies = list(bodies)
        self.start_counts = [count_tokens(body) for body in self.bodies]
        self.sentence_counts = [count_tokens(self.connectors.sentence + body) for body in self.bodies]
        self.paragraph_counts = [count_tokens(self.connectors.paragraph + body) for body in self.bodies]
        # Greedy steps pick from sentences of 3+ tokens, so "好" or "Yes" only ends a fill.
        self._greedy = [index for index, count in enumerate(self.start_counts) if count >= 3]
        self.closing_tokens = count_tokens(self.connectors.closing)
        self.question_tokens = count_tokens(self.connectors.question)
        self._build_finishing_tables()

    def _build_finishing_tables(self) -> None:
        # Ways to end a fill with one or two sentences: after other sentences (continued) or alone (start).
        largest = max(self.sentence_counts) * 2 + max(self.start_counts)
        continued: list[list[tuple[int, ...]]] = [[] for _ in range(largest + 1)]
        start: list[list[tuple[int, ...]]] = [[] for _ in range(largest + 1)]
        indices = range(len(self.bodies))
        for i in indices:
            _add_option(continued, self.sentence_counts[i], (i,))
            _add_option(start, self.start_counts[i], (i,))

        # Pairs of full sentences come first, so short bodies ("好", "Yes") end a fill only
        # where nothing else fits. The order is shuffled with a fixed seed for variety.
        greedy = set(self._greedy)
        pairs = [(i, j) for i in indices for j in indices]
        random.Random(len(pairs)).shuffle(pairs)
        pairs.sort(key=lambda pair: not (pair[0] in greedy and pair[1] in greedy))
        for i, j in pairs:
            _add_option(continued, self.sentence_counts[i] + self.sentence_counts[j], (i, j))
            _add_option(start, self.start_counts[i] + self.sentence_counts[j], (i, j))
        self._continued = continued
        self._start = start
        # Above this remainder the greedy loop keeps adding random sentences.
        self.finish_limit = max(self.sentence_counts) + 2

    def _can_finish(self, remainder: int) -> bool:
        return remainder == 0 or remainder > self.finish_limit or bool(self._continued[remainder])

    def fill(self, rng: random.Random, tokens: int, *, paragraph_every: int = 0, continued: bool = False) -> str:
        """Return text of exactly ``tokens`` tokens that ends with a letter.

        The text starts with a letter, or with the sentence connector when ``continued`` (it then
        follows a letter, and needs ``tokens`` >= 2). ``paragraph_every`` > 0 starts a new
        paragraph after about that many sentences.
        """
        if tokens < (2 if continued else 1):
            raise ValueError(f"tokens must be >= {2 if continued else 1}, got {tokens}")
        first_table = self._continued if continued else self._start
        if tokens <= self.finish_limit and first_table[tokens]:
            return self._join(rng.choice(first_table[tokens]), first=not continued)

        parts: list[str] = []
        remainder = tokens
        sentences_in_paragraph = 0
        while remainder > self.finish_limit or (not parts and not first_table[remainder]):
            first = not parts and not continued
            new_paragraph = paragraph_every > 0 and sentences_in_paragraph >= paragraph_every and rng.random() < 0.5
            if first:
                counts = self.start_counts
            elif new_paragraph:
                counts = self.paragraph_counts
            else:
                counts = self.sentence_counts
            index = self._pick(rng, counts, remainder)
            if first:
                parts.append(self.bodies[index])
            else:
                connector = self.connectors.paragraph if new_paragraph else self.connectors.sentence
                parts.append(connector + self.bodies[index])
            sentences_in_paragraph = 0 if new_paragraph else sentences_in_paragraph + 1
            remainder -= counts[index]

        if remainder:
            parts.append(self._join(rng.choice(self._continued[remainder]), first=False))
        return "".join(parts)

    def question(self, rng: random.Random, tokens: int) -> str:
        """Return sentences of exactly ``tokens`` tokens (>= 2) that end with a question and a question mark.

        The last sentence comes from the question pool when one fits; otherwise the text is
        ordinary sentences followed by the question mark.
        """
        body = tokens - self.question_tokens
        if body < 1:
            raise ValueError(f"tokens must be >= {1 + self.question_tokens}, got {tokens}")
        alone = [index for index, count in enumerate(self.question_start_counts) if count == body]
        if alone and rng.random() < 0.5:
            return self.questions[rng.choice(alone)] + self.connectors.question
        for _ in range(_RANDOM_TRIES if self.questions else 0):
            index = rng.randrange(len(self.questions))
            remainder = body - self.question_sentence_counts[index]
            if remainder >= 1:
                return self.fill(rng, remainder) + self.connectors.sentence + self.questions[index] + self.connectors.question
        if alone:
            return self.questions[rng.choice(alone)] + self.connectors.question
        return self.fill(rng, body) + self.connectors.question

    def _pick(self, rng: random.Random, counts: list[int], remainder: int) -> int:
        for _ in range(_RANDOM_TRIES):
            index = rng.choice(self._greedy)
            if counts[index] <= remainder and self._can_finish(remainder - counts[index]):
                return index
        offset = rng.randrange(len(counts))
        for step in range(len(counts)):
            index = (offset + step) % len(counts)
            if counts[index] <= remainder and self._can_finish(remainder - counts[index]):
                return index
        raise RuntimeError(f"no sentence fits a remainder of {remainder} tokens")  # the pools make this unreachable

    def _join(self, indices: tuple[int, ...], *, first: bool) -> str:
        parts = []
        for position, index in enumerate(indices):
            parts.append(self.bodies[index] if first and position == 0 else self.connectors.sentence + self.bodies[index])
        return "".join(parts)


def _add_option(table: list[list[tuple[int, ...]]], count: int, option: tuple[int, ...]) -> None:
    if count < len(table) and len(table[count]) < _OPTIONS_PER_COUNT:
        table[count].append(option)


class CodeFiller:
    """Contiguous excerpts of Python source, ended by a comment line, to an exact token count.

    Every line piece ends with a newline and the next starts with a non-newline character, so
    the counts add up. The closing comment is ``#`` + English sentences + newline: ``#`` and
    ``.`` are both one-token pre-tokens, so it costs as much as the sentences joined after a
    full stop, plus one for the newline.
    """

    def __init__(self, lines: Sequence[str], comments: ProseFiller) -> None:
        if comments.connectors.sentence != ". ":
            raise ValueError("the comment filler must join sentences with '. '")
        self.lines = list(lines)
        self.counts = [count_tokens(line) for line in self.lines]
        # Excerpts start at an unindented line, as a pasted snippet usually does.
        self._starts = [index for index, line in enumerate(self.lines) if not line[0].isspace()]
        self.comments = comments
        self._tiny = {1: "pass", 2: "pass\n"}
        for count, text in self._tiny.items():
            if count_tokens(text) != count:
                raise ValueError(f"tail {text!r} is not {count} tokens")

    def fill(self, rng: random.Random, tokens: int) -> str:
        """Return Python-looking source of exactly ``tokens`` tokens (>= 1)."""
        if tokens < 1:
            raise ValueError(f"tokens must be >= 1, got {tokens}")
        parts: list[str] = []
        remainder = tokens
        index = rng.choice(self._starts)
        # Whole lines while a comment tail of at least _MIN_TAIL tokens still fits after them.
        while remainder - self.counts[index] >= _MIN_TAIL:
            parts.append(self.lines[index])
            remainder -= self.counts[index]
            index = (index + 1) % len(self.lines)
        if remainder in self._tiny:
            parts.append(self._tiny[remainder])
        else:
            parts.append("#" + self.comments.fill(rng, remainder - 1, continued=True)[1:] + "\n")
        return "".join(parts)


@functools.cache
def prose_filler(language: str) -> ProseFiller:
    """Return the shared prose filler for ``zh`` or ``en``, built once per process.

    The first call takes about 1 s on a 2-core machine, most of it loading the tokenizer.
    """
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")
    return ProseFiller(language, _read_lines(f"sentences_{language}.txt"), _read_lines(f"questions_{language}.txt"))


@functools.cache
def code_filler() -> CodeFiller:
    """Return the shared Python code filler."""
    text = _data_text("code_python.txt")
    pieces: list[str] = []
    for line in text.splitlines(keepends=True):
        if line.strip() == "" and pieces:
            pieces[-1] += line  # a blank line joins the line before it, so no piece starts with a newline
        elif line.strip():
            pieces.append(line)
    return CodeFiller(pieces, prose_filler("en"))


def _read_lines(name: str) -> list[str]:
    return [line.strip() for line in _data_text(name).splitlines() if line.strip() and not line.startswith("#")]


@functools.cache
def tools_text(language: str) -> tuple[str, tuple[str, ...]]:
    """Return the heading and the tool definitions (JSON schemas) of a tools-style system prompt.

    The heading and every definition end with a newline and start with a non-space character.
    """
    tools = json.loads(_data_text("tools.json"))
    heading = "# 可用工具\n" if language == "zh" else "# Available tools\n"
    return heading, tuple(json.dumps(tool, ensure_ascii=False, indent=2) + "\n" for tool in tools)

"""Token-exact text pools: the tokenizer agrees with the summed piece counts."""

from __future__ import annotations

import random

import pytest

from ptu_verify.tokens import count_tokens
from ptu_verify.workloads.textgen import code_filler, prose_filler


@pytest.mark.parametrize("language", ["zh", "en"])
def test_prose_fill_exact(language: str) -> None:
    filler = prose_filler(language)
    rng = random.Random(language)
    for tokens in [1, 2, 3, 7, 16, 17, 40, *[rng.randint(1, 3000) for _ in range(120)]]:
        text = filler.fill(rng, tokens, paragraph_every=rng.choice([0, 3]))
        assert count_tokens(text) == tokens, (language, tokens)
        assert not text[-1].isspace()


@pytest.mark.parametrize("language", ["zh", "en"])
def test_prose_continued_fill_exact(language: str) -> None:
    filler = prose_filler(language)
    rng = random.Random(5)
    for tokens in [2, 3, 5, 18, *[rng.randint(2, 400) for _ in range(80)]]:
        text = filler.fill(rng, tokens, continued=True)
        assert text.startswith(filler.connectors.sentence)
        assert count_tokens(text) == tokens


def test_prose_fill_rejects_too_few_tokens() -> None:
    with pytest.raises(ValueError):
        prose_filler("zh").fill(random.Random(1), 0)
    with pytest.raises(ValueError):
        prose_filler("en").fill(random.Random(1), 1, continued=True)


def test_code_fill_exact() -> None:
    filler = code_filler()
    rng = random.Random(8)
    for tokens in [1, 2, 3, 4, 5, 30, *[rng.randint(1, 2500) for _ in range(100)]]:
        assert count_tokens(filler.fill(rng, tokens)) == tokens, tokens


def test_fill_deterministic_for_seed() -> None:
    filler = prose_filler("zh")
    assert filler.fill(random.Random(3), 500) == filler.fill(random.Random(3), 500)
    assert filler.fill(random.Random(3), 500) != filler.fill(random.Random(4), 500)


@pytest.mark.parametrize("language", ["zh", "en"])
def test_question_exact_and_ends_with_mark(language: str) -> None:
    filler = prose_filler(language)
    rng = random.Random(6)
    for tokens in [2, 3, 4, 6, 9, 12, *[rng.randint(2, 400) for _ in range(80)]]:
        text = filler.question(rng, tokens)
        assert count_tokens(text) == tokens, (language, tokens)
        assert text.endswith(filler.connectors.question)

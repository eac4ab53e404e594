"""Sparse prefill on the embedded SmolLM2-135M-Instruct: a ~3,000-token needle prompt is still answered."""

from __future__ import annotations

import random

import pytest

import kvlab
from kvlab.prompting import PromptParts

pytestmark = pytest.mark.slow

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.\n"


def needle_prompt(seed: int, lines: int = 115) -> tuple[PromptParts, str]:
    """RULER niah_single_1-style, query-aware: the question ends the prefilled context."""
    rng = random.Random(seed)
    value = str(rng.randint(10**6, 10**7 - 1))
    hay = [NOISE] * lines
    hay.insert(int(rng.choice([0.3, 0.5, 0.7]) * lines), f"One of the special magic numbers for quiet-orchard is: {value}.\n")
    context = ("A special magic number is hidden within the following text. Make sure to memorize it. "
               "I will quiz you about the number afterwards.\n" + "".join(hay)
               + "What is the special magic number for quiet-orchard mentioned in the provided text?")
    return PromptParts(context=context,
                       answer_prefix=" The special magic number for quiet-orchard mentioned in the provided text is"), value


@pytest.mark.parametrize("method", ["minference:vertical_size=256,slash_size=512", "a_shape:n_init=64,n_local=1024"])
def test_needle_survives_sparse_prefill(embedded, method):
    parts, value = needle_prompt(4)
    out = kvlab.generate(embedded, parts, method=method, max_new_tokens=12, chunk_size=None)
    assert out.stats.prompt_tokens > 2 * 1024  # the pattern is sparse at this length
    assert out.stats.kv_bytes == out.stats.full_kv_bytes  # the cache is kept whole
    assert value in out.text, out.text

"""Long-text perplexity, reported per position bucket (e.g. per 1K tokens).

Windows of exactly ``length`` tokens of public-domain prose (the shipped Austen novels, or any
UTF-8 file given as ``path``) start at seeded random paragraph starts. The evaluator
(:func:`kvlab.evaluate.run_perplexity`) streams each window through
:func:`kvlab.engine.token_logprobs` -- chunked, compressed to the budget between chunks -- and
reports the mean negative log-likelihood and perplexity of every bucket of ``bucket_size``
positions, so context-extension and eviction methods can be compared on language modelling: a
method that drops what later tokens need shows it in the late buckets.

The task has no queries: ``samples`` is not defined, ``windows`` is. The first token of a window has
no prediction; bucket ``b`` covers predicted positions ``[b * size + 1, (b + 1) * size]``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from kvlab.errors import KvlabError
from kvlab.tasks.fitting import check_request
from kvlab.tasks.text import HAYSTACK_SOURCE, haystack_text


@dataclass(frozen=True)
class TextWindow:
    """One perplexity window: token ids and where they came from."""

    index: int
    ids: tuple[int, ...]
    metadata: dict[str, Any] = field(default_factory=dict)


class Perplexity:
    """Perplexity of long text per position bucket; see the module docstring."""

    source = f"long-text perplexity; {HAYSTACK_SOURCE}"
    metric = "perplexity"
    kind = "perplexity"

    def __init__(self, name: str = "perplexity", path: str | None = None, bucket_size: int = 1024,
                 add_bos: bool = True, notes: str = ""):
        if int(bucket_size) < 1:
            raise KvlabError("bucket_size must be >= 1 token")
        self.name, self.path, self.bucket_size, self.add_bos, self.notes = name, path, int(bucket_size), add_bos, notes

    def windows(self, tokenizer: Any, length: int, n: int, seed: int = 42) -> list[TextWindow]:
        """``n`` windows of exactly ``length`` tokens (a BOS token first when the tokenizer has one)."""
        check_request(length, n, tokenizer)
        if length < 2:
            raise KvlabError("perplexity needs windows of at least 2 tokens")
        text = haystack_text(self.path)
        starts = [0] + [i + 2 for i in range(len(text) - 2) if text[i:i + 2] == "\n\n"]
        bos = [tokenizer.bos_token_id] if self.add_bos and getattr(tokenizer, "bos_token_id", None) is not None else []
        out = []
        for index in range(n):
            rng = random.Random(f"{self.name}|{seed}|{index}")
            start = rng.choice(starts)
            chars = 6 * length  # prose is ~4 characters per token; take more, then cut at exactly length
            piece = text[start:start + chars]
            if len(piece) < chars:  # wrap around the end of the corpus
                piece += "\n\n" + text[:chars - len(piece)]
            ids = bos + tokenizer(piece, add_special_tokens=False)["input_ids"]
            if len(ids) < length:
                raise KvlabError(f"the text is too short for {length}-token windows; give a longer file (path=...)")
            out.append(TextWindow(index, tuple(ids[:length]), {"start_char": start, "length": int(length),
                                                                  "seed": int(seed), "bos": bool(bos)}))
        return out

    def buckets(self, length: int) -> list[tuple[int, int]]:
        """``(first, last)`` predicted positions of each bucket, inclusive (position 0 is never predicted)."""
        edges = [*range(0, length, self.bucket_size), length]
        return [(max(1, a), b - 1) for a, b in pairwise(edges) if b - 1 >= max(1, a)]

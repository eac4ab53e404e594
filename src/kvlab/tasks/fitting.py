"""Length fitting (as RULER) and the base class of generated tasks.

A target length counts tokens of the model under test: the prompt rendered with the chat policy
(template and its default system prompt included) plus the query's ``max_new_tokens``. A
generator builds a sample from a number of haystack *units* (words, noise sentences, distractor
lines, documents); :func:`fit_units` searches for the largest number of units whose sample fits the
target, so a prompt lands just below it (within about 1%, or one unit where a unit is bigger).

Every token count takes the larger of the two renderings (question inside the prefilled context,
or tokenized separately after it) and the longest query, so a sample fits in both modes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kvlab.errors import KvlabError
from kvlab.prompting import has_chat_template, render
from kvlab.tasks.base import MODES, Query, Sample
from kvlab.tasks.scoring import METRICS

ANSWER_PREFIX_PLACEMENT = {
    "template": "after the chat template's assistant-turn opener (RULER: start of the assistant message)",
    "none": "at the end of the plain-text prompt, after the question",
}


@dataclass
class Draft:
    """What a generator builds for a given haystack size, before it is known to fit."""

    context: str
    queries: tuple[Query, ...]
    metadata: dict[str, Any] = field(default_factory=dict)
    system: str | None = None


def prompt_tokens(tokenizer: Any, draft: Draft, chat: str) -> tuple[int, int]:
    """(prompt tokens, prompt + generation tokens) of the largest query over both modes."""
    worst_prompt, worst_total = 0, 0
    sample = Sample("", 0, draft.context, draft.queries, system=draft.system)
    for query in draft.queries:
        for mode in MODES:
            n = render(tokenizer, sample.parts(query, mode), chat).num_tokens
            worst_prompt = max(worst_prompt, n)
            worst_total = max(worst_total, n + query.max_new_tokens)
    return worst_prompt, worst_total


LOOKAHEAD = 8  # units tried past the bisection result


def fit_units(cost: Callable[[int], int], target: int, lo: int, hi: int, guess: int) -> int:
    """The largest ``u`` in ``[lo, hi]`` with ``cost(u) <= target`` (``cost`` non-decreasing).

    Expands geometrically from ``guess`` then bisects, so a good guess costs a handful of calls.
    Raises :class:`KvlabError` when even ``lo`` units do not fit.
    """
    memo: dict[int, int] = {}

    def c(u: int) -> int:
        if u not in memo:
            memo[u] = cost(u)
        return memo[u]

    if c(lo) > target:
        raise KvlabError(f"a target length of {target} tokens is too short for this task: its smallest prompt "
                         f"needs {c(lo)} tokens (with the generation budget); use a larger --length")
    good, bad = lo, None
    u = min(max(guess, lo), hi)
    while bad is None:
        if c(u) <= target:
            good = max(good, u)
            if u >= hi:
                return hi
            u = min(hi, max(u + 1, int(u * 1.15)))
        else:
            bad = u
    while bad - good > 1:
        mid = (good + bad) // 2
        if c(mid) <= target:
            good = mid
        else:
            bad = mid
    # cost is only nearly monotone (needle placement, word counts): look a few units further
    for u in range(good + 2, min(hi, good + 1 + LOOKAHEAD) + 1):
        if c(u) <= target:
            good = u
    return good


class GeneratedTask:
    """A task whose samples are generated: subclasses define :meth:`build` and the unit range.

    Sample ``i`` depends only on ``(name, seed, i)`` (its own ``random.Random``), so it is the same
    whatever ``n`` is, and differs across seeds.
    """

    name: str = ""
    source: str = "kvlab generator"
    metric: str = "string_match_all"
    notes: str = ""
    min_units: int = 1

    def prepare(self, tokenizer: Any, length: int, seed: int) -> dict[str, Any]:
        """Per-request set-up shared by all samples (e.g. an in-context example); ``env`` of :meth:`build`."""
        return {"length": int(length)}

    def build(self, rng: random.Random, units: int, env: dict[str, Any]) -> Draft:
        """The sample for ``units`` haystack units; draws everything from ``rng`` (fresh per call)."""
        raise NotImplementedError

    def max_units(self, length: int) -> int:
        return 4 * length

    def tokens_per_unit(self) -> float:
        return 1.0

    def samples(self, tokenizer: Any, length: int, n: int, seed: int = 42, chat: str = "template") -> list[Sample]:
        check_request(length, n, tokenizer)
        env = self.prepare(tokenizer, length, seed)
        return [self.make_sample(tokenizer, env, i, seed, chat) for i in range(n)]

    def make_sample(self, tokenizer: Any, env: dict[str, Any], index: int, seed: int, chat: str) -> Sample:
        key = f"{self.name}|{seed}|{index}"
        length = env["length"]

        def cost(units: int) -> int:
            return prompt_tokens(tokenizer, self.build(random.Random(key), units, env), chat)[1]

        guess = int(length / self.tokens_per_unit())
        units = fit_units(cost, length, self.min_units, self.max_units(length), guess)
        draft = self.build(random.Random(key), units, env)
        prompt, total = prompt_tokens(tokenizer, draft, chat)
        meta = {**sample_metadata(tokenizer, chat, length, seed), "haystack_units": units, "prompt_tokens": prompt,
                "total_tokens": total, "max_new_tokens": max(q.max_new_tokens for q in draft.queries),
                **draft.metadata}
        return Sample(self.name, index, draft.context, draft.queries, meta, draft.system)

    def score(self, prediction: str, query: Query) -> float:
        return METRICS[self.metric](prediction, query.answers)


def check_request(length: int, n: int, tokenizer: Any) -> None:
    if tokenizer is None:
        raise KvlabError("task generation needs the model's tokenizer (this model has none)")
    if int(length) < 1:
        raise KvlabError(f"length must be a positive number of tokens, not {length}")
    if int(n) < 1:
        raise KvlabError(f"the number of samples must be >= 1, not {n}")


def sample_metadata(tokenizer: Any, chat: str, length: int, seed: int) -> dict[str, Any]:
    """What every sample records: the chat policy asked for and applied, where the answer prefix
    goes, the target length and the seed."""
    applied = "template" if chat == "template" and has_chat_template(tokenizer) else "none"
    return {"length": int(length), "seed": int(seed), "chat": applied, "chat_requested": chat,
            "answer_prefix_placement": ANSWER_PREFIX_PLACEMENT[applied]}

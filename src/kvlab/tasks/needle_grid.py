"""Needle-in-a-haystack grids: context length x needle depth, single and multi-needle.

The classic NIAH picture (gkamradt/LLMTest_NeedleInAHaystack), scored without a judge model: a
needle ``"One of the special magic numbers for {key} is: {value}."`` (random ``adjective-noun`` key,
7-digit value) is inserted at the sentence boundary nearest to ``depth`` percent of the haystack's
tokens; the answer
is found by substring match (as RULER and NeedleBench v2 do). The prompt wraps the haystack as
NeedleBench v2's English prompt does and forces the answer with a RULER-style answer prefix.

* ``niah/single``: one needle at ``depth``.
* ``niah/multi``: ``num_needles`` needles, the first at ``depth`` and the rest spaced evenly over
  what remains (``interval = (100 - depth) / num_needles``, gkamradt's multi-needle rule); the
  question asks for every value; score = fraction found (``string_match_all``).

Grids: sample ``i`` uses ``depths[i % len(depths)]``, so ``n = k * len(depths)`` samples give ``k``
samples per depth at the requested length; a sweep over lengths then fills the depth x length grid.
Every sample's metadata has ``depth`` (asked, percent), ``depth_actual`` (where the needle landed,
in percent of the haystack's tokens without needles), ``needle_token_position``, ``length`` and ``prompt_tokens``.
The haystack starts at a random sentence of the shipped Austen text (seeded), so samples differ.
"""

from __future__ import annotations

import bisect
import random
from typing import Any

from kvlab.errors import KvlabError
from kvlab.tasks.base import Query, Sample
from kvlab.tasks.fitting import Draft, GeneratedTask
from kvlab.tasks.ruler_niah import join_keys, random_needle
from kvlab.tasks.text import HAYSTACK_SOURCE, haystack_words, sent_tokenize, words_from

DEFAULT_DEPTHS = (0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100)
PROMPT = ("This is a test of long-text capability. You need to first read the long document below, and then "
          "answer the final question based on the information in the document.\nThe content of the long document "
          "is as follows\n\n<Document>\n{context}\n</Document>\n\n")
QUESTION = "Based on the information in the document, now please answer: {question}\n"
NEEDLE = "One of the special magic numbers for {key} is: {value}."


def parse_depths(depths: Any) -> tuple[float, ...]:
    """``"0,25,50"``, a list, or ``"linspace:0:100:11"`` -> depths in percent."""
    if isinstance(depths, str):
        if depths.startswith("linspace:"):
            try:
                lo, hi, count = depths.split(":")[1:]
                count_i = int(count)
                return tuple(round(float(lo) + (float(hi) - float(lo)) * i / max(1, count_i - 1), 2)
                             for i in range(count_i))
            except ValueError:
                raise KvlabError(f"bad depths '{depths}'; write linspace:START:END:COUNT, e.g. linspace:0:100:11") from None
        depths = [d for d in depths.split(",") if d.strip()]
    try:
        values = tuple(float(d) for d in depths)
    except (TypeError, ValueError):
        raise KvlabError(f"depths must be numbers in [0, 100], e.g. 0,25,50,75,100; got {depths!r}") from None
    if not values or any(not 0 <= d <= 100 for d in values):
        raise KvlabError(f"depths must be numbers in [0, 100], e.g. 0,25,50,75,100; got {depths!r}")
    return values


class NeedleGrid(GeneratedTask):
    """A depth x length needle grid; see the module docstring."""

    source = f"kvlab needle grid (gkamradt NIAH layout, NeedleBench v2 prompt, substring scoring); {HAYSTACK_SOURCE}"
    metric = "string_match_all"
    min_units = 20

    def __init__(self, name: str = "niah/single", num_needles: int = 1, depths: Any = DEFAULT_DEPTHS,
                 max_new_tokens: int = 32, haystack_path: str | None = None, notes: str = ""):
        if int(num_needles) < 1:
            raise KvlabError("num_needles must be >= 1")
        self.name, self.notes, self.num_needles = name, notes, int(num_needles)
        self.depths, self.max_new_tokens, self.haystack_path = parse_depths(depths), int(max_new_tokens), haystack_path

    def tokens_per_unit(self) -> float:
        return 1.3

    def max_units(self, length: int) -> int:
        return 2 * length

    def needle_depths(self, depth: float) -> list[float]:
        interval = (100 - depth) / self.num_needles
        return [depth + i * interval for i in range(self.num_needles)]

    def build(self, rng: random.Random, units: int, env: dict[str, Any]) -> Draft:
        depth = env["depth"]
        words = haystack_words(self.haystack_path)
        start = rng.randrange(len(words))
        keys = [random_needle(rng, "words") for _ in range(self.num_needles)]
        values = [random_needle(rng, "numbers") for _ in range(self.num_needles)]
        # start at a sentence boundary: skip the (likely partial) first sentence of a longer window
        sents = sent_tokenize(words_from(words, start, units + 80))
        sents = sents[1:] if len(sents) > 1 else sents
        text = " ".join(sents).split(" ")[:units]
        sents = sent_tokenize(" ".join(text))
        joined = " ".join(sents)
        # token index at which each sentence starts (one tokenization with character offsets)
        offsets = env["tokenizer"](joined, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        token_starts = [start for start, _ in offsets]
        starts, char = [], 0
        for sent in sents:
            starts.append(bisect.bisect_left(token_starts, char))
            char += len(sent) + 1
        starts.append(len(token_starts))
        pieces, last = [], 0
        for d, key, value in zip(self.needle_depths(depth), keys, values):
            target = len(token_starts) * d / 100
            pos = min(range(last, len(sents) + 1), key=lambda i: abs(starts[i] - target))
            pieces += [" ".join(sents[last:pos]), NEEDLE.format(key=key, value=value)]
            last = pos
        pieces.append(" ".join(sents[last:]))
        haystack = " ".join(p for p in pieces if p)
        if self.num_needles == 1:
            question = f"What is the special magic number for {keys[0]}?"
            prefix = f" The special magic number for {keys[0]} is"
        else:
            question = f"What are the special magic numbers for {join_keys(keys)}?"
            prefix = f" The special magic numbers for {join_keys(keys)} are"
        meta = {"depth": depth, "needle_depths": [round(d, 2) for d in self.needle_depths(depth)],
                "num_needles": self.num_needles, "haystack_start_word": start, "needle_keys": keys}
        return Draft(PROMPT.format(context=haystack), (Query(QUESTION.format(question=question), tuple(values),
                                                             prefix, self.max_new_tokens),), meta)

    def samples(self, tokenizer: Any, length: int, n: int, seed: int = 42, chat: str = "template") -> list[Sample]:
        from kvlab.tasks.fitting import check_request

        check_request(length, n, tokenizer)
        out = []
        for i in range(n):
            env = {"length": int(length), "depth": self.depths[i % len(self.depths)], "tokenizer": tokenizer}
            sample = self.make_sample(tokenizer, env, i, seed, chat)
            sample.metadata.update(needle_position(tokenizer, sample))
            out.append(sample)
        return out


def needle_position(tokenizer: Any, sample: Sample) -> dict[str, Any]:
    """Where the first needle landed: tokens of haystack text before it, out of the haystack's tokens
    without the needles (what ``depth`` is a percentage of)."""
    context = sample.context
    start = context.index("<Document>\n") + len("<Document>\n")
    end = context.rindex("\n</Document>")
    doc = context[start:end]
    needles = [NEEDLE.format(key=k, value=v) for k, v in zip(sample.metadata["needle_keys"], sample.queries[0].answers)]
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
    before = count(doc[:doc.index(needles[0])].rstrip())
    plain = doc
    for needle in needles:
        plain = plain.replace(needle + " ", "").replace(" " + needle, "").replace(needle, "")
    total = count(plain)
    return {"needle_token_position": before, "haystack_tokens": total,
            "depth_actual": round(100 * before / max(1, total), 2)}

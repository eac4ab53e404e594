"""Shared-context tasks after SCBench: one long context, several questions about it.

Run them in both modes (:mod:`kvlab.evaluate`): ``query_aware`` prefills each question with the
context; ``query_agnostic`` prefills and compresses the context once and answers every question
from a copy of that compressed cache, which shows whether a method keeps what *later* questions
need.

* ``shared/multikey``: RULER-style needles ``"One of the special magic numbers for {key} is:
  {value}."`` for ``num_keys`` keys (default 8) at distinct random depths of the Austen haystack;
  ``num_queries`` questions (default 4), each about a different key (RULER's singular niah
  question and answer prefix).
* ``shared/kv``: a JSON object of ``num``-ish UUID -> UUID pairs (InfiniteBench ``kv_retrieval``,
  SCBench ``scbench_kv``); each question asks the value of a different key.

Both are scored with ``string_match_all`` per question. Metadata records each queried needle's depth.
"""

from __future__ import annotations

import json
import random
from typing import Any

from kvlab.errors import KvlabError
from kvlab.tasks.base import Query
from kvlab.tasks.fitting import Draft, GeneratedTask
from kvlab.tasks.ruler_niah import DEPTHS, NEEDLE, insert_between_sentences, random_needle
from kvlab.tasks.text import HAYSTACK_SOURCE, haystack_words, words_from

MULTIKEY_HEAD = ("Some special magic numbers are hidden within the following text. Make sure to memorize it. "
                 "I will quiz you about the numbers afterwards.\n")
MULTIKEY_QUESTION = "\nWhat is the special magic number for {key} mentioned in the provided text?"
MULTIKEY_PREFIX = " The special magic number for {key} mentioned in the provided text is"
KV_HEAD = "Extract the value corresponding to the specified key in the JSON object below.\n\n"
KV_QUESTION = "\n\nKey: \"{key}\"\nThe value associated with the specified key is: "


def _check(num_keys: int, num_queries: int) -> tuple[int, int]:
    if int(num_queries) < 1 or int(num_keys) < int(num_queries):
        raise KvlabError(f"need 1 <= num_queries <= num_keys, got num_keys={num_keys}, num_queries={num_queries}")
    return int(num_keys), int(num_queries)


class SharedMultiKey(GeneratedTask):
    """``shared/multikey``; see the module docstring."""

    source = f"kvlab shared-context generator (SCBench multi-request idea, RULER needles); {HAYSTACK_SOURCE}"
    metric = "string_match_all"
    min_units = 50

    def __init__(self, name: str = "shared/multikey", num_keys: int = 8, num_queries: int = 4,
                 max_new_tokens: int = 32, haystack_path: str | None = None, notes: str = ""):
        self.name, self.notes, self.haystack_path = name, notes, haystack_path
        self.num_keys, self.num_queries = _check(num_keys, num_queries)
        self.max_new_tokens = int(max_new_tokens)

    def tokens_per_unit(self) -> float:
        return 1.3

    def max_units(self, length: int) -> int:
        return 2 * length

    def build(self, rng: random.Random, units: int, env: dict[str, Any]) -> Draft:
        keys = [random_needle(rng, "words") for _ in range(self.num_keys)]
        values = [random_needle(rng, "numbers") for _ in range(self.num_keys)]
        needles = [NEEDLE.format(type_needle_v="numbers", key=k, value=v) for k, v in zip(keys, values)]
        depths = rng.sample(DEPTHS, self.num_keys)
        text = words_from(haystack_words(self.haystack_path), 0, units)
        context, _ = insert_between_sentences(text, needles, depths)
        asked = rng.sample(range(self.num_keys), self.num_queries)
        queries = tuple(
            Query(MULTIKEY_QUESTION.format(key=keys[i]), (values[i],), MULTIKEY_PREFIX.format(key=keys[i]),
                  self.max_new_tokens, {"query_key": keys[i], "depth": depths[i]})
            for i in asked)
        meta = {"num_keys": self.num_keys, "num_queries": self.num_queries, "needle_depths": depths}
        return Draft(MULTIKEY_HEAD + context, queries, meta)


class SharedKeyValue(GeneratedTask):
    """``shared/kv``; see the module docstring."""

    source = "kvlab shared-context generator (InfiniteBench kv_retrieval / SCBench scbench_kv format)"
    metric = "string_match_all"

    def __init__(self, name: str = "shared/kv", num_queries: int = 4, max_new_tokens: int = 64, notes: str = ""):
        self.name, self.notes = name, notes
        _, self.num_queries = _check(num_queries, num_queries)
        self.min_units = self.num_queries
        self.max_new_tokens = int(max_new_tokens)

    def tokens_per_unit(self) -> float:
        return 60.0

    def max_units(self, length: int) -> int:
        return max(self.num_queries, length // 20)

    def build(self, rng: random.Random, units: int, env: dict[str, Any]) -> Draft:
        pairs = {random_needle(rng, "uuids"): random_needle(rng, "uuids") for _ in range(units)}
        keys = list(pairs)
        asked = rng.sample(range(len(keys)), self.num_queries)
        queries = tuple(
            Query(KV_QUESTION.format(key=keys[i]), (pairs[keys[i]],), "", self.max_new_tokens,
                  {"query_key": keys[i], "depth": round(100 * i / max(1, len(keys) - 1), 1)})
            for i in asked)
        return Draft(KV_HEAD + json.dumps(pairs, ensure_ascii=False), queries, {"num_pairs": units})

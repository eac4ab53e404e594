"""RULER's needle-in-a-haystack family: niah_single_1-3, niah_multikey_1-3, niah_multivalue,
niah_multiquery -- one generator, the variants are parameters (NVIDIA/RULER
``scripts/data/synthetic/niah.py`` and ``synthetic.yaml``).

Needles read ``"One of the special magic {type_v} for {key} is: {value}."``; keys are wonderwords
``adjective-noun`` pairs, 7-digit numbers or UUIDs. Haystacks: ``essay`` (the shipped Austen text,
first N words, needles inserted between Punkt sentences at depths drawn from
``round(linspace(0, 100, 40))``), ``noise`` (the repeated "grass is green" line) or ``needle``
(distractor needles). Metric: ``string_match_all``; 128 tokens to generate.

Differences from RULER, all documented in docs/benchmarks.md: the essay haystack is Jane Austen
instead of Paul Graham; the ``noise`` haystack is sized in sentences (a last partial line) so short
targets land within 1%; each sample draws from its own seeded RNG.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import numpy as np

from kvlab.errors import KvlabError
from kvlab.tasks.base import Query
from kvlab.tasks.fitting import Draft, GeneratedTask
from kvlab.tasks.text import (
    HAYSTACK_SOURCE,
    NOISE_SENTENCES,
    haystack_words,
    random_adjective_noun,
    sent_tokenize,
    words_from,
)

TEMPLATE = ("Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. "
            "I will quiz you about the {type_needle_v} afterwards.\n{context}\nWhat are all the special magic "
            "{type_needle_v} for {query} mentioned in the provided text?")
ANSWER_PREFIX = " The special magic {type_needle_v} for {query} mentioned in the provided text are"
NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."
TOKENS_TO_GENERATE = 128
DEPTHS = [int(d) for d in np.round(np.linspace(0, 100, num=40, endpoint=True))]
HAYSTACKS = ("essay", "noise", "needle")
NEEDLE_TYPES = ("words", "numbers", "uuids")


def singularize(text: str) -> str:
    """RULER's rewrite of the template when exactly one value is asked for."""
    return (text.replace("Some", "A").replace("are all", "is").replace("are", "is").replace("answers", "answer"))


def random_needle(rng: random.Random, kind: str) -> str:
    if kind == "numbers":
        return str(rng.randint(10**6, 10**7 - 1))
    if kind == "words":
        return random_adjective_noun(rng)
    if kind == "uuids":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    raise KvlabError(f"unknown needle type '{kind}'; use one of {', '.join(NEEDLE_TYPES)}")


def join_keys(keys: list[str]) -> str:
    """RULER's ``"k1, k2, and k3"``."""
    return ", ".join(keys[:-1]) + ", and " + keys[-1] if len(keys) > 1 else keys[0]


def noise_lines(sentences: int) -> list[str]:
    """``sentences`` noise sentences as RULER's repeated line (the last line may be partial)."""
    full, rest = divmod(sentences, len(NOISE_SENTENCES))
    lines = [" ".join(NOISE_SENTENCES)] * full
    if rest:
        lines.append(" ".join(NOISE_SENTENCES[:rest]))
    return lines


def insert_between_sentences(text: str, needles: list[str], depths: list[int]) -> tuple[str, list[int]]:
    """RULER's essay insertion: split ``text`` into sentences, put needle ``i`` before sentence
    ``int(len(sents) * depths[i] / 100)`` (sorted depths), join with spaces. Returns the context and
    each needle's sentence index."""
    sents = sent_tokenize(text.strip())
    positions = sorted(int(len(sents) * (d / 100)) for d in depths)
    pieces, last = [], 0
    for pos, needle in zip(positions, needles):
        pieces.append(" ".join(sents[last:pos]))
        pieces.append(needle)
        last = pos
    pieces.append(" ".join(sents[last:]))
    return " ".join(pieces), positions


class RulerNiah(GeneratedTask):
    """One RULER NIAH variant; see the module docstring."""

    source = f"RULER niah generator (NVIDIA/RULER); essay haystack: {HAYSTACK_SOURCE}"
    metric = "string_match_all"

    def __init__(self, name: str, haystack: str = "essay", type_needle_k: str = "words",
                 type_needle_v: str = "numbers", num_needle_k: int = 1, num_needle_v: int = 1,
                 num_needle_q: int = 1, haystack_path: str | None = None, notes: str = ""):
        if haystack not in HAYSTACKS:
            raise KvlabError(f"unknown haystack '{haystack}'; use one of {', '.join(HAYSTACKS)}")
        for kind in (type_needle_k, type_needle_v):
            if kind not in NEEDLE_TYPES:
                raise KvlabError(f"unknown needle type '{kind}'; use one of {', '.join(NEEDLE_TYPES)}")
        if min(num_needle_k, num_needle_v, num_needle_q) < 1:
            raise KvlabError("num_needle_k, num_needle_v and num_needle_q must be >= 1")
        self.name, self.haystack, self.notes = name, haystack, notes
        self.type_k, self.type_v = type_needle_k, type_needle_v
        self.k, self.v, self.q = max(int(num_needle_k), int(num_needle_q)), int(num_needle_v), int(num_needle_q)
        self.haystack_path = haystack_path
        single = self.q * self.v == 1
        self.template = singularize(TEMPLATE) if single else TEMPLATE
        self.answer_prefix = singularize(ANSWER_PREFIX) if single else ANSWER_PREFIX
        self.type_label = self.type_v[:-1] if single else self.type_v

    def tokens_per_unit(self) -> float:
        return {"essay": 1.3, "noise": 5.0, "needle": 20.0 if self.type_k != "uuids" else 70.0}[self.haystack]

    def max_units(self, length: int) -> int:
        return 2 * length

    def build(self, rng: random.Random, units: int, env: dict[str, Any]) -> Draft:
        keys, values, needles = [], [], []
        for _ in range(self.k):
            keys.append(random_needle(rng, self.type_k))
            values.append([random_needle(rng, self.type_v) for _ in range(self.v)])
            needles += [NEEDLE.format(type_needle_v=self.type_v, key=keys[-1], value=v) for v in values[-1]]
        rng.shuffle(needles)
        if self.haystack == "essay":
            text = words_from(haystack_words(self.haystack_path), 0, units)
            context, _ = insert_between_sentences(text, needles, rng.sample(DEPTHS, len(needles)))
        else:
            if self.haystack == "noise":
                lines = noise_lines(units)
            else:
                lines = [NEEDLE.format(type_needle_v=self.type_v, key=random_needle(rng, self.type_k),
                                       value=random_needle(rng, self.type_v)) for _ in range(units)]
            for index, needle in zip(sorted(rng.sample(range(len(lines)), len(needles)), reverse=True), needles):
                lines.insert(index, needle)
            context = "\n".join(lines)
        chosen = rng.sample(range(self.k), self.q)
        query = join_keys([keys[i] for i in chosen])
        answers = tuple(a for i in chosen for a in values[i])
        head, tail = self.template.split("{context}")
        full_context = head.format(type_needle_v=self.type_label) + context
        question = tail.format(type_needle_v=self.type_label, query=query)
        prefix = self.answer_prefix.format(type_needle_v=self.type_label, query=query)
        depths = [round(100 * context.index(needle_for(needles, a)) / max(1, len(context)), 1) for a in answers]
        meta = {"depth": depths[0], "answer_depths": depths, "haystack": self.haystack,
                "num_needles": len(needles), "query_keys": [keys[i] for i in chosen]}
        return Draft(full_context, (Query(question, answers, prefix, TOKENS_TO_GENERATE),), meta)


def needle_for(needles: list[str], value: str) -> str:
    return next(n for n in needles if n.endswith(f" {value}."))

"""RULER's aggregation tasks: common words extraction (``cwe``) and frequent words extraction
(``fwe``) (NVIDIA/RULER ``common_words_extraction.py``, ``freq_words_extraction.py``).

* ``cwe``: a numbered list ``"1. w 2. w ..."`` in which ``num_cw=10`` words appear ``freq_cw=30``
  times and the others ``freq_ucw=3`` times (6 and 1 below 4096 tokens); words from wonderwords
  (nouns + adjectives + verbs); one solved few-shot example (40 words) precedes the list. The
  number of distinct words is binary-searched. 120 tokens to generate.
* ``fwe``: coded 6-letter words whose counts follow a Zipf law (``alpha=2``); the most frequent
  "word" is ``...`` (noise), the answer is the next three. Vocabulary = (length - 50) // 50 words.
  The number of words is binary-searched (RULER steps by length/32). 50 tokens to generate.

Both are scored with ``string_match_all``.
"""

from __future__ import annotations

import random
import string
from typing import Any

from kvlab.tasks.base import Query
from kvlab.tasks.fitting import Draft, GeneratedTask
from kvlab.tasks.text import word_lists

CWE_TEMPLATE = ("Below is a numbered list of words. In these words, some appear more often than others. Memorize "
                "the ones that appear most often.\n{context}\nQuestion: What are the 10 most common words in the "
                "above list?")
CWE_ANSWER_PREFIX = " Answer: The top 10 words that appear most often in the list are:"
FWE_TEMPLATE = ("Read the following coded text and track the frequency of each coded word. Find the three most "
                "frequently appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore "
                "the dots '....'. What are the three most frequently appeared words in the above coded text?")
FWE_ANSWER_PREFIX = (" Answer: According to the coded text above, the three most frequently appeared words are:")


def numbered(words: list[str]) -> str:
    return " ".join(f"{i + 1}. {w}" for i, w in enumerate(words))


class RulerCommonWords(GeneratedTask):
    """RULER ``cwe``; see the module docstring."""

    source = "RULER common_words_extraction generator (NVIDIA/RULER); words: wonderwords"
    metric = "string_match_all"
    min_units = 11

    def __init__(self, name: str = "ruler/cwe", freq_cw: int = 30, freq_ucw: int = 3, num_cw: int = 10,
                 num_fewshot: int = 1, notes: str = ""):
        self.name, self.notes = name, notes
        self.freq_cw, self.freq_ucw, self.num_cw, self.num_fewshot = int(freq_cw), int(freq_ucw), int(num_cw), int(
            num_fewshot)
        self.min_units = self.num_cw + 1

    def vocabulary(self, seed: int) -> list[str]:
        lists = word_lists()
        words = sorted(set(lists["nouns"] + lists["adjectives"] + lists["verbs"]))
        random.Random(seed).shuffle(words)
        return words

    def prepare(self, tokenizer: Any, length: int, seed: int) -> dict[str, Any]:
        return {"length": int(length), "words": self.vocabulary(seed)}

    def tokens_per_unit(self) -> float:
        return 4.5 * self.freq_ucw  # "12. word" is about 4-5 tokens; a guess, the search corrects it

    def max_units(self, length: int) -> int:
        lists = word_lists()  # past the vocabulary RULER falls back to a 8.5 MB word list we do not ship
        return min(len(set(lists["nouns"] + lists["adjectives"] + lists["verbs"])), 2 * length)

    def _example(self, rng: random.Random, words: list[str], num: int, common: int, uncommon: int) -> tuple[str, list[str]]:
        chosen = rng.sample(words, min(num, len(words)))
        top, rest = chosen[:self.num_cw], chosen[self.num_cw:]
        listing = top * common + rest * uncommon
        rng.shuffle(listing)
        return numbered(listing), top

    def build(self, rng: random.Random, units: int, env: dict[str, Any]) -> Draft:
        words, short = env["words"], env["length"] < 4096
        shot_args = (20, 3, 1) if short else (40, 10, 3)
        head, tail = CWE_TEMPLATE.split("{context}")
        shots = []
        for _ in range(self.num_fewshot):
            listing, top = self._example(rng, words, *shot_args)
            shots.append(head + listing + tail + CWE_ANSWER_PREFIX + " " + numbered(top))
        common, uncommon = (6, 1) if short else (self.freq_cw, self.freq_ucw)
        listing, top = self._example(rng, words, units, common, uncommon)
        context = "\n".join(shots) + "\n" + head + listing
        meta = {"num_words": units, "freq_cw": common, "freq_ucw": uncommon}
        return Draft(context, (Query(tail, tuple(top), CWE_ANSWER_PREFIX, 120),), meta)


def zeta(alpha: float, terms: int = 1000) -> float:
    """Riemann zeta for alpha > 1 (partial sum + Euler-Maclaurin tail; 1e-12 accurate)."""
    n = terms
    head = sum(k ** -alpha for k in range(1, n))
    return head + n ** (1 - alpha) / (alpha - 1) + 0.5 * n ** -alpha + alpha * n ** (-alpha - 1) / 12


class RulerFrequentWords(GeneratedTask):
    """RULER ``fwe``; see the module docstring."""

    source = "RULER freq_words_extraction generator (NVIDIA/RULER)"
    metric = "string_match_all"
    min_units = 10

    def __init__(self, name: str = "ruler/fwe", alpha: float = 2.0, coded_wordlen: int = 6,
                 vocab_size: int = -1, notes: str = ""):
        self.name, self.notes = name, notes
        self.alpha, self.coded_wordlen, self.vocab_size = float(alpha), int(coded_wordlen), int(vocab_size)

    def tokens_per_unit(self) -> float:
        return 3.0

    def max_units(self, length: int) -> int:
        return 4 * length

    def build(self, rng: random.Random, units: int, env: dict[str, Any]) -> Draft:
        size = self.vocab_size if self.vocab_size > 0 else max(4, (env["length"] - 50) // 50)
        vocab = ["".join(rng.choices(string.ascii_lowercase, k=self.coded_wordlen)) for _ in range(size)]
        while len(set(vocab)) < size:
            vocab.append("".join(rng.choices(string.ascii_lowercase, k=self.coded_wordlen)))
        vocab = sorted(set(vocab))
        rng.shuffle(vocab)
        vocab[0] = "..."  # the top-ranked "word" is noise
        z = zeta(self.alpha)
        text = [w for k, w in enumerate(vocab, start=1) for _ in range(int(units * k ** -self.alpha / z))]
        random.Random(rng.random()).shuffle(text)
        head, tail = FWE_TEMPLATE.split("{context}")
        meta = {"num_words": units, "vocab_size": size}
        return Draft(head + " ".join(text), (Query(tail, tuple(vocab[1:4]), FWE_ANSWER_PREFIX, 50),), meta)

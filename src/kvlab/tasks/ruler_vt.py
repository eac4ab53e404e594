"""RULER variable tracking (``vt``): follow a chain of ``VAR X = VAR Y`` assignments hidden in noise
(NVIDIA/RULER ``scripts/data/synthetic/variable_tracking.py``).

One chain of ``num_hops + 1`` variables (5 random upper-case letters): ``VAR ABCDE = 48213``, then
``VAR FGHIJ = VAR ABCDE`` ... placed at random, order-preserving lines of the noise haystack. The
question gives the value; the answer is every variable of the chain (``string_match_all``, 30 tokens
to generate). As in RULER one in-context example is always prepended: an instance fitted to 500
tokens with 3-letter names and value 12345, whose names and value are then re-drawn per sample.
"""

from __future__ import annotations

import heapq
import random
import string
from typing import Any

from kvlab.errors import KvlabError
from kvlab.tasks.base import Query
from kvlab.tasks.fitting import Draft, GeneratedTask, fit_units
from kvlab.tasks.ruler_niah import DEPTHS, insert_between_sentences, noise_lines
from kvlab.tasks.text import HAYSTACK_SOURCE, haystack_words, words_from

TEMPLATE = ("Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
            "Question: Find all variables that are assigned the value {query} in the text above.")
ANSWER_PREFIX = (" Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables "
                 "are assigned the value {query}, they are: ")
TOKENS_TO_GENERATE = 30
ICL_LENGTH = 500


def _chains(rng: random.Random, num_chains: int, num_hops: int, icl: bool) -> tuple[list[list[str]], list[list[str]]]:
    k = 3 if icl else 5
    hops = min(10, num_hops) if icl else num_hops
    names = ["".join(rng.choices(string.ascii_uppercase, k=k)) for _ in range((hops + 1) * num_chains)]
    while len(set(names)) < num_chains * (hops + 1):
        names.append("".join(rng.choices(string.ascii_uppercase, k=k)))
    names = list(dict.fromkeys(names))
    variables, chains = [], []
    for i in range(0, num_chains * (hops + 1), hops + 1):
        these = names[i:i + hops + 1]
        variables.append(these)
        chain = [f"VAR {these[0]} = {12345 if icl else rng.randint(10000, 99999)}"]
        chain += [f"VAR {these[j + 1]} = VAR {these[j]} " for j in range(hops)]
        chains.append(chain)
    return variables, chains


def _shuffle_sublists(rng: random.Random, lists: list[list[str]]) -> list[str]:
    """RULER's ``shuffle_sublists_heap``: interleave the chains, keeping each chain's order."""
    heap = [(rng.random(), i, 0) for i in range(len(lists))]
    heapq.heapify(heap)
    out = []
    while heap:
        _, li, ei = heapq.heappop(heap)
        out.append(lists[li][ei])
        if ei + 1 < len(lists[li]):
            heapq.heappush(heap, (rng.random(), li, ei + 1))
    return out


class RulerVariableTracking(GeneratedTask):
    """RULER ``vt``; see the module docstring."""

    source = "RULER variable_tracking generator (NVIDIA/RULER)"
    metric = "string_match_all"

    def __init__(self, name: str = "ruler/vt", num_chains: int = 1, num_hops: int = 4, haystack: str = "noise",
                 haystack_path: str | None = None, fewshot: bool = True, notes: str = ""):
        if haystack not in ("noise", "essay"):
            raise KvlabError(f"vt's haystack must be 'noise' or 'essay', not '{haystack}'")
        if int(num_chains) < 1 or int(num_hops) < 1:
            raise KvlabError("num_chains and num_hops must be >= 1")
        self.name, self.notes, self.haystack, self.haystack_path = name, notes, haystack, haystack_path
        self.num_chains, self.num_hops, self.fewshot = int(num_chains), int(num_hops), fewshot
        if haystack == "essay":
            self.source += f"; essay haystack: {HAYSTACK_SOURCE}"
        # the noise haystack needs at least one line per chain link (a line is 5 sentences)
        self.min_units = 5 * (self.num_hops + 1) if haystack == "noise" else 1

    def tokens_per_unit(self) -> float:
        return 1.3 if self.haystack == "essay" else 5.0

    def max_units(self, length: int) -> int:
        return 2 * length

    def _text(self, rng: random.Random, units: int, icl: bool) -> tuple[str, str, list[str]]:
        """(context with the chains, the queried value, the answer variables)."""
        variables, chains = _chains(rng, self.num_chains, self.num_hops, icl)
        value = chains[0][0].split("=")[-1].strip()
        if self.haystack == "essay":
            text = words_from(haystack_words(self.haystack_path), 0, units)
            flat = _shuffle_sublists(rng, chains)
            context, _ = insert_between_sentences(text, [c.strip() + "." for c in flat],
                                                  rng.sample(DEPTHS, len(flat)))
        else:
            lines = noise_lines(units)
            for chain in chains:
                positions = sorted(rng.sample(range(len(lines)), len(chain)))
                for j, (pos, link) in enumerate(zip(positions, chain)):
                    lines.insert(pos + j, link)
            context = "\n".join(lines)
        return context.replace(". \n", ".\n"), value, variables[0]

    def prepare(self, tokenizer: Any, length: int, seed: int) -> dict[str, Any]:
        """Fit the in-context example to 500 tokens (plain text, no generation budget), as RULER."""
        env: dict[str, Any] = {"length": int(length), "icl": ""}
        if not self.fewshot:
            return env
        key = f"{self.name}|icl|{seed}"

        def example(units: int) -> str:
            context, value, names = self._text(random.Random(key), units, icl=True)
            head, tail = TEMPLATE.split("{context}")
            prefix = ANSWER_PREFIX.format(num_v=self.num_hops + 1, query=value)
            return head + context + tail.format(query=value) + prefix + " " + " ".join(names) + "\n"

        def cost(units: int) -> int:
            return len(tokenizer(example(units), add_special_tokens=False)["input_ids"])

        env["icl"] = example(fit_units(cost, ICL_LENGTH, self.min_units, 4 * ICL_LENGTH, int(ICL_LENGTH / self.tokens_per_unit())))
        return env

    def build(self, rng: random.Random, units: int, env: dict[str, Any]) -> Draft:
        icl = _randomize_icl(rng, env["icl"], self.num_hops) if env["icl"] else ""
        context, value, names = self._text(rng, units, icl=False)
        head, tail = TEMPLATE.split("{context}")
        full = (icl + "\n" if icl else "") + head + context
        prefix = ANSWER_PREFIX.format(num_v=self.num_hops + 1, query=value)
        depth = round(100 * context.index(f"VAR {names[0]} =") / max(1, len(context)), 1)
        meta = {"depth": depth, "haystack": self.haystack, "num_hops": self.num_hops, "fewshot": self.fewshot}
        return Draft(full, (Query(tail.format(query=value), tuple(names), prefix, TOKENS_TO_GENERATE),), meta)


def _randomize_icl(rng: random.Random, example: str, num_hops: int) -> str:
    """RULER's ``randomize_icl``: fresh letters for the example's variables, a fresh value for 12345."""
    for name in example.strip().split()[-(min(10, num_hops) + 1):]:
        example = example.replace(name, "".join(rng.choices(string.ascii_uppercase, k=len(name))))
    return example.replace("12345", str(rng.randint(10000, 99999)))

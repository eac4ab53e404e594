"""Run task samples through the engine: the code shared by ``kvlab eval``, the sweep runner and the report.

Two modes (see :meth:`kvlab.tasks.base.Sample.parts`):

* ``query_aware``: each query is prefilled together with the context (single-request benchmarks);
  one prefill per query.
* ``query_agnostic``: the context is prefilled and compressed once, then every query is answered
  from a copy of that same compressed cache -- the question is never seen before compression.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

from kvlab.budget import Budget
from kvlab.engine import DEFAULT_CHUNK_SIZE, Generation, continue_generation, generate, prefill_context
from kvlab.methods import Method, get_method
from kvlab.models.loading import LoadedModel
from kvlab.prompting import render
from kvlab.sampling import SamplingParams
from kvlab.tasks.base import MODES, Sample, Task


@dataclass
class QueryResult:
    """One answered query: what the store keeps per sample (plain data)."""

    task: str
    sample_index: int
    query_index: int
    mode: str
    prediction: str
    answers: list[str]
    score: float
    prompt_hash: str
    prompt_tokens: int
    context_tokens: int
    new_tokens: int
    prefill_seconds: float
    decode_seconds: float
    kv_tokens: float
    kv_bytes: int
    peak_kv_bytes: int
    full_kv_bytes: int
    metadata: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_sample(
    lm: LoadedModel,
    task: Task,
    sample: Sample,
    method: str | Method = "full",
    budget: str | Budget | None = None,
    *,
    mode: str = "query_aware",
    chat: str = "template",
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
) -> list[QueryResult]:
    """Answer every query of ``sample`` under ``method``/``budget`` (greedy) and score it."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    method = get_method(method)
    results = []
    if mode == "query_aware":
        for qi, query in enumerate(sample.queries):
            rendered = render(lm.tokenizer, sample.parts(query, mode), chat)
            gen = generate(lm, rendered, method=method, budget=budget, chunk_size=chunk_size,
                           max_new_tokens=query.max_new_tokens)
            results.append(_result(task, sample, qi, mode, gen, rendered.ids))
        return results
    # query-agnostic: one compressed context, every query from a copy of it
    first = render(lm.tokenizer, sample.parts(sample.queries[0], mode), chat)
    longest = max(q.max_new_tokens for q in sample.queries)
    prefilled = prefill_context(lm, first.context_ids, method, budget, chunk_size, reserve_extra=longest + 256)
    for qi, query in enumerate(sample.queries):
        rendered = render(lm.tokenizer, sample.parts(query, mode), chat)
        gen = continue_generation(prefilled, rendered.suffix_ids, SamplingParams(max_new_tokens=query.max_new_tokens),
                                  copy=True)
        if qi == 0:  # the first query pays for the shared prefill
            gen.stats.prefill_seconds += prefilled.prefill_seconds
        results.append(_result(task, sample, qi, mode, gen, prefilled.context_ids + rendered.suffix_ids))
    return results


def _result(task: Task, sample: Sample, qi: int, mode: str, gen: Generation, ids: list[int]) -> QueryResult:
    query = sample.queries[qi]
    s = gen.stats
    return QueryResult(
        task=task.name, sample_index=sample.index, query_index=qi, mode=mode, prediction=gen.text,
        answers=list(query.answers), score=float(task.score(gen.text, query)), prompt_hash=prompt_hash(ids),
        prompt_tokens=s.prompt_tokens, context_tokens=s.context_tokens, new_tokens=s.new_tokens,
        prefill_seconds=s.prefill_seconds, decode_seconds=s.decode_seconds, kv_tokens=s.kv_tokens,
        kv_bytes=s.kv_bytes, peak_kv_bytes=s.peak_kv_bytes, full_kv_bytes=s.full_kv_bytes,
        metadata={**sample.metadata, **query.metadata},
    )


def prompt_hash(ids: list[int]) -> str:
    """A stable hash of the token ids a prompt was run with."""
    return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()[:16]

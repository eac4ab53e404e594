"""Run task samples through the engine: the code shared by ``kvlab eval``, the sweep runner and the report.

Two modes (see :meth:`kvlab.tasks.base.Sample.parts`):

* ``query_aware``: each query is prefilled together with the context (single-request benchmarks);
  one prefill per query.
* ``query_agnostic``: the context is prefilled and compressed once, then every query is answered
  from a copy of that same compressed cache -- the question is never seen before compression.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from kvlab.budget import Budget
from kvlab.engine import (
    DEFAULT_CHUNK_SIZE,
    Generation,
    continue_generation,
    generate,
    prefill_context,
    token_logprobs,
)
from kvlab.methods import Method, get_method
from kvlab.models.loading import LoadedModel
from kvlab.prompting import render
from kvlab.sampling import SamplingParams
from kvlab.shared_prefill import PrefillMemo
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
    memo: PrefillMemo | None = None,
) -> list[QueryResult]:
    """Answer every query of ``sample`` under ``method``/``budget`` (greedy) and score it.

    With ``memo``, a context this sweep already prefilled is compressed from its recording instead
    of running the model again (same results; see :mod:`kvlab.shared_prefill`).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    method = get_method(method)
    prefill = memo.prefill if memo is not None else prefill_context
    results = []
    if mode == "query_aware":
        for qi, query in enumerate(sample.queries):
            rendered = render(lm.tokenizer, sample.parts(query, mode), chat)
            gen = generate(lm, rendered, method=method, budget=budget, chunk_size=chunk_size,
                           max_new_tokens=query.max_new_tokens, prefill=prefill)
            results.append(_result(task, sample, qi, mode, gen, rendered.ids))
        return results
    # query-agnostic: one compressed context, every query from a copy of it
    first = render(lm.tokenizer, sample.parts(sample.queries[0], mode), chat)
    longest = max(q.max_new_tokens for q in sample.queries)
    prefilled = prefill(lm, first.context_ids, method, budget, chunk_size, reserve_extra=longest + 256)
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


def summarize(results: Iterable[QueryResult]) -> dict[str, Any]:
    """Aggregate query results as RULER does: ``score`` = mean per-query score x 100 (2 decimals),
    ``nulls`` = share of empty predictions; plus counts, mean tokens/KV and total times."""
    rows = list(results)
    if not rows:
        raise ValueError("no results to summarize")
    n = len(rows)
    return {
        "score": round(100.0 * sum(r.score for r in rows) / n, 2),
        "queries": n,
        "samples": len({(r.sample_index) for r in rows}),
        "nulls": round(sum(1 for r in rows if not r.prediction.strip()) / n, 4),
        "mean_prompt_tokens": round(sum(r.prompt_tokens for r in rows) / n, 1),
        "mean_kv_tokens": round(sum(r.kv_tokens for r in rows) / n, 1),
        "mean_kv_bytes": round(sum(r.kv_bytes for r in rows) / n),
        "prefill_seconds": round(sum(r.prefill_seconds for r in rows), 3),
        "decode_seconds": round(sum(r.decode_seconds for r in rows), 3),
    }


def scores_by(results: Iterable[QueryResult], key: str) -> dict[Any, float]:
    """Mean score x 100 per value of metadata ``key`` (e.g. ``depth`` for a needle heatmap row)."""
    groups: dict[Any, list[float]] = defaultdict(list)
    for r in results:
        groups[r.metadata.get(key)].append(r.score)
    def order(item: tuple[Any, list[float]]) -> tuple[int, float, str]:
        k = item[0]
        return (0, float(k), "") if isinstance(k, (int, float)) else (1, 0.0, str(k))

    return {k: round(100.0 * sum(v) / len(v), 2) for k, v in sorted(groups.items(), key=order)}


def run_perplexity(
    lm: LoadedModel,
    task: Any,
    length: int,
    method: str | Method = "full",
    budget: str | Budget | None = None,
    chunk_size: int = 1024,
    *,
    n: int = 1,
    seed: int = 42,
    on_window: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Perplexity of ``n`` windows of ``length`` tokens, per position bucket (plain records).

    ``task`` is a perplexity task (``get_task("perplexity", bucket_size=1024)``). Each window is
    streamed through :func:`kvlab.engine.token_logprobs` under ``method``/``budget`` with
    ``chunk_size``-token chunks (compressed between chunks). One record per window::

        {"task", "window", "length", "method", "budget", "chunk_size", "tokens", "nll", "ppl",
         "seconds", "buckets": [{"first", "last", "tokens", "nll", "ppl"}, ...], "metadata"}

    ``nll`` is the mean negative log-likelihood (nats/token) over predicted positions 1..length-1.
    """
    method = get_method(method)
    windows = task.windows(lm.tokenizer, length, n, seed)
    records = []
    for i, window in enumerate(windows):
        start = time.perf_counter()
        logp = token_logprobs(lm, list(window.ids), method, budget, chunk_size)
        seconds = time.perf_counter() - start
        nll = (-logp).double()
        buckets = []
        for first, last in task.buckets(length):
            part = nll[first - 1:last]  # entry i predicts position i + 1
            mean = float(part.mean())
            buckets.append({"first": first, "last": last, "tokens": int(part.numel()), "nll": round(mean, 5),
                            "ppl": round(math.exp(mean), 4)})
        mean = float(nll.mean())
        records.append({
            "task": task.name, "window": window.index, "length": length, "method": method.describe(),
            "budget": str(Budget.parse(budget)), "chunk_size": chunk_size, "tokens": int(nll.numel()),
            "nll": round(mean, 5), "ppl": round(math.exp(mean), 4), "seconds": round(seconds, 3),
            "buckets": buckets, "metadata": dict(window.metadata),
        })
        if on_window:
            on_window(i + 1, len(windows))
    return records

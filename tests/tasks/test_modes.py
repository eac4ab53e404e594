"""Query-aware vs query-agnostic evaluation: what is prefilled (and compressed) before decoding."""

from __future__ import annotations

import pytest

from kvlab import evaluate
from kvlab.prompting import render
from kvlab.tasks import get_task


def contains(haystack: list[int], needle: list[int]) -> bool:
    n = len(needle)
    return any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))


@pytest.fixture
def spy(monkeypatch):
    """Record the token ids every prefill compresses, and the compressed cache it returns."""
    calls = []
    real = evaluate.prefill_context

    def wrapper(lm, context_ids, *args, **kwargs):
        out = real(lm, context_ids, *args, **kwargs)
        calls.append((list(context_ids), out))
        return out

    monkeypatch.setattr(evaluate, "prefill_context", wrapper)
    # generate() (query-aware path) calls engine.prefill_context: spy on it too
    from kvlab import engine

    real_engine = engine.prefill_context

    def engine_wrapper(lm, context_ids, *args, **kwargs):
        out = real_engine(lm, context_ids, *args, **kwargs)
        calls.append((list(context_ids), out))
        return out

    monkeypatch.setattr(engine, "prefill_context", engine_wrapper)
    return calls


def question_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text.strip(), add_special_tokens=False)["input_ids"][1:-1]  # inner tokens: no boundary merges


@pytest.mark.parametrize("method,budget", [("full", None), ("snapkv", "25%")])
def test_query_agnostic_compresses_before_any_question(tiny_with_tokenizer, spy, method, budget):
    lm = tiny_with_tokenizer
    task = get_task("shared/multikey", num_keys=4, num_queries=3, max_new_tokens=2)
    (sample,) = task.samples(lm.tokenizer, 768, 1)
    results = evaluate.run_sample(lm, task, sample, method, budget, mode="query_agnostic", chunk_size=256)
    assert len(results) == 3 and len(spy) == 1  # one prefill (and compression) shared by all questions
    prefilled, _ = spy[0]
    assert prefilled == render(lm.tokenizer, sample.parts(sample.queries[0], "query_agnostic")).context_ids
    for q in sample.queries:
        key = q.metadata["query_key"]
        assert not contains(prefilled, question_ids(lm.tokenizer, q.question))
        assert not contains(prefilled, question_ids(lm.tokenizer, q.answer_prefix))
        assert key in sample.context  # the key is in the haystack, but not the question about it
    if budget:
        assert results[0].kv_tokens < len(prefilled)  # it really was compressed
    assert all(r.mode == "query_agnostic" for r in results)


def test_query_aware_prefills_each_question_with_the_context(tiny_with_tokenizer, spy):
    lm = tiny_with_tokenizer
    task = get_task("shared/multikey", num_keys=4, num_queries=2, max_new_tokens=2)
    (sample,) = task.samples(lm.tokenizer, 768, 1)
    evaluate.run_sample(lm, task, sample, "snapkv", "25%", mode="query_aware", chunk_size=256)
    assert len(spy) == 2
    for (ids, _), q in zip(spy, sample.queries):
        assert contains(ids, question_ids(lm.tokenizer, q.question))


def test_agnostic_cache_is_the_same_whatever_the_questions(tiny_with_tokenizer, spy):
    """The compressed cache must not depend on the questions: swap them and compare kept positions."""
    import dataclasses

    lm = tiny_with_tokenizer
    task = get_task("shared/multikey", num_keys=4, num_queries=2, max_new_tokens=1)
    (sample,) = task.samples(lm.tokenizer, 768, 1)
    swapped = dataclasses.replace(sample, queries=tuple(reversed(sample.queries)))
    evaluate.run_sample(lm, task, sample, "snapkv", "25%", mode="query_agnostic", chunk_size=256)
    evaluate.run_sample(lm, task, swapped, "snapkv", "25%", mode="query_agnostic", chunk_size=256)
    (ids_a, a), (ids_b, b) = spy
    assert ids_a == ids_b
    assert a.cache.bytes_held == b.cache.bytes_held
    assert a.last_logits.allclose(b.last_logits)


def test_summaries_follow_ruler_and_sort_depths_numerically():
    from kvlab.evaluate import QueryResult, scores_by, summarize

    def result(i, score, depth, prediction="x"):
        return QueryResult("t", i, 0, "query_aware", prediction, ["a"], score, "h", 10, 10, 1, 0.1, 0.1, 10.0,
                           100, 100, 100, {"depth": depth})

    rows = [result(0, 1.0, 100), result(1, 0.0, 25), result(2, 1.0, 25, prediction=" "), result(3, 0.5, 0)]
    summary = summarize(rows)
    assert summary["score"] == 62.5 and summary["queries"] == 4 and summary["nulls"] == 0.25
    assert list(scores_by(rows, "depth").items()) == [(0, 50.0), (25, 50.0), (100, 100.0)]

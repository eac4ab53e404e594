"""Long-text perplexity: windows, buckets, and agreement with a plain forward pass."""

from __future__ import annotations

import math

import pytest
import torch

from kvlab.errors import KvlabError
from kvlab.evaluate import run_perplexity
from kvlab.tasks import get_task


def test_windows_are_exact_deterministic_and_seeded(tokenizer):
    task = get_task("perplexity")
    a = task.windows(tokenizer, 3000, 3, seed=1)
    b = task.windows(tokenizer, 3000, 3, seed=1)
    c = task.windows(tokenizer, 3000, 3, seed=2)
    assert [w.ids for w in a] == [w.ids for w in b]
    assert all(len(w.ids) == 3000 for w in a)
    assert a[0].ids != c[0].ids
    assert a[0].ids[0] == tokenizer.bos_token_id


@pytest.mark.parametrize("length,size", [(3000, 1024), (2048, 1024), (10, 3)])
def test_buckets_cover_every_predicted_position_once(length, size):
    buckets = get_task("perplexity", bucket_size=size).buckets(length)
    covered = [p for first, last in buckets for p in range(first, last + 1)]
    assert covered == list(range(1, length))
    assert all(last - first + 1 <= size for first, last in buckets)


def test_full_cache_perplexity_matches_a_plain_forward_pass(tiny_with_tokenizer):
    lm = tiny_with_tokenizer
    task = get_task("perplexity", bucket_size=256)
    (record,) = run_perplexity(lm, task, 600, "full", None, chunk_size=128, n=1, seed=3)
    ids = torch.tensor([task.windows(lm.tokenizer, 600, 1, seed=3)[0].ids])
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(ids).logits[0, :-1].float(), -1).gather(-1, ids[0, 1:, None])[:, 0]
    nll = -logp.double()
    assert record["tokens"] == 599
    assert record["nll"] == pytest.approx(float(nll.mean()), abs=1e-4)
    assert record["ppl"] == pytest.approx(math.exp(float(nll.mean())), rel=1e-3)
    assert [(b["first"], b["last"]) for b in record["buckets"]] == [(1, 255), (256, 511), (512, 599)]
    assert record["buckets"][1]["nll"] == pytest.approx(float(nll[255:511].mean()), abs=1e-4)


def test_a_budget_changes_late_buckets_only(tiny_with_tokenizer):
    lm = tiny_with_tokenizer
    task = get_task("perplexity", bucket_size=128)
    (full,) = run_perplexity(lm, task, 512, "full", None, chunk_size=128, n=1)
    (small,) = run_perplexity(lm, task, 512, "streaming_llm", "64", chunk_size=128, n=1)
    assert small["buckets"][0]["nll"] == pytest.approx(full["buckets"][0]["nll"], abs=1e-4)  # first chunk: no eviction yet
    assert small["buckets"][-1]["nll"] != pytest.approx(full["buckets"][-1]["nll"], abs=1e-4)


def test_bad_perplexity_requests(tokenizer, tmp_path):
    with pytest.raises(KvlabError, match="bucket_size"):
        get_task("perplexity", bucket_size=0)
    short = tmp_path / "short.txt"
    short.write_text("word " * 150)
    with pytest.raises(KvlabError, match="too short"):
        get_task("perplexity", path=str(short)).windows(tokenizer, 5000, 1)

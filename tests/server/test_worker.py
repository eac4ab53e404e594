"""The engine worker on a tiny random-weight model: context reuse gives exactly the tokens of a
fresh prefill for every registered method, and cancelled or over-limit jobs are handled."""

from __future__ import annotations

import asyncio

import pytest
import torch
from method_matrix import METHOD_CASES

from kvlab.budget import Budget
from kvlab.methods import get_method
from kvlab.sampling import SamplingParams

pytest.importorskip("fastapi")

from kvlab.server.context_cache import ContextCache
from kvlab.server.worker import Channel, Delta, Done, EngineWorker, Failed, Job, QueueFull


def random_ids(n: int, seed: int, vocab: int = 320) -> list[int]:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def run_jobs(worker: EngineWorker, *jobs_args: dict) -> list:
    """Submit jobs one after another; return each one's final event."""

    async def go():
        finals = []
        for args in jobs_args:
            channel = Channel(asyncio.get_running_loop())
            worker.submit(Job(channel=channel, **args))
            while not isinstance(event := await asyncio.wait_for(channel.queue.get(), 60), (Done, Failed)):
                assert isinstance(event, Delta)
            finals.append(event)
        return finals

    return asyncio.run(go())


@pytest.fixture()
def worker(tiny_llama):
    w = EngineWorker(tiny_llama, "tiny", ContextCache(64 * 2**20), max_queue=4)
    w.start()
    yield w
    w.stop()


@pytest.mark.parametrize("name", sorted(METHOD_CASES))
def test_reused_context_decodes_like_a_fresh_prefill(worker, name):
    method = get_method(name, **METHOD_CASES[name])
    context = random_ids(96, seed=1)
    common = dict(context_ids=context, sampling=SamplingParams(max_new_tokens=6), method=method,
                  budget=Budget.parse("32"), chunk_size=32)
    cold, warm, fresh = run_jobs(
        worker,
        dict(suffix_ids=random_ids(5, seed=2), reuse=True, **common),
        dict(suffix_ids=random_ids(7, seed=3), reuse=True, **common),
        dict(suffix_ids=random_ids(7, seed=3), reuse=False, **common),
    )
    assert (cold.reused, warm.reused, fresh.reused) == (False, True, False)
    assert warm.generation.token_ids == fresh.generation.token_ids
    assert warm.generation.stats.kv_bytes == fresh.generation.stats.kv_bytes
    assert worker.contexts.stats().hits == 1 and len(worker.contexts) == 1


def test_a_different_budget_or_chunk_size_is_a_new_context(worker):
    context = random_ids(64, seed=4)
    base = dict(context_ids=context, suffix_ids=[1, 2], sampling=SamplingParams(max_new_tokens=2),
                method=get_method("snapkv", window_size=8), reuse=True)
    events = run_jobs(worker, dict(budget=Budget.parse("16"), chunk_size=32, **base),
                      dict(budget=Budget.parse("24"), chunk_size=32, **base),
                      dict(budget=Budget.parse("16"), chunk_size=None, **base),
                      dict(budget=Budget.parse("16"), chunk_size=32, **base))
    assert [e.reused for e in events] == [False, False, False, True]
    assert worker.contexts.stats().bytes <= worker.contexts.limit_bytes


def test_cancelled_job_is_skipped_and_errors_are_reported(worker):
    async def go():
        loop = asyncio.get_running_loop()
        skipped = Job(context_ids=[1, 2, 3], suffix_ids=[], sampling=SamplingParams(max_new_tokens=2),
                      method=get_method("full"), budget=Budget.parse(None), chunk_size=None, reuse=False,
                      channel=Channel(loop))
        skipped.cancel()
        worker.submit(skipped)
        bad = Job(context_ids=[10**9], suffix_ids=[], sampling=SamplingParams(max_new_tokens=2),
                  method=get_method("full"), budget=Budget.parse(None), chunk_size=None, reuse=False,
                  channel=Channel(loop))
        worker.submit(bad)  # a token id outside the vocabulary: the engine raises
        return await asyncio.wait_for(bad.channel.queue.get(), 60), skipped.channel.queue.empty()

    event, nothing_for_skipped = asyncio.run(go())
    assert isinstance(event, Failed) and nothing_for_skipped
    assert worker.counters.cancelled == 1 and worker.counters.failed == 1
    assert worker.alive  # the worker survives a failing job


def test_queue_bound_counts_waiting_jobs(tiny_llama):
    worker = EngineWorker(tiny_llama, "tiny", ContextCache(0), max_queue=1)  # not started: jobs only wait
    job = dict(context_ids=[1], suffix_ids=[], sampling=SamplingParams(max_new_tokens=1),
               method=get_method("full"), budget=Budget.parse(None), chunk_size=None, reuse=False, channel=None)
    worker.submit(Job(**job))
    with pytest.raises(QueueFull):
        worker.submit(Job(**job))
    assert worker.counters.rejected == 1 and worker.waiting == 1

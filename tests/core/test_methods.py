"""Invariants every registered method must satisfy, on tiny Llama / Qwen2 / Mistral / Gemma-3-like models."""

from __future__ import annotations

import pytest
import torch
from tinymodels import kv_layers, random_ids
from method_matrix import METHOD_CASES

from kvlab.engine import continue_generation, prefill_context
from kvlab.methods import METHODS, get_method
from kvlab.sampling import SamplingParams


def method(name: str):
    return get_method(name, **METHOD_CASES[name])


def exact_methods() -> list[str]:
    """Methods whose attention is exact while nothing is evicted (all but sparse-prefill ones)."""
    return [n for n in METHOD_CASES if method(n).kind != "sparse_prefill"]


def compressing() -> list[str]:
    return [n for n in METHOD_CASES if method(n).compresses]


def decode_time() -> list[str]:
    return [n for n in METHOD_CASES if method(n).evicts_during_decode]


def test_matrix_covers_registry():
    assert set(METHOD_CASES) == set(METHODS.names())


def expected_held(lm, m, budget: int, n: int) -> list[int]:
    """Tokens per KV head each layer should hold after prefilling ``n`` tokens under ``budget``."""
    layers = lm.spec.num_layers
    caps = m.layer_capacities(min(budget, n), lm.spec, n) if m.compresses else [n] * layers
    windows = lm.spec.sliding_windows
    return [min(caps[idx], n if windows[idx] is None else min(n, windows[idx] - 1)) for idx in lm.spec.kv_layers]


@pytest.mark.parametrize("name", compressing())
@pytest.mark.parametrize("chunk", [None, 16])
def test_cache_length_equals_the_budget(tiny, name, chunk):
    m = method(name)
    prefilled = prefill_context(tiny, random_ids(90), m, 40, chunk)
    cache = prefilled.cache
    held = [float(layer.tokens_held().float().mean()) for layer in kv_layers(cache)]
    assert held == [float(x) for x in expected_held(tiny, m, 40, 90)]
    assert cache.bytes_held == sum(layer.length * layer.slot_bytes for layer in kv_layers(cache))
    if m.layer_capacities(40, tiny.spec, 90) == [40] * tiny.spec.num_layers and name != "adakv":
        assert all(layer.length == h for layer, h in zip(kv_layers(cache), held))


@pytest.mark.parametrize("name", compressing())
def test_peak_is_bounded_by_budget_plus_one_chunk(tiny_llama, name):
    m = method(name)
    prefilled = prefill_context(tiny_llama, random_ids(200), m, 40, 25)
    slot = kv_layers(prefilled.cache)[0].slot_bytes
    layers = tiny_llama.spec.num_layers
    caps = m.layer_capacities(40, tiny_llama.spec, 200)
    pad = 3 if name == "adakv" else 1  # AdaKV pads heads to the longest one
    assert prefilled.cache.peak_bytes <= (sum(caps) * pad + 25 * layers) * slot


@pytest.mark.parametrize("name", exact_methods())
def test_budget_at_least_the_prompt_changes_nothing(tiny, name):
    ids = random_ids(60, seed=1)
    reference = prefill_context(tiny, ids, "full", None, None)
    ref_tokens = continue_generation(reference, [], SamplingParams(max_new_tokens=6)).token_ids
    for budget, chunk in ((60, None), (1000, None), (1000, 16)):
        got = prefill_context(tiny, ids, method(name), budget, chunk)
        torch.testing.assert_close(got.last_logits, reference.last_logits, rtol=1e-4, atol=1e-4)
        if budget == 1000:  # room for the generated tokens too: decoding is unchanged as well
            assert continue_generation(got, [], SamplingParams(max_new_tokens=6)).token_ids == ref_tokens


@pytest.mark.parametrize("chunk", [1, 7, 16, 33])
def test_chunked_prefill_equals_one_pass_for_full(tiny, chunk):
    ids = random_ids(70, seed=2)
    one_pass = prefill_context(tiny, ids, "full", None, None)
    chunked = prefill_context(tiny, ids, "full", None, chunk)
    torch.testing.assert_close(chunked.last_logits, one_pass.last_logits, rtol=1e-4, atol=1e-4)
    a = continue_generation(one_pass, [], SamplingParams(max_new_tokens=8)).token_ids
    b = continue_generation(chunked, [], SamplingParams(max_new_tokens=8)).token_ids
    assert a == b


@pytest.mark.parametrize("name", decode_time())
def test_decode_time_methods_stay_at_budget_every_step(tiny, name):
    m = method(name)
    prefilled = prefill_context(tiny, random_ids(60, seed=3), m, 30, 16)
    expected = expected_held(tiny, m, 30, 60)
    seen = []

    def check() -> bool:  # polled once per decoding step, after that step's eviction
        held = [int(layer.tokens_held().max()) for layer in kv_layers(prefilled.cache)]
        seen.append(held)
        return False

    out = continue_generation(prefilled, random_ids(3, seed=4), SamplingParams(max_new_tokens=12), should_stop=check)
    assert out.stats.new_tokens == 12 and len(seen) == 12
    assert all(held == expected for held in seen)


@pytest.mark.parametrize("name", [n for n in compressing() if n not in decode_time()])
def test_prefill_methods_append_question_and_generated_tokens(tiny_llama, name):
    m = method(name)
    prefilled = prefill_context(tiny_llama, random_ids(60), m, 30, None)
    before = [int(layer.tokens_held().max()) for layer in kv_layers(prefilled.cache)]
    continue_generation(prefilled, random_ids(5, seed=5), SamplingParams(max_new_tokens=4))
    after = [int(layer.tokens_held().max()) for layer in kv_layers(prefilled.cache)]
    assert after == [b + 5 + 3 for b in before]  # the 4th token is sampled but never fed back


def test_knorm_keeps_the_lowest_norm_keys(tiny_llama):
    ids = random_ids(80, seed=6)
    full = prefill_context(tiny_llama, ids, "full", None, None).cache
    kept = prefill_context(tiny_llama, ids, "knorm", 20, None).cache
    for full_layer, layer in zip(kv_layers(full), kv_layers(kept)):
        norms = full_layer.keys.norm(dim=-1)  # (1, Hkv, 80)
        expected = (-norms).topk(20, dim=-1).indices.sort(-1).values
        assert torch.equal(layer.positions, expected)


def test_streaming_llm_keeps_sinks_and_recent_tokens(tiny_llama):
    prefilled = prefill_context(tiny_llama, random_ids(80), "streaming_llm", 20, 16)
    expected = list(range(4)) + list(range(64, 80))
    for layer in kv_layers(prefilled.cache):
        assert layer.positions[0, 0].tolist() == expected and layer.positions[0, 1].tolist() == expected


def test_pyramid_budgets_shrink_with_depth_and_average_the_budget(tiny_llama):
    from kvlab.methods.pyramidkv import PyramidKV

    spec = tiny_llama.spec
    caps = PyramidKV().layer_capacities(512, spec, 10_000)
    assert caps == sorted(caps, reverse=True) and caps[0] > caps[-1]
    assert abs(sum(caps) / len(caps) - 512) <= spec.num_layers
    assert PyramidKV().layer_capacities(16, spec, 10_000) == [16] * spec.num_layers  # budget below the window
    # like the reference code, a prompt shorter than 2 (B - w) gets the uniform SnapKV budget
    assert PyramidKV().layer_capacities(384, spec, 512) == [384] * spec.num_layers


def test_tova_keeps_the_same_tokens_in_every_head(tiny_llama):
    prefilled = prefill_context(tiny_llama, random_ids(50), "tova", 20, None)
    for layer in kv_layers(prefilled.cache):
        assert torch.equal(layer.positions[0, 0], layer.positions[0, 1])
        assert int(layer.positions.max()) == 49  # the newest token is protected


def test_adakv_spends_the_layer_budget_across_heads(tiny_llama):
    prefilled = prefill_context(tiny_llama, random_ids(100, seed=7), "adakv", 20, None)
    for layer in kv_layers(prefilled.cache):
        per_head = layer.tokens_held()[0]
        assert int(per_head.sum()) == 2 * 20  # kv_heads x budget
        assert int(per_head.min()) >= int(20 * 0.2)  # the safeguard
        assert layer.length == int(per_head.max())


@pytest.mark.parametrize("name", [n for n in METHOD_CASES if method(n).kind == "sparse_prefill"])
def test_sparse_prefill_methods_keep_the_whole_cache(tiny_llama, name):
    prefilled = prefill_context(tiny_llama, random_ids(90, seed=8), method(name), 20, 32)
    assert [int(layer.tokens_held().min()) for layer in kv_layers(prefilled.cache)] == [90] * 3
    out = continue_generation(prefilled, random_ids(3, seed=9), SamplingParams(max_new_tokens=4))
    assert out.stats.kv_bytes == out.stats.full_kv_bytes

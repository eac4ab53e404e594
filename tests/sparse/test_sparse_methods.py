"""The sparse-prefill methods end to end on tiny models: full cache, pattern really applied, chunking."""

from __future__ import annotations

import pytest
import torch
from tinymodels import kv_layers, random_ids

from kvlab.engine import continue_generation, prefill_context
from kvlab.errors import KvlabError
from kvlab.methods import METHODS, get_method
from kvlab.sampling import SamplingParams

SPARSE = {
    "a_shape": {"n_init": 4, "n_local": 16},
    "lm_infinite": {"n_global": 4, "n_local": 16},
    "minference": {"last_q": 8, "vertical_size": 8, "slash_size": 12, "block_size": 8, "sink_tokens": 2,
                   "local_diagonals": 4},
}
STATIC = ("a_shape", "lm_infinite")


def method(name: str, **extra):
    return get_method(name, **{**SPARSE[name], **extra})


def test_flags_and_papers():
    for name in SPARSE:
        m = get_method(name)
        assert m.kind == "sparse_prefill" and m.phase == "none" and not m.compresses
        assert m.paper and m.url.startswith("https://arxiv.org/")
    assert get_method("minference").query_aware


@pytest.mark.parametrize("name", list(SPARSE))
def test_runs_keeps_the_full_cache_and_is_really_sparse(tiny, name):
    ids = random_ids(100, seed=11)
    full = prefill_context(tiny, ids, "full", None, None)
    got = prefill_context(tiny, ids, method(name), None, 32)
    for mine, ref in zip(kv_layers(got.cache), kv_layers(full.cache)):
        assert torch.equal(mine.positions, ref.positions)  # nothing evicted beyond the sliding window
    assert got.cache.bytes_held == full.cache.bytes_held
    out = continue_generation(got, random_ids(3, seed=12), SamplingParams(max_new_tokens=5))
    full_attention_layers = sum(tiny.spec.sliding_windows[idx] is None for idx in tiny.spec.kv_layers)
    grown = 3 * kv_layers(got.cache)[0].slot_bytes * full_attention_layers  # the suffix, kept whole
    assert out.stats.new_tokens == 5 and out.stats.kv_bytes == full.cache.bytes_held + grown
    if all(w is None for w in tiny.spec.sliding_windows):  # full-attention layers see the pattern
        assert (got.last_logits - full.last_logits).abs().max() > 1e-3


@pytest.mark.parametrize("name", STATIC)
@pytest.mark.parametrize("chunk", [13, 32])
def test_static_patterns_do_not_depend_on_chunking(tiny, name, chunk):
    ids = random_ids(90, seed=13)
    one = prefill_context(tiny, ids, method(name), None, None)
    chunked = prefill_context(tiny, ids, method(name), None, chunk)
    torch.testing.assert_close(chunked.last_logits, one.last_logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name,covering", [("a_shape", {"n_local": 200}), ("lm_infinite", {"n_local": 200}),
                                           ("minference", {"slash_size": 200})])
def test_a_pattern_covering_the_prompt_is_exactly_dense(tiny_llama, name, covering):
    ids = random_ids(80, seed=14)
    full = prefill_context(tiny_llama, ids, "full", None, 16)
    got = prefill_context(tiny_llama, ids, method(name, **covering), None, 16)
    torch.testing.assert_close(got.last_logits, full.last_logits, rtol=1e-5, atol=1e-5)


def test_lm_infinite_defaults_to_the_trained_window(tiny_llama):
    """n_local = L_pretrain (2048 here): any prompt that fits is attended densely."""
    ids = random_ids(120, seed=15)
    full = prefill_context(tiny_llama, ids, "full", None, None)
    got = prefill_context(tiny_llama, ids, "lm_infinite", None, None)
    torch.testing.assert_close(got.last_logits, full.last_logits, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", list(SPARSE))
def test_flex_kernel_equals_blocked_kernel_end_to_end(tiny_llama, name):
    ids = random_ids(300, seed=16)
    blocked = prefill_context(tiny_llama, ids, method(name, kernel="blocked"), None, 128)
    flexed = prefill_context(tiny_llama, ids, method(name, kernel="flex"), None, 128)
    torch.testing.assert_close(flexed.last_logits, blocked.last_logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("spec,match", [
    ("a_shape:n_local=0", "n_local"), ("a_shape:kernel=cuda", "kernel"), ("lm_infinite:n_global=-1", ">= 0"),
    ("minference:slash_size=0", "sizes"), ("minference:kernel=triton", "kernel"),
])
def test_bad_parameters_are_clear_errors(spec, match):
    with pytest.raises(KvlabError, match=match):
        get_method(spec)


def test_registered():
    assert set(SPARSE) <= set(METHODS.names())

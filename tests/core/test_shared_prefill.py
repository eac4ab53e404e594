"""A context prefilled once and compressed many ways equals a direct prefill of each method."""

from __future__ import annotations

import pytest
import torch
from method_matrix import METHOD_CASES
from tinymodels import kv_layers, make_tiny, random_ids

from kvlab.engine import continue_generation, prefill_context
from kvlab.errors import KvlabError
from kvlab.methods import get_method
from kvlab.sampling import SamplingParams
from kvlab.shared_prefill import PrefillMemo, compress_recorded, record_prefill, shareable

N = 120


@pytest.fixture(scope="module", params=["llama", "qwen2", "gemma3", "qwen3_next"])
def lm(request):
    return make_tiny(request.param)


def method(name):
    return get_method(name, **METHOD_CASES[name])


def test_which_methods_qualify(lm):
    names = [n for n in METHOD_CASES if shareable(method(n), lm.spec, N, None)]
    if any(w is not None and w < N for w in lm.spec.sliding_windows or ()):
        assert names == []  # the window drops tokens inside the chunk: every method prefills itself
        return
    assert {"full", "snapkv", "h2o"} <= set(names)
    assert not {"a_shape", "lm_infinite", "minference"} & set(names)  # they change the forward itself
    assert not shareable(method("snapkv"), lm.spec, N, chunk_size=64)  # several chunks


@pytest.mark.parametrize("name", [n for n in METHOD_CASES if n not in ("a_shape", "lm_infinite", "minference")])
@pytest.mark.parametrize("budget", ["37", "50%"])
def test_replay_equals_direct_prefill(lm, name, budget):
    m = method(name)
    if not shareable(m, lm.spec, N, None):
        pytest.skip("a sliding window binds inside the chunk")
    ids = random_ids(N, seed=3)
    direct = prefill_context(lm, ids, m, budget, chunk_size=None, reserve_extra=9)
    replayed = compress_recorded(record_prefill(lm, ids, with_mass=m.needs_attention_weights), m, budget, 9)
    assert replayed.cache.bytes_held == direct.cache.bytes_held
    assert replayed.cache.peak_bytes == direct.cache.peak_bytes
    torch.testing.assert_close(replayed.last_logits, direct.last_logits, atol=0, rtol=0)
    for a, b in zip(kv_layers(direct.cache), kv_layers(replayed.cache)):
        assert torch.equal(a.positions, b.positions)
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
        assert a.extras.keys() == b.extras.keys()
        for key in a.extras:
            torch.testing.assert_close(a.extras[key], b.extras[key])
    # ... and decoding from it gives the same tokens
    params = SamplingParams(max_new_tokens=6)
    one = continue_generation(direct, random_ids(3, seed=4), params, copy=True)
    two = continue_generation(replayed, random_ids(3, seed=4), params, copy=True)
    assert one.token_ids == two.token_ids


@pytest.fixture(scope="module")
def llama():
    return make_tiny("llama")


def test_memo_records_once_and_falls_back(llama):
    lm = llama
    memo = PrefillMemo()
    ids = random_ids(N, seed=5)
    a = memo.prefill(lm, ids, method("snapkv"), "30", chunk_size=4096)
    b = memo.prefill(lm, ids, method("knorm"), "30", chunk_size=4096)
    assert (memo.misses, memo.hits) == (1, 1)
    assert a.cache.tokens_per_layer() == b.cache.tokens_per_layer() == [30.0] * lm.spec.num_layers
    memo.prefill(lm, ids, method("h2o"), "30", chunk_size=4096)  # needs the attention mass: its own recording
    assert memo.misses == 2
    memo.prefill(lm, ids, method("snapkv"), "30", chunk_size=64)  # several chunks: a direct prefill
    memo.prefill(lm, ids, "a_shape:n_init=4,n_local=16", None, chunk_size=4096)  # its own forward: direct
    full = memo.prefill(lm, ids, "full", None, chunk_size=4096)  # a copy of the recording
    assert (memo.misses, memo.hits) == (2, 2) and full.cache.tokens_per_layer() == [float(N)] * lm.spec.num_layers
    tiny = PrefillMemo(max_bytes=1)
    tiny.prefill(lm, ids, method("snapkv"), "30", chunk_size=4096)
    tiny.prefill(lm, ids, method("snapkv"), "30", chunk_size=4096)
    assert tiny.misses == 2  # too big to keep: recorded each time


def test_replay_refuses_what_it_cannot_reproduce(llama):
    rec = record_prefill(llama, random_ids(N, seed=6))
    with pytest.raises(KvlabError, match="attention mass"):
        compress_recorded(rec, method("h2o"), "30")
    with pytest.raises(KvlabError, match="cannot be replayed"):
        compress_recorded(rec, method("a_shape"), None)

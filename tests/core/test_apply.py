"""kvlab.apply(): scoped switching of the attention implementation, and use around plain generate()."""

from __future__ import annotations

import pytest
import torch
from tinymodels import random_ids

import kvlab
from kvlab.errors import KvlabError
from kvlab.models import hf_compat


def _no_hooks(model) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_apply_switches_and_restores(tiny_llama):
    model = tiny_llama.model
    before = model.config._attn_implementation
    ids = torch.tensor([random_ids(20)])
    with torch.no_grad():
        reference = model(ids).logits
    with kvlab.apply(model, "snapkv", budget=10) as state:
        assert model.config._attn_implementation == "kvlab"
        assert hf_compat.is_registered() and hf_compat.lookup(model.config) is state
    assert model.config._attn_implementation == before
    assert not hf_compat.is_registered() and hf_compat.lookup(model.config) is None
    assert _no_hooks(model)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference)


def test_apply_restores_when_the_body_raises(tiny_llama):
    model = tiny_llama.model
    before = model.config._attn_implementation
    with pytest.raises(RuntimeError, match="boom"):
        with kvlab.apply(model, "h2o", budget=10):
            raise RuntimeError("boom")
    assert model.config._attn_implementation == before and not hf_compat.is_registered()


def test_nested_apply_is_refused_and_leaves_the_outer_intact(tiny_llama):
    model = tiny_llama.model
    with kvlab.apply(model, "snapkv", budget=10) as outer:
        with pytest.raises(KvlabError, match="already active"):
            with kvlab.apply(model, "h2o", budget=10):
                pass
        assert hf_compat.lookup(model.config) is outer and model.config._attn_implementation == "kvlab"
    assert not hf_compat.is_registered()


def test_bad_method_or_budget_changes_nothing(tiny_llama):
    model = tiny_llama.model
    before = model.config._attn_implementation
    for method, budget in (("nope", 10), ("snapkv", "12q")):
        with pytest.raises(KvlabError):
            with kvlab.apply(model, method, budget=budget):
                pass
    assert model.config._attn_implementation == before and not hf_compat.is_registered()


def test_full_around_plain_generate_is_unchanged(tiny):
    model = tiny.model
    ids = torch.tensor([random_ids(40, seed=11)])
    with torch.no_grad():
        plain = model.generate(ids, max_new_tokens=8, do_sample=False)
        with kvlab.apply(model, "full"):
            wrapped = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert torch.equal(plain, wrapped)


@pytest.mark.parametrize("name", ["h2o", "streaming_llm", "snapkv"])
def test_compression_around_plain_generate(tiny_llama, name):
    model = tiny_llama.model
    ids = torch.tensor([random_ids(60, seed=12)])
    with torch.no_grad(), kvlab.apply(model, name, budget=20) as state:
        out = model.generate(ids, max_new_tokens=5, do_sample=False)
        lengths = [layer.length for layer in state.foreign.values()]
    assert out.shape[1] == 65
    # decode-time methods stay at the budget; prefill-time ones grew by the 4 fed-back tokens
    assert lengths == [20 if name != "snapkv" else 24] * tiny_llama.spec.num_layers
    # plain generate under kvlab matches the engine's own path
    prefilled = kvlab.prefill_context(tiny_llama, ids[0].tolist(), name, 20, None)
    engine = kvlab.continue_generation(prefilled, [], kvlab.SamplingParams(max_new_tokens=5))
    assert out[0, 60:].tolist() == engine.token_ids

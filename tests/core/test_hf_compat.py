"""transformers compatibility: the cache argument is named as this transformers version names it, and
only attention modules that dispatch through the attention interface are switched."""

from __future__ import annotations

import inspect

import pytest
import torch
from tinymodels import make_tiny
from transformers.cache_utils import Cache

from kvlab.errors import KvlabError
from kvlab.models import hf_compat


def test_cache_kwarg_is_a_forward_parameter_and_round_trips():
    model = make_tiny("llama").model
    kwargs = hf_compat.cache_kwargs(model, None)
    (name,) = kwargs
    assert name in inspect.signature(type(model).forward).parameters
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[1, 2, 3]]), use_cache=True)
        cache = hf_compat.output_cache(out)
        assert isinstance(cache, Cache) and cache.get_seq_length() == 3
        model(input_ids=torch.tensor([[4]]), use_cache=True, **hf_compat.cache_kwargs(model, cache))
    assert cache.get_seq_length() == 4  # the cache was passed under the right name and extended


class _InlineAttention(torch.nn.Module):
    """Looks like an attention module (layer_idx, head_dim, config) but computes attention itself."""

    def __init__(self, config, layer_idx):
        super().__init__()
        self.config, self.layer_idx, self.head_dim = config, layer_idx, 16

    def forward(self, hidden_states, **kwargs):
        scores = hidden_states @ hidden_states.transpose(-1, -2)
        return torch.softmax(scores, dim=-1) @ hidden_states, None


def test_modules_computing_attention_inline_are_not_switched():
    model = make_tiny("llama").model
    assert hf_compat.attention_configs(model)  # Llama's modules dispatch through the interface
    for layer in model.model.layers:
        layer.self_attn = _InlineAttention(model.config, layer.self_attn.layer_idx)
    with pytest.raises(KvlabError, match="compute attention inline"):
        hf_compat.attention_configs(model)  # kvlab's attention would never run: refuse, do not ignore

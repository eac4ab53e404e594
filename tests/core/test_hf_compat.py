"""transformers compatibility: the cache argument is named as this transformers version names it."""

from __future__ import annotations

import inspect

import torch
from tinymodels import make_tiny
from transformers.cache_utils import Cache

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

"""TOVA: keep the tokens the current query attends to most, averaged over the layer's heads."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kvlab.methods import register_method
from kvlab.methods.base import LayerContext, Method


@register_method
@dataclass(frozen=True)
class TOVA(Method):
    """Transformers are Multi-State RNNs / Token Omission Via Attention (Oren et al., 2024).

    https://arxiv.org/abs/2401.06104 -- when the cache is over budget, drop the tokens with the
    lowest attention from the current (last) query, averaged over all heads of the layer, so all
    heads of a layer keep the same tokens. Applied to the prompt (scored by its last query) and at
    every decoding step. No hyperparameters. The newest token is always kept.
    """

    name = "tova"
    family = "eviction (attention score)"
    phase = "prefill+decode"
    query_aware = True
    decode_key_mass = True  # a decoding step's probabilities are what TOVA ranks by
    paper = "Oren et al. 2024, Transformers are Multi-State RNNs"
    url = "https://arxiv.org/abs/2401.06104"

    def score(self, ctx: LayerContext) -> torch.Tensor:
        if ctx.key_mass is not None and ctx.query.shape[2] == 1:  # a decoding step already has them
            layer_mean = ctx.key_mass.sum(dim=1) / ctx.query.shape[1]  # (B, L)
        else:
            probs = ctx.last_queries_probs(1)  # (B, Hkv, group, 1, L)
            layer_mean = probs.mean(dim=(1, 2, 3))  # (B, L)
        return layer_mean.unsqueeze(1).expand(-1, ctx.keys.shape[1], -1)

    def protected(self, ctx: LayerContext) -> torch.Tensor:
        return ctx.positions == ctx.newest

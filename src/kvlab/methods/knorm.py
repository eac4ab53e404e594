"""KNorm: keep the keys with the smallest L2 norm."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kvlab.methods import register_method
from kvlab.methods.base import LayerContext, Method


@register_method
@dataclass(frozen=True)
class KNorm(Method):
    """A Simple and Effective L2 Norm-Based Strategy for KV Cache Compression (Devoto et al., EMNLP 2024).

    https://arxiv.org/abs/2406.11430 -- keys with a low L2 norm tend to receive high attention, so
    the score of a token is minus the norm of its key, per KV head. Needs no attention weights, so it
    works with any attention kernel. kvlab compresses every layer, as kvpress does; the paper's
    repository can leave the first layer(s) uncompressed. Kept sets equal kvpress's KnormPress on the
    same inputs (docs/reference-check.md).
    """

    name = "knorm"
    family = "eviction (key statistics)"
    phase = "prefill"
    paper = "Devoto et al. 2024, A Simple and Effective L2 Norm-Based Strategy for KV Cache Compression"
    url = "https://arxiv.org/abs/2406.11430"

    def score(self, ctx: LayerContext) -> torch.Tensor:
        return -ctx.keys.float().norm(dim=-1)

"""H2O: heavy hitters (accumulated attention) plus recent tokens, evicting while decoding."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kvlab.errors import KvlabError
from kvlab.methods import register_method
from kvlab.methods.base import LayerContext, Method


@register_method
@dataclass(frozen=True)
class H2O(Method):
    """H2O: Heavy-Hitter Oracle for Efficient Generative Inference of LLMs (Zhang et al., NeurIPS 2023).

    https://arxiv.org/abs/2306.14048 -- a few "heavy hitter" tokens receive most of the attention.
    Every token's attention received is accumulated over all queries that saw it (prompt and
    generated tokens); the cache keeps the ``heavy_ratio`` share of the budget with the largest
    accumulated score plus the most recent tokens for the rest, and evicts one token per decoding
    step to stay at the budget. Paper default: equal heavy and recent shares (``heavy_ratio=0.5``).

    The accumulated score is per KV head (summed over the query heads of its group). The prompt's
    attention mass is computed block by block over queries, never as an n x n matrix, which costs
    about one extra attention pass during prefill.
    """

    name = "h2o"
    family = "eviction (accumulated attention)"
    phase = "prefill+decode"
    needs_attention_weights = True
    paper = "Zhang et al. 2023, H2O: Heavy-Hitter Oracle for Efficient Generative Inference of LLMs"
    url = "https://arxiv.org/abs/2306.14048"

    heavy_ratio: float = 0.5

    def __post_init__(self):
        if not 0.0 <= self.heavy_ratio <= 1.0:
            raise KvlabError(f"h2o: heavy_ratio must be in [0, 1], not {self.heavy_ratio}")

    def observe(self, ctx: LayerContext) -> None:
        if ctx.key_mass is not None:
            ctx.extra("h2o_acc").add_(ctx.key_mass)

    def score(self, ctx: LayerContext) -> torch.Tensor:
        return ctx.extra("h2o_acc")

    def protected(self, ctx: LayerContext) -> torch.Tensor:
        heavy = ctx.capacity * self.heavy_ratio
        heavy = heavy.long() if isinstance(heavy, torch.Tensor) else int(heavy)  # a device tensor while static
        recent = ctx.capacity - heavy
        return ctx.positions > ctx.newest - recent

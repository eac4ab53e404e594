"""StreamingLLM: attention sinks plus a window of recent tokens."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kvlab.methods import register_method
from kvlab.methods.base import LayerContext, Method


@register_method
@dataclass(frozen=True)
class StreamingLLM(Method):
    """Efficient Streaming Language Models with Attention Sinks (Xiao et al., ICLR 2024).

    https://arxiv.org/abs/2309.17453 -- keep the first ``n_sink`` tokens (the "attention sinks" that
    absorb attention mass) and the most recent ones; evict everything in between, both while the
    prompt is prefilled and at every decoding step, so the cache stays at the budget.

    Paper default: 4 sink tokens. Simplification: kept tokens keep the RoPE of their original
    positions; the paper re-numbers positions inside the cache, which only matters to run past the
    model's trained window (kvlab refuses such prompts for methods that do not extend the context).
    """

    name = "streaming_llm"
    family = "eviction (static pattern)"
    phase = "prefill+decode"
    paper = "Xiao et al. 2024, Efficient Streaming Language Models with Attention Sinks"
    url = "https://arxiv.org/abs/2309.17453"

    n_sink: int = 4

    def score(self, ctx: LayerContext) -> torch.Tensor:
        return ctx.positions.float()  # more recent = higher

    def protected(self, ctx: LayerContext) -> torch.Tensor:
        return (ctx.positions >= 0) & (ctx.positions < self.n_sink)

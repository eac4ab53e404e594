"""SnapKV: attention of an observation window of the last queries, pooled, per KV head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kvlab.errors import KvlabError
from kvlab.methods import register_method
from kvlab.methods.base import LayerContext, Method


@register_method
@dataclass(frozen=True)
class SnapKV(Method):
    """SnapKV: LLM Knows What You are Looking for Before Generation (Li et al., NeurIPS 2024).

    https://arxiv.org/abs/2404.14469 -- the last ``window_size`` queries of the prompt (the
    "observation window", which holds the question when it comes last) vote for the prefix tokens
    they attend to; the votes (attention summed over the window) are smoothed with a 1-D pooling of
    ``kernel_size`` so neighbouring tokens stay together, and each KV head keeps its top-scored
    tokens plus the window itself. The budget includes the window, as in the paper's
    ``max_capacity_prompt``.

    Defaults are the reference implementation's (window 32, kernel 5, average pooling). With GQA,
    the scores of the query heads of a group are averaged (as kvpress does). With chunked prefill the
    window is the last ``window_size`` queries of each chunk -- the standard approximation when a
    prompt is compressed between chunks.
    """

    name = "snapkv"
    family = "eviction (attention score)"
    phase = "prefill"
    query_aware = True
    paper = "Li et al. 2024, SnapKV: LLM Knows What You are Looking for Before Generation"
    url = "https://arxiv.org/abs/2404.14469"

    window_size: int = 32
    kernel_size: int = 5
    pooling: str = "avgpool"

    def __post_init__(self):
        if self.window_size < 1 or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise KvlabError(f"{self.name}: window_size must be >= 1 and kernel_size a positive odd number")
        if self.pooling not in ("avgpool", "maxpool"):
            raise KvlabError(f"{self.name}: pooling must be 'avgpool' or 'maxpool', not '{self.pooling}'")

    def window(self, ctx: LayerContext) -> int:
        return min(self.window_size, ctx.query.shape[2])

    def score(self, ctx: LayerContext) -> torch.Tensor:
        window = self.window(ctx)
        probs = ctx.last_queries_probs(window)  # (B, Hkv, group, w, L)
        votes = probs.sum(dim=3).mean(dim=2)  # sum over the window, mean over the group -> (B, Hkv, L)
        votes = votes.masked_fill(self.protected(ctx), 0.0)  # the paper pools the prefix only
        b, h, n = votes.shape
        flat = votes.reshape(b * h, 1, n)
        pad = self.kernel_size // 2
        if self.pooling == "avgpool":
            pooled = F.avg_pool1d(flat, self.kernel_size, stride=1, padding=pad)
        else:
            pooled = F.max_pool1d(flat, self.kernel_size, stride=1, padding=pad)
        return pooled.view(b, h, n)

    def protected(self, ctx: LayerContext) -> torch.Tensor:
        """The observation window: the last ``window`` positions of this forward."""
        return ctx.positions > ctx.newest - self.window(ctx)

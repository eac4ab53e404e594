"""Ada-KV: adaptive head-wise budget allocation around any scorer."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from kvlab.errors import KvlabError
from kvlab.methods import register_method
from kvlab.methods.base import LayerContext, Method, mask_to_index
from kvlab.methods.snapkv import SnapKV
from kvlab.models.spec import ModelSpec


@register_method
@dataclass(frozen=True)
class AdaKV(Method):
    """Ada-KV: Optimizing KV Cache Eviction by Adaptive Budget Allocation (Feng et al., 2024).

    https://arxiv.org/abs/2407.11550 -- instead of the same budget for every head, a layer's total
    budget (``kv_heads x budget``) goes to the top-scored tokens across all its heads, so heads whose
    attention is concentrated give budget to heads whose attention is spread. A safeguard first
    gives each head its own top ``alpha_safeguard x budget`` tokens. Wraps a scorer (SnapKV by
    default, as in the paper's main results). This is kvpress's AdaKVPress rule (kept sets equal
    on the same inputs); the paper's repository blends the adaptive and uniform shares instead
    (``c_h (1 - alpha) + alpha (B - w)`` per head), which keeps 99% of the same tokens
    (mean Jaccard 0.99 in docs/reference-check.md) but not exactly the budget.

    Storage: heads keep different numbers of tokens; kvlab stores them padded to the longest head
    (empty slots are masked out of attention), so the bytes held can exceed ``kv_heads x budget``
    and are reported as held. The paper's flattened varlen layout avoids that padding.
    """

    name = "adakv"
    family = "eviction (head-wise allocation)"
    phase = "prefill"
    query_aware = True
    paper = "Feng et al. 2024, Ada-KV: Optimizing KV Cache Eviction by Adaptive Budget Allocation"
    url = "https://arxiv.org/abs/2407.11550"

    scorer: Method = field(default_factory=SnapKV)
    alpha_safeguard: float = 0.2

    def __post_init__(self):
        if not 0.0 <= self.alpha_safeguard <= 1.0:
            raise KvlabError(f"adakv: alpha_safeguard must be in [0, 1], not {self.alpha_safeguard}")
        if self.scorer.evicts_during_decode or not self.scorer.compresses:
            raise KvlabError(f"adakv wraps a prefill scorer (e.g. snapkv, knorm), not '{self.scorer.name}'")

    def layer_capacities(self, kept: int, spec: ModelSpec, prompt_tokens: int | None = None) -> list[int]:
        return self.scorer.layer_capacities(kept, spec, prompt_tokens)

    def score(self, ctx: LayerContext) -> torch.Tensor:
        return self.scorer.score(ctx)

    def protected(self, ctx: LayerContext) -> torch.Tensor | None:
        return self.scorer.protected(ctx)

    def select(self, ctx: LayerContext, capacity: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        scores = self.score(ctx).float()
        b, h, n = scores.shape
        valid = ctx.valid
        protected = self.protected(ctx)
        if protected is not None:
            scores = scores.masked_fill(protected & valid, float("inf"))
        scores = scores.masked_fill(~valid, float("-inf"))
        safe = min(int(capacity * self.alpha_safeguard), n)
        if safe > 0:  # each head's own top tokens are guaranteed
            top = scores.topk(safe, dim=-1).indices
            picked = scores.gather(-1, top)
            guaranteed = torch.where(picked > float("-inf"), torch.finfo(torch.float32).max, picked)
            scores = scores.scatter(-1, top, torch.maximum(picked, guaranteed))
        total = min(h * capacity, int(valid.sum(dim=(1, 2)).min()))
        chosen = scores.view(b, h * n).topk(total, dim=-1).indices
        keep = torch.zeros(b, h * n, dtype=torch.bool, device=scores.device)
        keep.scatter_(1, chosen, True)
        return mask_to_index(keep.view(b, h, n) & valid)


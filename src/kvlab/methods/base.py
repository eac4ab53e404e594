"""The Method base class and the context a method sees.

A method is a frozen dataclass whose fields are its paper's hyperparameters (with the paper's
defaults) and whose class flags tell the engine what to do:

* ``kind``: ``"baseline"``, ``"eviction"`` (keeps a subset of the KV), ``"sparse_prefill"`` (approximate
  prefill attention, full cache) ...: what the method changes, so tests and reports can group them.
* ``phase``: ``"none"`` (never evicts), ``"prefill"`` (compresses the prompt, to budget after every
  prefill chunk; generated tokens are then appended) or ``"prefill+decode"`` (also evicts while
  decoding, so the cache stays at the budget every step).
* ``query_aware``: what it keeps depends on the prompt's final queries (a question placed last).
* ``needs_attention_weights``: it needs the attention mass every held key received from every
  query of a forward (H2O); the attention function then computes it block by block.
* ``decode_key_mass``: it reads ``ctx.key_mass`` at decoding steps when it is there (TOVA); a static
  decoding step then computes it (otherwise it skips that pass, and may use a kernel without it).

Hooks (all optional except ``score`` for scorer-based eviction):

* ``layer_capacities(kept, spec)``: per-layer budgets (PyramidKV); default ``kept`` everywhere.
* ``observe(ctx)``: update per-token statistics after every attention call.
* ``score(ctx) -> (B, Hkv, L)``: higher = keep.
* ``protected(ctx) -> (B, Hkv, L) bool``: slots kept regardless of score (sinks, recent window).
* ``select(ctx, capacity)``: which slots to keep; default top-``capacity`` per KV head.
* ``prefill_pattern(ctx)``: a sparse attention pattern for the prompt's queries (sparse-prefill
  methods such as A-shape, LM-Infinite, MInference); None = dense. ``ctx.key_mass`` is None and
  nothing has been evicted yet when it is called.

Methods hold no per-request state: statistics live in the cache (``ctx.extra(name)``), so one
method instance serves concurrent requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from kvlab.attention import window_attention_probs
from kvlab.models.spec import ModelSpec


@dataclass
class LayerContext:
    """What a method sees for one layer, right after that layer's attention ran.

    Attributes:
        layer_idx: index of the decoder layer.
        spec: the model's spec.
        query: ``(B, Hq, q, D)`` the queries of this forward (RoPE applied).
        query_pos: ``(q,)`` their absolute positions.
        keys, values: ``(B, Hkv, L, D)`` every held slot, this forward's tokens last.
        positions: ``(B, Hkv, L)`` absolute position of each slot, ``-1`` = empty.
        scaling: the attention scale of this layer.
        window: the layer's sliding window, or None.
        phase: ``"context"`` while the prompt is prefilled, ``"append"`` afterwards (question,
            generated tokens).
        capacity: slots this layer keeps after the current eviction (per KV head); in static
            decoding (no host syncs) a ``(1,)`` int64 device tensor.
        key_mass: ``(B, Hkv, L)`` attention mass each slot received in this forward (summed over
            queries and the heads of its group); only for methods with ``needs_attention_weights``
            (and, at static decoding steps, ``decode_key_mass``).
    """

    layer_idx: int
    spec: ModelSpec
    query: torch.Tensor
    query_pos: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    positions: torch.Tensor
    scaling: float
    window: int | None
    phase: str
    layer: Any
    capacity: int | torch.Tensor = 0
    key_mass: torch.Tensor | None = None

    @property
    def valid(self) -> torch.Tensor:
        return self.positions >= 0

    @property
    def newest(self) -> torch.Tensor:
        """Absolute position of the most recent token (a 0-dim tensor: no host sync)."""
        return self.query_pos[-1]

    def extra(self, name: str) -> torch.Tensor:
        """A per-slot statistic ``(B, Hkv, L)`` float32 kept in the cache (zeros for new slots)."""
        return self.layer.extra(name)

    def last_queries_probs(self, n: int) -> torch.Tensor:
        """Attention probabilities of the last ``n`` queries: float32 ``(B, Hkv, group, n, L)``."""
        n = min(n, self.query.shape[2])
        return window_attention_probs(
            self.query[:, :, -n:], self.keys, self.positions, self.query_pos[-n:], self.scaling, self.window
        )


@dataclass(frozen=True)
class Method:
    """Base class of all methods; see the module docstring."""

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    kind: ClassVar[str] = "eviction"
    phase: ClassVar[str] = "prefill"
    query_aware: ClassVar[bool] = False
    needs_attention_weights: ClassVar[bool] = False
    decode_key_mass: ClassVar[bool] = False
    paper: ClassVar[str] = ""
    url: ClassVar[str] = ""

    @property
    def compresses(self) -> bool:
        return self.phase != "none"

    @property
    def evicts_during_decode(self) -> bool:
        return self.phase == "prefill+decode"

    def layer_capacities(self, kept: int, spec: ModelSpec, prompt_tokens: int | None = None) -> list[int]:
        """Tokens each layer keeps (per KV head) when the budget resolves to ``kept`` per layer."""
        return [kept] * spec.num_layers

    def observe(self, ctx: LayerContext) -> None:
        """Update per-token statistics (called after every attention call)."""

    def prefill_pattern(self, ctx: LayerContext) -> Any | None:
        """A sparse pattern for this forward's queries while the prompt is prefilled, or None (dense).

        The object must have ``attend(query, key, value, key_pos, query_pos, scaling, window)``
        returning ``(B, Hq, q, D)``; kvlab calls it instead of dense attention.
        """
        return None

    def score(self, ctx: LayerContext) -> torch.Tensor:
        """``(B, Hkv, L)`` importance of each held slot; higher is kept."""
        raise NotImplementedError(f"{type(self).__name__} must implement score()")

    def protected(self, ctx: LayerContext) -> torch.Tensor | None:
        """``(B, Hkv, L)`` bool: slots kept whatever their score, or None."""
        return None

    def select(self, ctx: LayerContext, capacity: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Slots to keep: ``(index (B, Hkv, k) sorted by slot, valid (B, Hkv, k) or None)``.

        Default: per KV head, the ``capacity`` top-scored slots, protected slots first.
        """
        scores = self.score(ctx).float()
        protected = self.protected(ctx)
        if protected is not None:
            scores = scores.masked_fill(protected, float("inf"))
        scores = scores.masked_fill(~ctx.valid, float("-inf"))
        k = min(capacity, scores.shape[-1])
        index = scores.topk(k, dim=-1).indices.sort(dim=-1).values
        valid = ctx.positions.gather(-1, index) >= 0
        return index, valid

    def describe(self) -> str:
        """``name`` plus any hyperparameter that differs from the paper's default."""
        from dataclasses import fields

        changed = [
            f"{f.name}={getattr(self, f.name)}"
            for f in fields(self)
            if f.default is not getattr(self, f.name) and f.default != getattr(self, f.name)
        ]
        return self.name + (f"({', '.join(changed)})" if changed else "")


def group_mean(scores: torch.Tensor, num_kv_heads: int) -> torch.Tensor:
    """Average per-query-head scores ``(B, Hq, L)`` over each KV head's group -> ``(B, Hkv, L)``."""
    b, hq, n = scores.shape
    return scores.view(b, num_kv_heads, hq // num_kv_heads, n).mean(dim=2)


def mask_to_index(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per head, the slots where ``keep`` ``(B, H, L)`` is True, in slot order, padded to the longest head.

    Returns ``(index (B, H, K), valid (B, H, K))`` with K the largest per-head count.
    """
    n = keep.shape[-1]
    slots = torch.arange(n, device=keep.device)
    order = torch.where(keep, slots, slots + n).sort(dim=-1).values  # kept slots first, in order
    k = int(keep.sum(dim=-1).max())
    index = order[..., :k] % n
    return index, keep.gather(-1, index)

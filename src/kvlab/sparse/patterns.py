"""Sparse attention patterns over absolute token positions.

A pattern says which (query position ``qp``, key position ``kp``) pairs may attend, on top of the
rules every attention obeys (causality ``kp <= qp``, the layer's sliding window, empty slots),
which the kernels apply themselves. Patterns are written on *absolute* positions, never on tensor
indices, so a prompt prefilled in chunks (older tokens already in the cache) sees the same pattern
as one prefilled in one pass.

Three views of the same set, each used by one implementation:

* :meth:`Pattern.member` -- exact membership, elementwise on broadcastable tensors ``(b, h, qp,
  kp)``: the dense reference, the blocked kernel's mask and flex_attention's ``mask_mod``.
* :meth:`Pattern.needed` -- the key slots some query with a position in ``[lo, hi]`` may use (a
  superset is fine): what the blocked kernel gathers for one block of queries.
* :meth:`Pattern.block_need` -- for blocks of ``size`` absolute positions, which (query block, key
  block) pairs hold any member (a superset is fine): flex_attention's block lists.
* :meth:`Pattern.block_full` -- which block pairs hold *only* members (a subset is fine):
  flex_attention's full blocks, computed without evaluating the ``mask_mod``.

``heads`` is the number of pattern heads: None when every head shares the pattern, else the number
of *query* heads (per-head patterns such as MInference's vertical-slash).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class Pattern:
    """Base class; see the module docstring. Subclasses are small immutable values."""

    heads: int | None = None

    def member(self, b: torch.Tensor, h: torch.Tensor, qp: torch.Tensor, kp: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def needed(self, key_pos: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """``key_pos (B, H, L)`` -> bool ``(B, H, L)``: slots a query in ``[lo, hi]`` may attend."""
        raise NotImplementedError

    def block_need(self, q_blocks: torch.Tensor, k_blocks: torch.Tensor, size: int) -> torch.Tensor:
        """``q_blocks (nQ,)``, ``k_blocks (nK,)`` absolute block numbers -> bool ``(H or 1, nQ, nK)``."""
        raise NotImplementedError

    def block_full(self, q_blocks: torch.Tensor, k_blocks: torch.Tensor, size: int) -> torch.Tensor | None:
        """Like :meth:`block_need`, but the pairs whose every element is a member; None = none known."""
        return None

    #: the query block the blocked kernel prefers (VerticalSlash: its own block, so ``needed`` is exact)
    kernel_block: int | None = None

    def exact_within(self, lo: int, hi: int) -> bool:
        """Whether ``needed(key_pos, lo, hi)`` is exactly the member set of every query in ``[lo, hi]``
        (causality and the window aside); the blocked kernel then skips the per-query test."""
        return False

    def logit_bias(self, query, query_pos, keys, key_pos, scaling):
        """Hook for patterns that change some logits (LM-Infinite's distance limit): ``(index (B, H, g),
        bias (B, H, G, q, g))`` to add to the columns ``index`` of the gathered keys, or None."""
        return None


@dataclass(frozen=True)
class SinkWindow(Pattern):
    """The A-shape / Λ-shape: the first ``n_init`` positions plus the ``n_local`` most recent ones.

    ``member = kp < n_init  or  qp - kp < n_local`` (a query always sees itself when ``n_local >= 1``).
    """

    n_init: int
    n_local: int

    def member(self, b, h, qp, kp):
        return (kp < self.n_init) | (qp - kp < self.n_local)

    def needed(self, key_pos, lo, hi):
        return (key_pos < self.n_init) | (key_pos > lo - self.n_local)

    def block_need(self, q_blocks, k_blocks, size):
        qb, kb = q_blocks.view(-1, 1), k_blocks.view(1, -1)
        sink = kb * size < self.n_init
        # the closest pair of a query block and an earlier key block is (qb*size, kb*size + size - 1)
        local = (qb - kb) * size - (size - 1) < self.n_local
        return (sink | local).unsqueeze(0)

    def block_full(self, q_blocks, k_blocks, size):
        qb, kb = q_blocks.view(-1, 1), k_blocks.view(1, -1)
        sink = kb * size + size <= self.n_init  # every key of the block is a sink
        # the farthest pair (qb*size + size - 1, kb*size) is within the window
        local = (qb - kb) * size + (size - 1) < self.n_local
        return (sink | local).unsqueeze(0)

    def covers(self, span: int) -> bool:
        """Whether every pair at a distance below ``span`` is a member (the pattern is then dense)."""
        return span <= self.n_local


def range_any(table: torch.Tensor, first: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """Whether ``table[b, h, i]`` is True for some ``i`` in ``[first, last]`` (clipped to the table).

    ``table (B, H, n)`` bool; ``first``/``last`` integer tensors of shape ``(B, H, *rest)`` (or
    broadcastable to it). Returns bool ``(B, H, *rest)``. A prefix sum makes every range O(1).
    """
    bsz, heads, n = table.shape
    prefix = torch.nn.functional.pad(table.to(torch.int32).cumsum(-1), (1, 0))  # prefix[i] = sum(table[:i])
    lead = (bsz, heads) + (1,) * (max(first.dim(), last.dim()) - 2)
    shape = torch.broadcast_shapes(first.shape, last.shape, lead)
    lo = first.clamp(0, n).expand(shape).reshape(bsz, heads, -1)
    hi = (last + 1).clamp(0, n).expand(shape).reshape(bsz, heads, -1)
    hi = torch.maximum(hi, lo)
    return (prefix.gather(-1, hi) > prefix.gather(-1, lo)).view(shape)


def range_all(table: torch.Tensor, first: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """Whether ``table[b, h, i]`` is True for every ``i`` in ``[first, last]``; False where the range
    leaves the table or is empty. Shapes as in :func:`range_any`."""
    n = table.shape[-1]
    inside = (first >= 0) & (last < n) & (first <= last)
    return inside & ~range_any(~table, first, last)


def compact(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the indices where ``keep (..., L)`` is True, in order, padded to the longest row.

    Returns ``(index (..., K), valid (..., K))`` with K the largest count (at least 1).
    """
    n = keep.shape[-1]
    slots = torch.arange(n, device=keep.device)
    order = torch.where(keep, slots, slots + n).sort(dim=-1).values
    k = max(1, int(keep.sum(dim=-1).max())) if keep.numel() else 1
    index = order[..., :k] % n
    return index, keep.gather(-1, index)

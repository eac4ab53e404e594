"""MInference's vertical-slash pattern, estimated per head from the last queries (Jiang et al. 2024).

Algorithm 2 of MInference (https://arxiv.org/abs/2407.02490), for each query head:

1. ``A = softmax(Q[-last_q:] K^T * scale + causal)`` -- the attention of the last ``last_q`` queries;
2. vertical lines: the ``vertical_size`` keys with the largest column sums of ``A`` (the first
   ``sink_tokens`` keys always, as in MInference's kernel: ``vertical[..., :30] = inf``);
3. slash lines: the ``slash_size`` diagonals (offsets ``qp - kp``) with the largest sums of ``A``
   along them (the ``local_diagonals`` most recent offsets always: ``slash[..., -100:] = inf``);
4. every query attends its head's vertical keys and the keys on its head's slash lines.

Block alignment: MInference's kernel computes slash lines in 64-key blocks, not one diagonal at a
time. Here a slash line at offset ``o`` is widened to the block diagonals it crosses on a fixed
grid of ``block`` absolute positions -- ``d = o // block`` and ``ceil(o / block)`` with ``d = qp //
block - kp // block`` -- so a block-sparse kernel (flex_attention) computes it whole and skips every
other block; vertical keys stay exact single columns. The pattern is therefore a superset of the
paper's lines (as MInference's kernel computes too). Offsets and columns are absolute positions,
so with chunked prefill each chunk estimates its own pattern from its own last queries over all
keys held.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kvlab.attention import window_attention_probs
from kvlab.sparse.patterns import Pattern, range_all, range_any


@dataclass(frozen=True, eq=False)
class VerticalSlash(Pattern):
    """Per-head vertical columns and block diagonals.

    Attributes:
        vertical: bool ``(B, Hq, P)``: ``vertical[b, h, kp]`` -- key position ``kp`` is a vertical line.
        diagonals: bool ``(B, Hq, nD)``: ``diagonals[b, h, d]`` -- block diagonal ``d`` is kept.
        block: the block grid (absolute positions) the diagonals are aligned to.
        heads: the number of query heads (the pattern is per query head).
    """

    vertical: torch.Tensor
    diagonals: torch.Tensor
    block: int
    heads: int

    @property
    def kernel_block(self) -> int:
        return self.block

    def exact_within(self, lo: int, hi: int) -> bool:
        return lo // self.block == hi // self.block  # one query block: membership depends on the key only

    def vertical_member(self, b, h, kp):
        p = self.vertical.shape[-1]
        return self.vertical[b, h, kp.clamp(0, p - 1)] & (kp >= 0) & (kp < p)

    def slash_member(self, b, h, qp, kp):
        d = torch.div(qp, self.block, rounding_mode="floor") - torch.div(kp, self.block, rounding_mode="floor")
        n = self.diagonals.shape[-1]
        return self.diagonals[b, h, d.clamp(0, n - 1)] & (d >= 0) & (d < n)

    def member(self, b, h, qp, kp):
        return self.vertical_member(b, h, kp) | self.slash_member(b, h, qp, kp)

    def needed(self, key_pos, lo, hi):
        bsz, heads = key_pos.shape[:2]
        b = torch.arange(bsz, device=key_pos.device).view(-1, 1, 1)
        h = torch.arange(heads, device=key_pos.device).view(1, -1, 1)
        kb = torch.div(key_pos, self.block, rounding_mode="floor")
        slash = range_any(self.diagonals, lo // self.block - kb, hi // self.block - kb)
        return self.vertical_member(b, h, key_pos) | slash

    def block_need(self, q_blocks, k_blocks, size):
        """Block lists of the *slash* part (flex computes the vertical columns separately)."""
        return range_any(self.diagonals, *self._diagonals_crossed(q_blocks, k_blocks, size))

    def block_full(self, q_blocks, k_blocks, size):
        """Blocks every pair of which lies on a kept block diagonal (of the slash part)."""
        return range_all(self.diagonals, *self._diagonals_crossed(q_blocks, k_blocks, size))

    def _diagonals_crossed(self, q_blocks, k_blocks, size):
        """``(first, last)`` ``(1, 1, nQ, nK)``: the pattern's block diagonals a ``size`` block pair spans."""
        assert size % self.block == 0, "flex blocks must be a multiple of the pattern's block"
        r = size // self.block
        t = (q_blocks.view(-1, 1) - k_blocks.view(1, -1)).view(1, 1, len(q_blocks), len(k_blocks))
        return r * t - (r - 1), r * t + (r - 1)

    def density(self) -> float:
        """Share of the pattern's block diagonals kept (a rough sparsity figure for logs)."""
        return float(self.diagonals.float().mean())


def estimate(
    query: torch.Tensor,
    key: torch.Tensor,
    key_pos: torch.Tensor,
    query_pos: torch.Tensor,
    scaling: float,
    window: int | None,
    *,
    last_q: int = 64,
    vertical_size: int = 1000,
    slash_size: int = 6096,
    block: int = 64,
    sink_tokens: int = 30,
    local_diagonals: int = 100,
) -> VerticalSlash:
    """Estimate each query head's vertical-slash pattern from the last ``last_q`` queries.

    Shapes as in :mod:`kvlab.attention`: ``query (B, Hq, q, D)``, ``key (B, Hkv, L, D)``,
    ``key_pos (B, Hkv, L)`` (-1 = empty), ``query_pos (q,)``. Costs one ``last_q x L`` score matrix
    per head (what SnapKV-style scorers cost).
    """
    bsz, hq, q_len, _ = query.shape
    hkv, length = key.shape[1], key.shape[2]
    w = min(last_q, q_len)
    probs = window_attention_probs(query[:, :, -w:], key, key_pos, query_pos[-w:], scaling, window)
    probs = probs.reshape(bsz, hq, w, length)  # (B, Hq, w, L): heads of a group are consecutive
    kp = key_pos.repeat_interleave(hq // hkv, dim=1)  # (B, Hq, L)
    valid = kp >= 0
    span = int(key_pos.max()) + 1  # positions 0..span-1 may hold keys
    device = query.device

    # vertical lines: column sums, the first sink_tokens positions forced in
    col = probs.sum(dim=2)
    col = col.masked_fill(valid & (kp < sink_tokens), float("inf")).masked_fill(~valid, float("-inf"))
    k = min(max(vertical_size, sink_tokens, 1), length)  # the forced lines count in
    top = col.topk(k, dim=-1)
    chosen = top.values > float("-inf")
    hits = torch.zeros(bsz, hq, span, dtype=torch.int32, device=device)
    hits.scatter_add_(-1, kp.gather(-1, top.indices).clamp(min=0), chosen.to(torch.int32))
    vertical = hits > 0

    # slash lines: sums along offsets qp - kp, the local_diagonals most recent offsets forced in
    qp = query_pos[-w:].view(1, 1, w, 1)
    offset = qp - kp.unsqueeze(2)  # (B, Hq, w, L)
    live = valid.unsqueeze(2) & (offset >= 0)
    n_off = int(query_pos[-1]) + 1  # offsets 0..newest position
    diag = torch.zeros(bsz, hq, n_off, dtype=torch.float32, device=device)
    diag.scatter_add_(-1, offset.clamp(0, n_off - 1).flatten(2), probs.masked_fill(~live, 0).flatten(2))
    offsets = torch.arange(n_off, device=device)
    diag = diag.masked_fill(offsets < local_diagonals, float("inf"))
    possible = torch.zeros(bsz, hq, n_off, dtype=torch.int32, device=device)  # offsets that occur
    possible.scatter_add_(-1, offset.clamp(0, n_off - 1).flatten(2), live.flatten(2).to(torch.int32))
    possible = possible > 0
    diag = diag.masked_fill(~possible, float("-inf"))
    s = min(max(slash_size, local_diagonals, 1), n_off)
    top = diag.topk(s, dim=-1)
    chosen = top.values > float("-inf")
    n_diag = n_off // block + 2
    hits = torch.zeros(bsz, hq, n_diag, dtype=torch.int32, device=device)
    for edge in (top.indices, top.indices + block - 1):  # the two block diagonals a line crosses
        hits.scatter_add_(-1, torch.div(edge, block, rounding_mode="floor"), chosen.to(torch.int32))
    diagonals = hits > 0
    return VerticalSlash(vertical=vertical, diagonals=diagonals, block=block, heads=hq)

"""The plain-torch sparse kernel: query blocks against the gathered keys their pattern needs.

Used on CPU and wherever flex_attention is not available, and as the reference the flex path is
tested against. For each block of queries (aligned to absolute positions) it gathers only the key
slots the pattern may use (:meth:`Pattern.needed`), so the work is proportional to the pattern's
size, not to ``q x L``; inside a block the mask is exact (:meth:`Pattern.member`, causality, the
sliding window, empty slots). Scores are computed in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kvlab.sparse.patterns import Pattern, compact

DEFAULT_BLOCK = 128


def blocked_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_pos: torch.Tensor,
    query_pos: torch.Tensor,
    scaling: float,
    window: int | None,
    pattern: Pattern,
    softcap: float | None = None,
    block: int | None = None,
    want_lse: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Exact attention restricted to ``pattern``.

    Args follow :mod:`kvlab.attention`: ``query (B, Hq, q, D)``, ``key``/``value (B, Hkv, L, D)``
    with this forward's ``q`` tokens in the last slots, ``key_pos (B, Hkv, L)`` (-1 = empty),
    ``query_pos (q,)`` increasing. Returns ``(out (B, Hq, q, Dv), lse (B, Hq, q) float32)`` where
    ``lse`` is the log-sum-exp of the kept (scaled) logits, ``-inf`` for a query that keeps none
    (its output is 0). With ``want_lse=False`` (and a pattern that keeps the model's logits) each
    block runs through torch's fused SDPA with a boolean mask, and ``lse`` is None.
    """
    bsz, hq, q_len, d = query.shape
    hkv, length = key.shape[1], key.shape[2]
    block = block or pattern.kernel_block or DEFAULT_BLOCK
    heads = pattern.heads or hkv
    group = hq // heads
    device = query.device
    if pattern.heads:  # per query head: gather keys for each query head from its KV head
        kpos = key_pos.repeat_interleave(hq // hkv, dim=1)
        kv_head = torch.arange(hq, device=device) // (hq // hkv)
    else:
        kpos = key_pos
        kv_head = torch.arange(hkv, device=device)
    # one contiguous (B*H*L, D) copy per call, so each block gathers rows with a fast index_select
    key_rows = key[:, kv_head].reshape(-1, d)
    value_rows = value[:, kv_head].reshape(-1, value.shape[-1])
    row_base = (torch.arange(bsz * heads, device=device) * length).view(bsz, heads, 1)
    b_idx = torch.arange(bsz, device=device).view(-1, 1, 1, 1, 1)
    h_idx = torch.arange(heads, device=device).view(1, -1, 1, 1, 1)
    qg = query.view(bsz, heads, group, q_len, d)
    out = torch.empty(bsz, hq, q_len, value.shape[-1], dtype=query.dtype, device=device)
    fused = not want_lse and softcap is None
    lse = None if fused else torch.empty(bsz, hq, q_len, dtype=torch.float32, device=device)
    older = length - q_len
    positions = query_pos.tolist()
    for s, e in _blocks(positions, block):
        lo, hi = positions[s], positions[e - 1]
        kp = kpos[..., : older + e]  # later slots hold later queries
        need = pattern.needed(kp, lo, hi) & (kp >= 0) & (kp <= hi)
        if window is not None:
            need &= kp > lo - window
        index, valid = compact(need)  # (B, H, K)
        kp_g = kp.gather(-1, index).masked_fill(~valid, -1)
        rows = (row_base + index).view(-1)
        k_g = key_rows.index_select(0, rows).view(bsz, heads, -1, d)  # (B, H, K, D)
        v_g = value_rows.index_select(0, rows).view(bsz, heads, k_g.shape[2], -1)
        qb = qg[:, :, :, s:e]
        qp = query_pos[s:e].view(1, 1, 1, -1, 1)
        kpb = kp_g.view(bsz, heads, 1, 1, -1)
        ok = (kpb >= 0) & (kpb <= qp)
        if not pattern.exact_within(lo, hi):
            ok &= pattern.member(b_idx, h_idx, qp, kpb)
        if window is not None:
            ok &= qp - kpb < window
        n = e - s
        bias = pattern.logit_bias(qb, query_pos[s:e], k_g, kp_g, scaling)
        if bias is not None:  # (index, values): add to the logits of a few columns
            cols = bias[0].view(bsz, heads, 1, 1, -1).expand(bsz, heads, group, n, -1)
        if fused:
            if bias is None:
                mask = ok.expand(bsz, heads, group, n, ok.shape[-1])
            else:
                mask = torch.zeros(ok.shape, dtype=query.dtype, device=device).masked_fill_(~ok, float("-inf"))
                mask = mask.expand(bsz, heads, group, n, ok.shape[-1]).clone()
                mask.scatter_add_(-1, cols, bias[1].to(mask.dtype))
            res = F.scaled_dot_product_attention(qb.reshape(bsz, heads, group * n, d), k_g, v_g,
                                                 attn_mask=mask.reshape(bsz, heads, group * n, -1), scale=scaling)
            out[:, :, s:e] = torch.nan_to_num(res.view(bsz, hq, n, -1), nan=0.0)
            continue
        scores = torch.matmul(qb.float(), k_g.float().unsqueeze(2).transpose(-1, -2)).mul_(scaling)
        if bias is not None:
            scores.scatter_add_(-1, cols, bias[1])
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        scores = scores.masked_fill_(~ok, float("-inf"))
        block_lse = torch.logsumexp(scores, dim=-1)  # (B, H, G, n)
        probs = torch.exp_(scores.sub_(block_lse.unsqueeze(-1))).nan_to_num_(nan=0.0)
        res = torch.matmul(probs, v_g.float().unsqueeze(2))
        out[:, :, s:e] = res.view(bsz, hq, n, -1).to(out.dtype)
        lse[:, :, s:e] = block_lse.view(bsz, hq, n)
    return out, lse


def _blocks(positions: list[int], block: int) -> list[tuple[int, int]]:
    """Index ranges of the queries, cut where the absolute position crosses a multiple of ``block``."""
    cuts = [0] + [i for i in range(1, len(positions)) if positions[i] // block != positions[i - 1] // block]
    return list(zip(cuts, cuts[1:] + [len(positions)]))


def merge(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Combine partial softmax results over disjoint key sets: ``[(out, lse), ...]`` -> ``out``.

    ``out (B, H, q, D)``, ``lse (B, H, q)`` (natural log, ``-inf`` for an empty part).
    """
    lses = torch.stack([lse.float() for _, lse in parts])  # (P, B, H, q)
    top = lses.max(dim=0).values
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    weights = torch.exp(lses - top)  # exp(-inf) = 0 for empty parts
    total = weights.sum(dim=0).clamp(min=torch.finfo(torch.float32).tiny)
    acc = sum(w.unsqueeze(-1) * out.float() for w, (out, _) in zip(weights, parts))
    return (acc / total.unsqueeze(-1)).to(parts[0][0].dtype)

"""Dense masked references for the sparse patterns, written from the definitions (not from the kernels)."""

from __future__ import annotations

import torch


def layout(b: int, hq: int, hkv: int, older: int, q: int, d: int = 16, holes: bool = False, start: int = 0,
           seed: int = 0, dtype=torch.float32):
    """Random query/key/value in the cache layout: ``older`` held slots then the ``q`` new tokens.

    Held slots carry positions ``start .. start+older-1`` (some set to -1 with ``holes``); the new
    tokens follow. Returns ``(query, key, value, key_pos, query_pos)``.
    """
    g = torch.Generator().manual_seed(seed)
    length = older + q
    query = torch.randn(b, hq, q, d, generator=g).to(dtype)
    key = torch.randn(b, hkv, length, d, generator=g).to(dtype)
    value = torch.randn(b, hkv, length, d, generator=g).to(dtype)
    first = start
    query_pos = torch.arange(first + older, first + older + q)
    key_pos = torch.arange(first, first + length).expand(b, hkv, length).clone()
    if holes:
        drop = torch.rand(b, hkv, older, generator=g) < 0.3
        key_pos[..., :older] = key_pos[..., :older].masked_fill(drop, -1)
    return query, key, value, key_pos, query_pos


def dense_reference(query, key, value, key_pos, query_pos, scaling, window, allowed, scores_fn=None):
    """Softmax over the pairs ``allowed(b, h, qp, kp)`` (broadcast: b ``(B,1,1,1)``, h ``(1,Hq,1,1)``,
    qp ``(1,1,q,1)``, kp ``(B,Hq,1,L)``) plus causality, the window and empty slots.

    ``scores_fn(scores, qp, kp) -> scores`` may replace logits. Returns ``(out, lse)``, float32.
    """
    bsz, hq = query.shape[:2]
    hkv = key.shape[1]
    rep = hq // hkv
    k = key.repeat_interleave(rep, 1).float()
    v = value.repeat_interleave(rep, 1).float()
    kp = key_pos.repeat_interleave(rep, 1).unsqueeze(2)  # (B, Hq, 1, L)
    qp = query_pos.view(1, 1, -1, 1)
    scores = query.float() @ k.transpose(-1, -2) * scaling
    if scores_fn is not None:
        scores = scores_fn(scores, qp, kp)
    b = torch.arange(bsz).view(-1, 1, 1, 1)
    h = torch.arange(hq).view(1, -1, 1, 1)
    ok = (kp >= 0) & (kp <= qp) & allowed(b, h, qp, kp)
    if window is not None:
        ok &= qp - kp < window
    scores = scores.masked_fill(~ok, float("-inf"))
    lse = torch.logsumexp(scores, -1)
    probs = torch.nan_to_num(torch.exp(scores - lse.unsqueeze(-1)), nan=0.0)
    return probs @ v, lse


def a_shape(n_init: int, n_local: int):
    return lambda b, h, qp, kp: (kp < n_init) | (qp - kp < n_local)


def vertical_slash(vertical: torch.Tensor, diagonals: torch.Tensor, block: int):
    """Membership from the estimated tables, by brute force over positions."""

    def allowed(b, h, qp, kp):
        shape = torch.broadcast_shapes(b.shape, h.shape, qp.shape, kp.shape)
        out = torch.zeros(shape, dtype=torch.bool)
        bb, hh, qq, kk = (t.expand(shape) for t in (b, h, qp, kp))
        for idx in torch.nonzero(torch.ones(shape, dtype=torch.bool)):
            i = tuple(idx.tolist())
            bi, hi, p, k = int(bb[i]), int(hh[i]), int(qq[i]), int(kk[i])
            if k < 0 or k > p:
                continue
            d = p // block - k // block
            out[i] = bool(vertical[bi, hi, k]) if k < vertical.shape[-1] else False
            out[i] |= bool(diagonals[bi, hi, d]) if d < diagonals.shape[-1] else False
        return out

    return allowed

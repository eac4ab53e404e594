"""LM-Infinite's Λ-shaped attention with its distance limit (Han et al. 2024).

Each query attends the first ``n_global`` tokens and its ``n_local`` most recent tokens (the
Λ-shaped mask). Within the local window the attention logits are the model's own (true relative
distance). A global token further than the window is scored as if it were exactly
``limit_distance`` positions away (the distance limit), as the authors' implementation does: the
query is rotated to position ``limit_distance`` and the key taken un-rotated (position 0) --
their "stationary" branch. With the defaults ``n_local = limit_distance = L_pretrain`` the
effective distance is ``min(qp - kp, L_pretrain)``.

Here queries and keys arrive already rotated at their own positions, so the stationary scores
use ``rotate(q, limit - qp)`` and ``rotate(k, -kp)`` (:mod:`kvlab.sparse.rope`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kvlab.attention import allowed_mask
from kvlab.sparse.patterns import SinkWindow, compact
from kvlab.sparse.rope import rotate


@dataclass(frozen=True, eq=False)
class LambdaShape(SinkWindow):
    """:class:`SinkWindow` with ``n_init = n_global`` plus LM-Infinite's distance limit.

    Attributes:
        limit_distance: the distance global tokens outside the window are scored at.
        freqs: ``(R,)`` the layer's RoPE inverse frequencies.
    """

    limit_distance: int = 0
    freqs: torch.Tensor | None = None

    def stationary(self, kp: torch.Tensor, qp: torch.Tensor) -> torch.Tensor:
        """Pairs scored at the limited distance: global keys outside the local window."""
        return (kp >= 0) & (kp < self.n_init) & (qp - kp >= self.n_local)

    def logit_bias(self, query, query_pos, keys, key_pos, scaling):
        """Blocked kernel hook: what to add to the model's logits so stationary pairs get their
        limited-distance score.

        ``query (B, H, G, q, D)`` against the gathered ``keys (B, H, K, D)`` at ``key_pos (B, H, K)``,
        ``query_pos (q,)``. Returns ``(index (B, H, g), bias (B, H, G, q, g) float32)`` -- the global
        columns and ``stationary - rotary`` score on them (0 where the true distance is kept) -- or
        None when no global token is held. Only the few global columns are computed.
        """
        is_global = (key_pos >= 0) & (key_pos < self.n_init)
        if not bool(is_global.any()):
            return None
        index, valid = compact(is_global)  # (B, H, g): the global columns of each head
        kp = key_pos.gather(-1, index).masked_fill(~valid, -1)
        k_glob = keys.gather(2, index.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1]))
        stat = stationary_scores(query, query_pos, k_glob, kp, self.limit_distance, self.freqs, scaling)
        rot = torch.matmul(query.float(), k_glob.float().unsqueeze(2).transpose(-1, -2)) * scaling
        use = self.stationary(kp.unsqueeze(2).unsqueeze(3), query_pos.view(1, 1, 1, -1, 1))  # (B,H,1,q,g)
        return index, torch.where(use, stat - rot, torch.zeros_like(stat))


def stationary_scores(query, query_pos, keys, key_pos, limit: int, freqs, scaling: float) -> torch.Tensor:
    """Scores at the limited distance: ``query (B, H, G, q, D)``, ``keys (B, H, g, D)`` at
    ``key_pos (B, H, g)`` -> float32 ``(B, H, G, q, g)``."""
    q_stat = rotate(query, (limit - query_pos).view(1, 1, 1, -1), freqs).float()
    k_home = rotate(keys, -key_pos.clamp(min=0), freqs).float()
    return torch.matmul(q_stat, k_home.unsqueeze(2).transpose(-1, -2)) * scaling


def stationary_branch(pattern: LambdaShape, query, key, value, key_pos, query_pos, scaling, window):
    """The global tokens outside the window, with their stationary scores, as a partial softmax.

    Returns ``(out (B, Hq, q, Dv), lse (B, Hq, q) float32)``; rows with no such key have
    ``lse = -inf`` and ``out = 0``. Dense over the few global slots (at most ``n_global`` per head).
    """
    bsz, hq, q_len, d = query.shape
    hkv = key.shape[1]
    is_global = (key_pos >= 0) & (key_pos < pattern.n_init)
    out = torch.zeros(bsz, hq, q_len, value.shape[-1], dtype=query.dtype, device=query.device)
    lse = torch.full((bsz, hq, q_len), float("-inf"), device=query.device)
    if not bool(is_global.any()):
        return out, lse
    index, valid = compact(is_global)
    kp = key_pos.gather(-1, index).masked_fill(~valid, -1)
    k_glob = key.gather(2, index.unsqueeze(-1).expand(-1, -1, -1, d))
    v_glob = value.gather(2, index.unsqueeze(-1).expand(-1, -1, -1, value.shape[-1])).float()
    qg = query.view(bsz, hkv, hq // hkv, q_len, d)
    scores = stationary_scores(qg, query_pos, k_glob, kp, pattern.limit_distance, pattern.freqs, scaling)
    ok = allowed_mask(kp, query_pos, window).unsqueeze(2)
    ok &= pattern.stationary(kp.unsqueeze(2).unsqueeze(3), query_pos.view(1, 1, 1, -1, 1))
    scores = scores.masked_fill(~ok, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    probs = torch.nan_to_num(torch.exp(scores - lse.unsqueeze(-1)), nan=0.0)
    out = torch.matmul(probs, v_glob.unsqueeze(2)).view(bsz, hq, q_len, -1).to(query.dtype)
    return out, lse.view(bsz, hq, q_len)

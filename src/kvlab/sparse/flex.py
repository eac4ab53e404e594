"""Sparse patterns through ``torch.nn.attention.flex_attention`` (compiled on CUDA).

The block lists are built directly from the pattern's block structure
(:meth:`Pattern.block_need` -> ``BlockMask.from_kv_blocks``), so nothing of size ``q x L`` is ever
materialised, not even at 128K (``create_block_mask`` would evaluate the mask everywhere). The
``mask_mod`` is the pattern's exact membership, so a block list only has to be a superset. Blocks
that hold only allowed pairs (:meth:`Pattern.block_full`, strictly below the causal diagonal, inside
the held keys and the window) are listed as *full* blocks, which the kernel computes without
evaluating the ``mask_mod``: with MInference's block diagonals or a long A-shape window most
computed blocks are full.

Blocks are aligned to absolute positions: queries (and, when the held keys do not start on a
block boundary, keys) are padded at the front, and the padding rows/columns are masked and dropped.

* A-shape: one call. LM-Infinite: the local branch through flex plus the stationary global branch
  (a few keys, dense), merged by log-sum-exp. MInference: the slash blocks through flex plus the
  vertical columns gathered per head (a second flex call over ``vertical_size`` keys, minus those
  already in a slash block), merged by log-sum-exp -- scattered columns would otherwise touch
  almost every block.

flex_attention needs the held keys at contiguous positions shared by all heads (the full cache of
a prefill-only method); :func:`supported` says when, and the caller falls back to the blocked kernel.
"""

from __future__ import annotations

import functools

import torch

from kvlab.sparse.blocked import merge
from kvlab.sparse.lambda_shape import LambdaShape, stationary_branch
from kvlab.sparse.patterns import Pattern, SinkWindow, compact
from kvlab.sparse.vertical_slash import VerticalSlash

BLOCK = 128


def available() -> bool:
    try:
        from torch.nn.attention.flex_attention import BlockMask, flex_attention  # noqa: F401
    except ImportError:  # pragma: no cover - torch < 2.5
        return False
    return True


@functools.cache
def _flex(compiled: bool):
    from torch.nn.attention.flex_attention import flex_attention

    # dynamic=None: the first new shape recompiles with dynamic sizes, later chunks reuse that graph
    return torch.compile(flex_attention) if compiled else flex_attention


def supported(key_pos: torch.Tensor, query_pos: torch.Tensor, softcap: float | None = None) -> bool:
    """Whether the flex path applies: no soft-capping, held keys at contiguous positions in every head."""
    if softcap is not None or not available():
        return False
    first = key_pos[:1, :1, :1]
    expected = first + torch.arange(key_pos.shape[-1], device=key_pos.device)
    return bool((key_pos == expected).all()) and int(first.min()) >= 0


def flex_sparse_attention(query, key, value, key_pos, query_pos, scaling, window, pattern: Pattern,
                          compiled: bool | None = None) -> torch.Tensor:
    """``pattern`` over ``query (B, Hq, q, D)`` and ``key``/``value (B, Hkv, L, D)`` -> ``(B, Hq, q, Dv)``.

    Preconditions: :func:`supported`. ``compiled`` defaults to True on CUDA (eager flex materialises
    the scores and is only good for tests).
    """
    compiled = query.is_cuda if compiled is None else compiled
    if isinstance(pattern, LambdaShape):
        local = SinkWindow(0, pattern.n_local)
        parts = [_flex_call(query, key, value, key_pos, query_pos, scaling, window, local, compiled),
                 stationary_branch(pattern, query, key, value, key_pos, query_pos, scaling, window)]
        return merge(parts)
    if isinstance(pattern, VerticalSlash):
        slash = _flex_call(query, key, value, key_pos, query_pos, scaling, window, pattern, compiled,
                           member=pattern.slash_member)
        return merge([slash, _vertical_branch(query, key, value, key_pos, query_pos, scaling, window, pattern,
                                              compiled)])
    out, _ = _flex_call(query, key, value, key_pos, query_pos, scaling, window, pattern, compiled, want_lse=False)
    return out


def _flex_call(query, key, value, key_pos, query_pos, scaling, window, pattern, compiled, member=None,
               want_lse: bool = True):
    """One flex call of ``pattern`` (or its ``member`` part); returns ``(out, lse or None)`` without padding."""
    from torch.nn.attention.flex_attention import AuxRequest

    query, key, value, block_mask, qpad = prepare(query, key, value, key_pos, query_pos, window, pattern, member)
    result = _flex(compiled)(query, key, value, block_mask=block_mask, scale=scaling,
                             enable_gqa=query.shape[1] != key.shape[1],
                             return_aux=AuxRequest(lse=True) if want_lse else None)
    if not want_lse:
        return result[:, :, qpad:], None
    out, aux = result
    return out[:, :, qpad:], aux.lse[:, :, qpad:].float()


def prepare(query, key, value, key_pos, query_pos, window, pattern: Pattern, member=None):
    """Pad to the absolute block grid and build the BlockMask.

    Returns ``(query, key, value, block_mask, qpad)``: the padded tensors and the number of padding
    query rows in front.
    """
    member = member or pattern.member
    length = key.shape[2]
    p0 = int(key_pos[0, 0, 0])
    q0 = int(query_pos[0])
    k_base, q_base = p0 - p0 % BLOCK, q0 - q0 % BLOCK
    kpad, qpad = p0 - k_base, q0 - q_base
    if kpad:
        key, value = _pad_front(key, kpad), _pad_front(value, kpad)
    if qpad:
        query = _pad_front(query, qpad)
    n_q, n_k = query.shape[2], key.shape[2]
    q_blocks = torch.arange(-(-n_q // BLOCK), device=query.device) + q_base // BLOCK
    k_blocks = torch.arange(-(-n_k // BLOCK), device=query.device) + k_base // BLOCK
    need = pattern.block_need(q_blocks, k_blocks, BLOCK)  # (B|1, H|1, nQ, nK) or (1, nQ, nK)
    need = need if need.dim() == 4 else need.unsqueeze(0)
    qb, kb = q_blocks.view(-1, 1), k_blocks.view(1, -1)
    need = need & (kb <= qb)  # causal, on aligned blocks
    if window is not None:  # some key of the block within the window of some query of the block
        need = need & ((qb - kb) * BLOCK - (BLOCK - 1) < window)
    full = pattern.block_full(q_blocks, k_blocks, BLOCK)  # the same part as block_need (VerticalSlash: slash)
    if full is not None:
        full = (full if full.dim() == 4 else full.unsqueeze(0)) & need & (kb < qb)
        full = full & (kb * BLOCK >= p0) & (kb * BLOCK + BLOCK - 1 <= p0 + length - 1)  # no padding, no missing key
        full = full & (qb * BLOCK >= q0) & (qb * BLOCK + BLOCK <= q_base + n_q)  # no padding query, no partial block
        if window is not None:  # the farthest pair of the block is within the window
            full = full & ((qb - kb) * BLOCK + (BLOCK - 1) < window)
        if not bool(full.any()):
            full = None
    bounds = torch.tensor([q_base, k_base, qpad, p0, p0 + length - 1], device=query.device)  # no recompiles
    block_mask = _block_mask(need, n_q, n_k, _mask_mod(member, bounds, window), full)
    return query, key, value, block_mask, qpad


def _vertical_branch(query, key, value, key_pos, query_pos, scaling, window, pattern: VerticalSlash, compiled):
    """The vertical columns not already covered by a slash block, gathered per query head."""
    from torch.nn.attention.flex_attention import AuxRequest

    bsz, hq, q_len, _ = query.shape
    hkv = key.shape[1]
    p0 = int(key_pos[0, 0, 0])
    vertical = pattern.vertical[..., p0: p0 + key.shape[2]]  # (B, Hq, L): slots = positions - p0
    index, valid = compact(vertical)
    kv_head = (torch.arange(hq, device=query.device) // (hq // hkv)).view(1, -1, 1)
    bi = torch.arange(bsz, device=query.device).view(-1, 1, 1)
    k_v, v_v = key[bi, kv_head, index], value[bi, kv_head, index]  # (B, Hq, V, D)
    kpos = torch.where(valid, index + p0, torch.full_like(index, -1))
    q0 = query_pos[:1]  # a tensor, so a new chunk does not recompile

    def mask_mod(b, h, qi, kj):
        n_v = kpos.shape[-1]
        qp, kp = qi + q0[0], kpos[b, h, kj.clamp(max=n_v - 1)]
        ok = (kj < n_v) & (kp >= 0) & (kp <= qp) & ~pattern.slash_member(b, h, qp, kp)
        return ok & (qp - kp < window) if window is not None else ok

    from torch.nn.attention.flex_attention import BlockMask

    n_q_blocks, n_k_blocks = -(-q_len // BLOCK), -(-index.shape[-1] // BLOCK)
    counts = torch.full((bsz, hq, n_q_blocks), n_k_blocks, dtype=torch.int32, device=query.device)
    idx = torch.arange(n_k_blocks, dtype=torch.int32, device=query.device).expand(bsz, hq, n_q_blocks, -1)
    block_mask = BlockMask.from_kv_blocks(counts, idx.contiguous(), BLOCK_SIZE=BLOCK, mask_mod=mask_mod,
                                          seq_lengths=(q_len, index.shape[-1]))
    out, aux = _flex(compiled)(query, k_v, v_v, block_mask=block_mask, scale=scaling,
                               return_aux=AuxRequest(lse=True))
    return out, aux.lse.float()


def _mask_mod(member, bounds: torch.Tensor, window: int | None):
    """Exact mask on padded indices; ``bounds = [q_base, k_base, qpad, first key, last key]``."""

    def mask_mod(b, h, qi, kj):
        qp, kp = qi + bounds[0], kj + bounds[1]
        ok = (qi >= bounds[2]) & (kp >= bounds[3]) & (kp <= bounds[4]) & (kp <= qp) & member(b, h, qp, kp)
        return ok & (qp - kp < window) if window is not None else ok

    return mask_mod


def _block_mask(need: torch.Tensor, n_q: int, n_k: int, mask_mod, full: torch.Tensor | None = None):
    """``need (B, H, nQ, nK)`` bool -> a BlockMask listing, per query block, the key blocks needed;
    those in ``full`` (a subset of ``need``, broadcastable to it) as full blocks, the others as partial."""
    from torch.nn.attention.flex_attention import BlockMask

    if full is not None:
        full = full.expand_as(need)
        need = need & ~full
        full_counts, full_index = _block_list(full)
    else:
        full_counts = full_index = None
    counts, index = _block_list(need)
    return BlockMask.from_kv_blocks(counts, index, full_counts, full_index, BLOCK_SIZE=BLOCK,
                                    mask_mod=mask_mod, seq_lengths=(n_q, n_k))


def _block_list(need: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``need (B, H, nQ, nK)`` bool -> ``(counts (B, H, nQ), indices (B, H, nQ, nK))`` int32, listed first."""
    n_kv = need.shape[-1]
    slots = torch.arange(n_kv, device=need.device, dtype=torch.int32)
    index = torch.where(need, slots, slots + n_kv).sort(dim=-1).values % n_kv
    return need.sum(-1).to(torch.int32), index.to(torch.int32).contiguous()


def _pad_front(x: torch.Tensor, n: int) -> torch.Tensor:
    return torch.cat([x.new_zeros(*x.shape[:2], n, x.shape[-1]), x], dim=2)

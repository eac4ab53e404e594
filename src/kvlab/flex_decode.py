"""Decode attention through flex_attention's decoding kernel: an opt-in alternative for static caches.

:func:`kvlab.attention.decode_attention` runs a decoding step's attention as library matmuls plus
separate passes over the float32 scores (cast, scale, mask, softmax, cast back), with the value
reduction split over the keys by hand. ``torch.nn.attention.flex_attention`` has a decoding kernel
(FlexDecoding: chosen by flex itself for short queries; grouped query heads packed into one tile,
the keys split over the multiprocessors, the splits merged by their log-sum-exps) that does all of
it in one fused Triton kernel plus a small reduction, reading each key and value once.

Switch: ``KVLAB_DECODE_ATTENTION=flex`` (:mod:`kvlab.decode_kernel`), read when a static / graph /
compiled decoding step is built. It applies only to methods that do not read the attention
probabilities while decoding (H2O and TOVA do: they keep the default, which returns them). Exact: the
mask is the one :func:`kvlab.attention.allowed_mask` defines (slot held, not after the query, inside
the sliding window), soft-capping is a ``score_mod``.

* CUDA: compiled (Triton); inside ``compiled`` decoding one opaque operator running that kernel.
  **Not yet measured on a GPU**: ``bench/decode_kernels.py`` has it as a row and
  ``bench/gpu_session.sh`` step 1b decodes with it.
* CPU: compiled, it is inductor's C++ flash template: slower than the matmuls on the embedded
  model's heads (30 layers, 4,352 slots, one thread: 71.5 vs 59.3 ms); eager flex materialises the
  scores (small inputs and tests only).

Every key block is listed as partial (the held slots of a static cache change every step, so no
block is known to be full or empty ahead of time): the ``mask_mod`` is evaluated for every slot,
reading its int64 position (8 bytes per slot and KV head, against ``4 * head_dim`` bytes of bf16 K+V).
"""

from __future__ import annotations

import functools

import torch

BLOCK = 128


@functools.cache
def _flex(compiled: bool, device_type: str):
    """flex_attention, compiled: with dynamic sizes on CUDA after the first new cache capacity (as
    :mod:`kvlab.sparse.flex`); static on CPU, where inductor's dynamic flex template fails to build
    (static decoding rounds the capacity to :data:`kvlab.decoding.CAPACITY_MULTIPLE` there)."""
    from torch.nn.attention.flex_attention import flex_attention

    if not compiled:
        return flex_attention
    return torch.compile(flex_attention, dynamic=None if device_type == "cuda" else False)


@functools.cache
def _block_lists(n_blocks: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Every key block listed as partial for the one query block, none as full: ``(counts (1, 1, 1),
    indices (1, 1, 1, n), full counts, full indices)`` (an explicit empty full list: inductor's CPU
    template does not compile without one)."""
    counts = torch.full((1, 1, 1), n_blocks, dtype=torch.int32, device=device)
    indices = torch.arange(n_blocks, dtype=torch.int32, device=device).view(1, 1, 1, n_blocks)
    return counts, indices, torch.zeros_like(counts), torch.zeros_like(indices)


def flex_decode_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_pos: torch.Tensor,
    query_pos: torch.Tensor,
    scaling: float,
    window: int | None = None,
    softcap: float | None = None,
    compiled: bool = True,
) -> torch.Tensor:
    """:func:`kvlab.attention.decode_attention` without the key mass, through flex_attention.

    ``query (B, Hq, 1, D)``, ``key/value (B, Hkv, L, D)``, ``key_pos (B, Hkv, L)`` (``-1`` = empty slot),
    ``query_pos (1,)`` a device tensor. Returns ``(B, Hq, 1, Dv)``. No host syncs. ``compiled``: run
    ``torch.compile(flex_attention)``; False runs flex's eager reference, which materialises the
    ``(B, Hq, 1, L)`` scores. Inside a compiled decoding step it is one opaque operator that runs the
    separately compiled kernel (inductor's CPU flex template refuses a ``mask_mod`` reading buffers
    the step computes or writes, such as the cache positions).
    """
    if torch.compiler.is_compiling():
        return _flex_decode_op(query, key, value, key_pos, query_pos, scaling, window, softcap)
    return _flex_decode(query, key, value, key_pos, query_pos, scaling, window, softcap, compiled)


@torch.library.custom_op("kvlab::flex_decode_attention", mutates_args=())
def _flex_decode_op(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_pos: torch.Tensor,
                    query_pos: torch.Tensor, scaling: float, window: int | None,
                    softcap: float | None) -> torch.Tensor:
    return _flex_decode(query, key, value, key_pos, query_pos, scaling, window, softcap, True).contiguous()


@_flex_decode_op.register_fake
def _(query, key, value, key_pos, query_pos, scaling, window, softcap):
    return query.new_empty(*query.shape[:3], value.shape[-1], dtype=value.dtype)


def _flex_decode(query, key, value, key_pos, query_pos, scaling, window, softcap, compiled: bool) -> torch.Tensor:
    from torch.nn.attention.flex_attention import BlockMask

    length = key.shape[2]
    group = query.shape[1] // key.shape[1]
    block_mask = BlockMask.from_kv_blocks(*_block_lists(-(-length // BLOCK), query.device), BLOCK_SIZE=BLOCK,
                                          mask_mod=_mask_mod(key_pos, query_pos, group, window),
                                          seq_lengths=(query.shape[2], length), **_block_mask_options())
    score_mod = _softcap_mod(softcap) if softcap is not None else None
    flex = _flex(compiled, query.device.type)
    return flex(query, key, value, score_mod=score_mod, block_mask=block_mask, scale=scaling, enable_gqa=group > 1)


@functools.cache
def _block_mask_options() -> dict:
    """``compute_q_blocks=False`` where this torch has it: the transposed block lists only serve a
    backward pass, and are built with vmap, which fails inside a compiled step's runtime."""
    import inspect

    from torch.nn.attention.flex_attention import BlockMask

    parameters = inspect.signature(BlockMask.from_kv_blocks).parameters
    return {"compute_q_blocks": False} if "compute_q_blocks" in parameters else {}


def _mask_mod(key_pos: torch.Tensor, query_pos: torch.Tensor, group: int, window: int | None):
    """``allowed_mask`` per element; ``kj`` may run past the last slot in a partial last block. The
    length comes from the tensor (a dynamic size when compiled so), not a Python int, which would
    make every cache capacity compile anew."""

    def mask_mod(b, h, qi, kj):
        length = key_pos.shape[-1]
        kp = key_pos[b, h // group, kj.clamp(max=length - 1)]
        qp = query_pos[0]
        ok = (kj < length) & (kp >= 0) & (kp <= qp)
        return ok & (qp - kp < window) if window is not None else ok

    return mask_mod


def _softcap_mod(softcap: float):
    def score_mod(score, b, h, qi, kj):
        return torch.tanh(score / softcap) * softcap

    return score_mod

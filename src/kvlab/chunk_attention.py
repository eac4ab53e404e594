"""Attention of a prefill chunk over the keys held before it, without a ``q x L`` mask.

A chunk of ``q`` new queries after ``L - q`` older keys has the bottom-right causal layout: every
older key is visible to every query of the chunk, and the chunk's own keys are causal among
themselves. The attention therefore splits exactly into

* "chunk vs older keys": no mask at all. The query heads of a KV group see the same keys, so they
  are folded into the query axis (``(B, Hq, q, D) -> (B, Hkv, G*q, D)``) and grouped heads need no
  expanded keys;
* "chunk vs itself": a square causal call (the chunk's keys expanded to the query heads: chunk-sized
  copies only),

merged with the log-sum-exps the kernels return, as flash attention merges its key blocks:
``out = (o1 * exp(l1 - m) + o2 * exp(l2 - m)) / (exp(l1 - m) + exp(l2 - m))``, ``m = max(l1, l2)``.

* CPU: always. CPU SDPA takes the bottom-right layout only as a dense float mask (128 MB for 4,000
  queries over 8,000 keys, read for every score); the split is 1.4-1.5x faster (fp32 and bf16) and
  allocates no mask.
* CUDA: opt-in (``KVLAB_CUDA_CHUNK_ATTENTION=split``) until measured on a GPU. Both parts run on
  cuDNN, the kernel a one-pass prefill gets, instead of flash attention's lower-right kernel (1.7x
  slower than cuDNN at 128K on an H200); ``bench/chunk_kernels.py`` compares them.

The kernels with a log-sum-exp are private aten operators (``_scaled_dot_product_*``); where one
is missing or refuses the inputs the caller falls back to the public SDPA call.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch

# attend(query (B, H, q, D), key (B, H, L, D), value (B, H, L, Dv), causal, scale) -> (out (B, H, q, Dv), lse)
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, bool, float], tuple[torch.Tensor, torch.Tensor]]

_CPU_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_CUDNN = getattr(torch.ops.aten, "_scaled_dot_product_cudnn_attention", None)
CUDA_SWITCH = "KVLAB_CUDA_CHUNK_ATTENTION"  # "split" or "lower_right" (default)


def _cpu_attend(query, key, value, causal, scale):
    return _CPU_FLASH(query, key, value, is_causal=causal, scale=scale)


def _cudnn_attend(query, key, value, causal, scale):
    out = _CUDNN(query, key, value, None, True, 0.0, causal, False, scale=scale)
    return out[0], out[1]


def kernel_for(device: torch.device) -> Attend | None:
    """The log-sum-exp kernel the split uses on ``device``, or None where the split is not used."""
    if device.type == "cpu":
        return _cpu_attend if _CPU_FLASH is not None else None
    if device.type == "cuda" and os.environ.get(CUDA_SWITCH, "lower_right") == "split":
        return _cudnn_attend if _CUDNN is not None else None
    return None


def warn_fallback(exc: Exception) -> None:
    """Once per process: the opt-in split was refused and the lower-right kernel runs instead."""
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(f"{CUDA_SWITCH}=split: the kernel refused these inputs ({str(exc).splitlines()[0][:160]}); "
                      "chunks use the lower-right kernel", RuntimeWarning, stacklevel=3)


_warned = False


def split_refused() -> bool:
    """Whether the opt-in split was refused (and the lower-right kernel ran) in this process."""
    return _warned


def split_chunk_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float,
                          attend: Attend) -> torch.Tensor:
    """Exact attention of the last ``q`` keys' queries over all ``L`` keys (bottom-right causal).

    ``query (B, Hq, q, D)``, ``key (B, Hkv, L, D)``, ``value (B, Hkv, L, Dv)`` with ``1 <= q < L``.
    Returns ``(B, Hq, q, Dv)`` in the query's dtype (the merge runs in float32). Raises
    ``RuntimeError`` where the kernel refuses the inputs.
    """
    b, hq, q_len, d = query.shape
    hkv, older = key.shape[1], key.shape[2] - q_len
    group = hq // hkv
    out_old, lse_old = attend(query.reshape(b, hkv, group * q_len, d), key[:, :, :older], value[:, :, :older],
                              False, scaling)
    own_k, own_v = key[:, :, older:], value[:, :, older:]
    if group > 1:
        own_k, own_v = own_k.repeat_interleave(group, dim=1), own_v.repeat_interleave(group, dim=1)
    out_own, lse_own = attend(query, own_k, own_v, True, scaling)
    lse_old = _first(lse_old, b, hkv, group * q_len).reshape(b, hq, q_len, 1)
    lse_own = _first(lse_own, b, hq, q_len).unsqueeze(-1)
    top = torch.maximum(lse_old, lse_own)
    w_old, w_own = (lse_old - top).exp_(), (lse_own - top).exp_()
    out = out_old.reshape(b, hq, q_len, -1).float().mul_(w_old).add_(out_own.float().mul_(w_own))
    return out.div_(w_old.add_(w_own)).to(query.dtype)


def _first(lse: torch.Tensor, b: int, heads: int, n: int) -> torch.Tensor:
    """A kernel's log-sum-exp as float32 ``(B, heads, n)``: kernels return ``(B, H, n)``, ``(B, H, n, 1)``
    or pad the query axis."""
    return lse.reshape(b, heads, -1)[..., :n].float()

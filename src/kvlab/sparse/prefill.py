"""The object sparse-prefill methods return from ``prefill_pattern``, and kernel selection.

``kvlab.apply`` calls ``pattern.attend(query, key, value, key_pos, query_pos, scaling, window)``
during prefill; :class:`SparsePrefill` builds the forward's :class:`~kvlab.sparse.patterns.Pattern`
(static, or estimated from the queries as MInference does) and runs it with

* ``flex``: ``torch.nn.attention.flex_attention`` (compiled) -- the default on CUDA;
* ``blocked``: the plain-torch blocked kernel (:mod:`kvlab.sparse.blocked`) -- the default on CPU,
  and the fallback when flex cannot run the layout (empty slots, soft-capping).

``kernel="flex"`` on CPU runs flex_attention eagerly (it materialises the scores: for tests only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from kvlab.errors import KvlabError
from kvlab.sparse import flex
from kvlab.sparse.blocked import blocked_attention
from kvlab.sparse.patterns import Pattern
from kvlab.sparse.vertical_slash import VerticalSlash

KERNELS = ("auto", "flex", "blocked")


def check_kernel(kernel: str) -> None:
    if kernel not in KERNELS:
        raise KvlabError(f"unknown sparse kernel '{kernel}'; use one of {', '.join(KERNELS)}")


def kernel_for(kernel: str, device: torch.device | str) -> str:
    """The kernel ``kernel`` resolves to on ``device`` (what benchmarks record)."""
    check_kernel(kernel)
    if kernel != "auto":
        return kernel
    return "flex" if torch.device(device).type == "cuda" and flex.available() else "blocked"


def sparse_attention(query, key, value, key_pos, query_pos, scaling: float, window: int | None,
                     pattern: Pattern, kernel: str = "auto", softcap: float | None = None) -> torch.Tensor:
    """Attention of ``query (B, Hq, q, D)`` over ``key``/``value (B, Hkv, L, D)`` restricted to
    ``pattern``; returns ``(B, Hq, q, Dv)``."""
    use_flex = kernel_for(kernel, query.device) == "flex" and flex.supported(key_pos, query_pos, softcap)
    if isinstance(pattern, VerticalSlash) and flex.BLOCK % pattern.block:
        use_flex = False
    if use_flex:
        return flex.flex_sparse_attention(query, key, value, key_pos, query_pos, scaling, window, pattern)
    out, _ = blocked_attention(query, key, value, key_pos, query_pos, scaling, window, pattern, softcap,
                               want_lse=False)
    return out


@dataclass(frozen=True)
class SparsePrefill:
    """A sparse prefill step: ``make(query, key, key_pos, query_pos, scaling, window) -> Pattern``."""

    make: Callable[..., Pattern]
    kernel: str = "auto"

    def attend(self, query, key, value, key_pos, query_pos, scaling, window, softcap=None) -> torch.Tensor:
        pattern = self.make(query, key, key_pos, query_pos, scaling, window)
        return sparse_attention(query, key, value, key_pos, query_pos, scaling, window, pattern, self.kernel,
                                softcap)


def fixed(pattern: Pattern, kernel: str = "auto") -> SparsePrefill:
    """A :class:`SparsePrefill` for a pattern that does not depend on the data."""
    return SparsePrefill(lambda *args: pattern, kernel)

"""Which kernel runs decode attention in the static decoding modes: the switch ``KVLAB_DECODE_ATTENTION``.

``static``, ``graph`` and ``compiled`` decoding (:mod:`kvlab.decoding`) run attention over a
fixed-capacity cache one of three ways (:func:`kernel_for`): :func:`kvlab.attention.decode_attention`
as library calls (``matmul``), the same traced into the compiled step (``inductor``), or
flex_attention's decoding kernel (``flex``, :mod:`kvlab.flex_decode`). The choice is read when a step is
built; results name it in their decode mode (:func:`mode_label`).
"""

from __future__ import annotations

import os

from kvlab.defaults import DECODE_KERNELS
from kvlab.errors import KvlabError
from kvlab.sparse.flex import available

SWITCH = "KVLAB_DECODE_ATTENTION"
KERNELS = DECODE_KERNELS


def kernel_for(method, mode: str = "static") -> str:
    """The decode attention kernel a decoding step of ``method`` in resolved decode ``mode`` (a static
    one) runs, from the switch :data:`SWITCH`:

    * ``"matmul"``: :func:`kvlab.attention.decode_attention` (the default of ``static`` and ``graph``);
      inside ``compiled`` decoding one opaque operator (library calls, the eager numerics);
    * ``"inductor"`` (the default of ``compiled``): the same function traced into the compiled step, so
      inductor fuses its passes over the scores with the rest of the step; in the other modes
      ``"matmul"``. On CPU 0.79-0.91x the opaque operator's ms/token (docs/performance.md);
    * ``"flex"``: flex_attention's decoding kernel (:mod:`kvlab.flex_decode`), where flex_attention
      exists and the method does not read the attention probabilities while decoding (H2O, TOVA); else
      the default.

    Raises :class:`KvlabError` for an unknown switch value."""
    default = default_kernel(mode)
    choice = os.environ.get(SWITCH, default).strip().lower() or default
    if choice not in KERNELS:
        raise KvlabError(f"{SWITCH}={os.environ[SWITCH]!r} is not a decode attention kernel; "
                         f"use one of {', '.join(KERNELS)} (or unset it)")
    if choice == "flex" and (wants_key_mass(method) or not available()):
        return default
    if choice == "inductor" and mode != "compiled":
        return "matmul"
    return choice


def mode_label(mode: str, method) -> str:
    """Resolved decode ``mode`` plus the kernel where it is not the mode's default (``"graph+flex"``,
    ``"compiled+matmul"``): what results are keyed by, so runs of different kernels do not replace each
    other."""
    if mode == "eager":
        return mode
    kernel = kernel_for(method, mode)
    return mode if kernel == default_kernel(mode) else f"{mode}+{kernel}"


def default_kernel(mode: str) -> str:
    """The kernel of static decoding ``mode`` when the switch is unset: ``inductor`` in ``compiled``,
    ``matmul`` in the others."""
    return "inductor" if mode == "compiled" else "matmul"


def runs_flex(mode: str, method) -> bool:
    """Whether decoding ``method`` in resolved decode ``mode`` runs flex (the static modes only)."""
    return mode != "eager" and kernel_for(method, mode) == "flex"


def wants_key_mass(method) -> bool:
    """Whether static decoding must compute the probabilities each slot received (H2O accumulates them,
    TOVA ranks by them); otherwise :func:`kvlab.attention.decode_attention` skips that pass."""
    return bool(method.needs_attention_weights or method.decode_key_mass)

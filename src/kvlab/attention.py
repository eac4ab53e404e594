"""Attention kernels used by kvlab's attention function.

Shapes: ``query (B, Hq, q, D)``, ``key/value (B, Hkv, L, D)``, ``key_pos (B, Hkv, L)`` (absolute token
index, ``-1`` = empty slot), ``query_pos (q,)`` absolute indices of the queries. A query at position
``p`` may attend a key at position ``k`` iff ``0 <= k <= p`` and, for a sliding-window layer,
``p - k < window``.

Two paths:

* :func:`sdpa_attention`: the fast exact path when the layout is "everything held is older than
  the new queries, and the new queries are the last ``q`` keys in order" -- a causal mask aligned
  to the bottom right. This is the layout of every full-attention layer without empty slots.
* :func:`masked_attention`: the general exact path (empty slots, sliding windows, soft-capping),
  computed block by block over queries so no ``q x L`` matrix for all heads is materialised at
  once. It can also return the attention mass each key received (summed over the queries and the
  heads of its group), which H2O-style methods accumulate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kvlab import chunk_attention

_CPU_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
# Elements of one score block in masked_attention (float32): 2^22 = 16 MiB, cache-friendly on CPU.
_BLOCK_ELEMS = 1 << 22
# Keys per partial sum of decode attention's value reduction (see weighted_values), and the fewest
# pieces worth splitting into on CPU with one thread / with more.
DECODE_SPLIT = 1024
CPU_MIN_PIECES = (16, 4)


def sdpa_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float) -> torch.Tensor:
    """Exact attention for the bottom-right causal layout. Returns ``(B, Hq, q, D)``.

    On CUDA, a chunk of ``q`` new queries after older keys uses the lower-right causal bias (flash
    attention takes it natively: no ``q x L`` mask, no score matrix), single-token steps avoid cuDNN's
    SDPA backend, which re-plans for every new key length (milliseconds of CPU per call in decoding),
    and a kernel that refuses grouped heads gets them expanded. On CPU (and on CUDA where switched on)
    such a chunk is split into two unmasked calls merged by log-sum-exp (:mod:`kvlab.chunk_attention`).
    """
    q_len, kv_len = query.shape[2], key.shape[2]
    if 1 < q_len < kv_len and key.shape[-1] == value.shape[-1]:
        attend = chunk_attention.kernel_for(query.device)
        if attend is not None:
            try:
                return chunk_attention.split_chunk_attention(query, key, value, scaling, attend)
            except torch.OutOfMemoryError:
                raise
            except RuntimeError as exc:  # a layout the private kernel refuses: the public call below
                if query.device.type == "cuda":  # opt-in there: say that the switch did not take
                    chunk_attention.warn_fallback(exc)
    if query.device.type == "cuda":
        return _cuda_sdpa(query, key, value, scaling)
    mask = None
    if 1 < q_len < kv_len:
        # q new tokens after (kv_len - q_len) older ones: causal aligned to the bottom right.
        rows = torch.arange(q_len, device=query.device).unsqueeze(1)
        cols = torch.arange(kv_len, device=query.device).unsqueeze(0)
        mask = cols <= rows + (kv_len - q_len)
    causal = mask is None and q_len > 1
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, is_causal=causal, scale=scaling,
                                          enable_gqa=query.shape[1] != key.shape[1])


def _cuda_sdpa(query, key, value, scaling) -> torch.Tensor:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.bias import causal_lower_right

    q_len, kv_len = query.shape[2], key.shape[2]
    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    mask, causal = None, q_len > 1
    if 1 < q_len < kv_len:
        mask, causal = causal_lower_right(q_len, kv_len), False  # flash/efficient kernels, never materialised
    elif q_len > 1:
        backends.insert(0, SDPBackend.CUDNN_ATTENTION)  # fastest for a square causal prefill
    with sdpa_kernel(backends):
        try:
            return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, is_causal=causal,
                                                  scale=scaling, enable_gqa=query.shape[1] != key.shape[1])
        except RuntimeError:  # "No available kernel": expand the grouped KV heads
            group = query.shape[1] // key.shape[1]
            key, value = key.repeat_interleave(group, dim=1), value.repeat_interleave(group, dim=1)
            return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, is_causal=causal,
                                                  scale=scaling)


def allowed_mask(
    key_pos: torch.Tensor, query_pos: torch.Tensor, window: int | None, chunk: int | None = None
) -> torch.Tensor:
    """Boolean ``(B, Hkv, q, L)``: may query ``i`` attend key slot ``j``. ``chunk``: chunked attention
    (Llama 4), a query sees only the keys of its own chunk of ``chunk`` positions."""
    kp = key_pos.unsqueeze(-2)  # (B, Hkv, 1, L)
    qp = query_pos.view(1, 1, -1, 1)  # (1, 1, q, 1)
    ok = (kp >= 0) & (kp <= qp)
    if window is not None:
        ok &= (qp - kp) < window
    if chunk is not None:
        ok &= torch.div(kp, chunk, rounding_mode="floor") == torch.div(qp, chunk, rounding_mode="floor")
    return ok


def masked_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_pos: torch.Tensor,
    query_pos: torch.Tensor,
    scaling: float,
    window: int | None = None,
    softcap: float | None = None,
    want_key_mass: bool = False,
    sinks: torch.Tensor | None = None,
    chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """General exact attention, computed in query blocks.

    The last ``q`` key slots must be the queries' own tokens, in order (the cache appends each
    forward's tokens at the end), so a block of queries never needs the slots after its last query.
    Returns ``(output (B, Hq, q, D), key_mass (B, Hkv, L) float32 or None)`` where ``key_mass[b, h, j]``
    is the sum over the queries and the query heads of group ``h`` of the probability given to slot ``j``.
    ``sinks (Hq,)``: learned attention-sink logits (gpt-oss ``s_aux``), one more term in each softmax's
    denominator that no value goes with (the probabilities of a row then sum to less than one).
    ``chunk``: chunked attention (see :func:`allowed_mask`).
    """
    b, hq, q_len, d = query.shape
    hkv, kv_len = key.shape[1], key.shape[2]
    group = hq // hkv
    older = kv_len - q_len  # slots held before this forward
    out = torch.empty(b, hq, q_len, value.shape[-1], dtype=query.dtype, device=query.device)
    mass = torch.zeros(b, hkv, kv_len, dtype=torch.float32, device=query.device) if want_key_mass else None
    qg = query.view(b, hkv, group, q_len, d)
    kt = key.unsqueeze(2).float().transpose(-1, -2)  # (B, Hkv, 1, D, L)
    vf = value.unsqueeze(2).float()  # (B, Hkv, 1, L, Dv)
    block = max(1, min(q_len, _BLOCK_ELEMS // max(1, b * hq * kv_len)))
    sink = sinks.float().view(1, hkv, group, 1, 1) if sinks is not None else None
    for start in range(0, q_len, block):
        stop = min(q_len, start + block)
        visible = older + stop  # later slots hold tokens after this block's queries
        scores = torch.matmul(qg[:, :, :, start:stop].float(), kt[..., :visible])
        scores.mul_(scaling)
        if softcap is not None:
            scores = torch.tanh(scores / softcap).mul_(softcap)
        ok = allowed_mask(key_pos[..., :visible], query_pos[start:stop], window, chunk).unsqueeze(2)  # (B, Hkv, 1, qb, L)
        scores.masked_fill_(~ok, float("-inf"))
        if sink is None:
            probs = torch.softmax(scores, dim=-1)  # every query sees at least its own token
        else:  # softmax over [scores, sink] without the sink's column
            top = torch.maximum(scores.amax(dim=-1, keepdim=True), sink)
            probs = (scores - top).exp_()
            probs.div_(probs.sum(dim=-1, keepdim=True) + (sink - top).exp())
        out[:, :, start:stop] = torch.matmul(probs, vf[:, :, :, :visible]).reshape(b, hq, stop - start, -1)
        if mass is not None:
            mass[..., :visible] += probs.sum(dim=(2, 3))
    return out, mass


def decode_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_pos: torch.Tensor,
    query_pos: torch.Tensor,
    scaling: float,
    window: int | None = None,
    softcap: float | None = None,
    want_key_mass: bool = True,
    opaque: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention of one new token per sequence over a fixed-size cache that may have empty slots.

    No host syncs and no data-dependent shapes, so a decoding step built on it can be captured in
    a CUDA graph. ``query (B, Hq, 1, D)``, ``query_pos (1,)`` a device tensor. Returns
    ``(output (B, Hq, 1, D), key_mass (B, Hkv, L) float32)`` -- the probabilities each slot received,
    summed over the heads of its group (what H2O accumulates and TOVA ranks); ``key_mass`` is None
    when not wanted (one reduction pass over the scores less). Without the mass and soft-capping, a CPU
    runs torch's fused flash kernel (:func:`_cpu_flash_decode`); otherwise the matmuls below. Under
    ``torch.compile`` it is one opaque operator (:func:`_decode_attention_op`) unless ``opaque`` is
    False: then inductor traces the matmuls and fuses the passes over the scores with the step.
    """
    if opaque and torch.compiler.is_compiling():  # see _decode_attention_op
        out, mass = _decode_attention_op(query, key, value, key_pos, query_pos, scaling, window, softcap,
                                         want_key_mass)
        return out, (mass if want_key_mass else None)
    return _decode_attention(query, key, value, key_pos, query_pos, scaling, window, softcap, want_key_mass)


@torch.library.custom_op("kvlab::decode_attention", mutates_args=())
def _decode_attention_op(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_pos: torch.Tensor,
                         query_pos: torch.Tensor, scaling: float, window: int | None,
                         softcap: float | None, want_key_mass: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`decode_attention` as one opaque operator for ``torch.compile``: inductor fuses the rest of
    the decoding step but leaves the attention to the library calls, with the eager numerics
    (``KVLAB_DECODE_ATTENTION=matmul``; the compiled step's default now traces the function instead,
    which on CPU measured 0.79-0.91x this operator's ms/token, see :func:`kvlab.decode_kernel.kernel_for`).
    Without ``want_key_mass`` the second output is empty."""
    out, mass = _decode_attention(query, key, value, key_pos, query_pos, scaling, window, softcap, want_key_mass)
    return out.contiguous(), (mass.contiguous() if mass is not None else key_pos.new_empty(0, dtype=torch.float32))


@_decode_attention_op.register_fake
def _(query, key, value, key_pos, query_pos, scaling, window, softcap, want_key_mass):
    b, hq, q_len, _ = query.shape
    mass_shape = (b, key.shape[1], key.shape[2]) if want_key_mass else (0,)
    return (query.new_empty(b, hq, q_len, value.shape[-1], dtype=value.dtype),
            query.new_empty(*mass_shape, dtype=torch.float32))


def _decode_attention(query, key, value, key_pos, query_pos, scaling, window, softcap, want_key_mass=True):
    b, hq, q_len, d = query.shape
    hkv = key.shape[1]
    qg = query.reshape(b, hkv, (hq // hkv) * q_len, d)
    if cpu_flash_decodes(query.device, want_key_mass, softcap):
        return _cpu_flash_decode(qg, key, value, key_pos, query_pos, scaling, window).view(b, hq, q_len, -1), None
    scores = torch.matmul(qg, key.transpose(-1, -2)).float().mul_(scaling)  # (B, Hkv, G, L)
    if softcap is not None:
        scores = torch.tanh(scores / softcap).mul_(softcap)
    ok = allowed_mask(key_pos, query_pos, window).squeeze(2).unsqueeze(2)  # (B, Hkv, 1, L)
    scores.masked_fill_(~ok, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    out = weighted_values(probs.to(value.dtype), value).reshape(b, hq, q_len, value.shape[-1])
    return out, (probs.sum(dim=2) if want_key_mass else None)


def cpu_flash_decodes(device: torch.device, want_key_mass: bool, softcap: float | None) -> bool:
    """Whether :func:`decode_attention` runs torch's fused CPU flash kernel (:func:`_cpu_flash_decode`):
    on CPU, without the key mass and soft-capping, where this torch has the kernel."""
    return device.type == "cpu" and not want_key_mass and softcap is None and _CPU_FLASH is not None


def _cpu_flash_decode(qg, key, value, key_pos, query_pos, scaling, window) -> torch.Tensor:
    """CPU decode attention through torch's fused flash kernel: ``qg (B, Hkv, G, D)`` (the grouped query
    heads folded into the query axis, so the keys need no expansion) -> ``(B, Hkv, G, Dv)``; the empty
    slots are a ``(B, Hkv, 1, L)`` additive -inf bias. 1.1-1.15x faster than the matmul path with one
    thread on the embedded model's heads (30 layers, 4,352 slots: 57.3 vs 65.0 ms; 16,384: 177 vs 204),
    1.03-1.09x with two; no probabilities, so only where the key mass is not wanted."""
    ok = allowed_mask(key_pos, query_pos, window)  # (B, Hkv, 1, L)
    bias = torch.zeros(ok.shape, dtype=qg.dtype, device=qg.device).masked_fill_(~ok, float("-inf"))
    return _CPU_FLASH(qg, key, value, 0.0, False, attn_mask=bias, scale=scaling)[0]


def value_pieces(n: int, device: torch.device) -> int:
    """Equal pieces :func:`weighted_values` splits ``n`` keys into; 1 = one matmul.

    About :data:`DECODE_SPLIT` keys a piece, and only when they divide ``n`` exactly: unequal pieces of a
    ``(B, H, n, Dv)`` cache cannot be batched as a view (the matmul would copy the values whole every
    step). Static caches are sized with :func:`split_capacity` so that they divide. On CPU the pieces
    are what several threads share; with one thread a split pays only for long caches (embedded
    model's shape, 30 layers: 1.2x slower than one matmul at 2K keys, 0.86x at 16K, 0.75x at 24K; with
    two threads 0.93x at 4K, 0.68x at 16K), hence :data:`CPU_MIN_PIECES`.
    """
    s = n // DECODE_SPLIT
    if device.type == "cuda":
        least = 2
    else:
        least = CPU_MIN_PIECES[0] if _torch_threads() == 1 else CPU_MIN_PIECES[1]
    for pieces in (s, s - 1):  # s - 1: a split_capacity() that crossed a multiple of DECODE_SPLIT
        if pieces >= least and n % pieces == 0:
            return pieces
    return 1


@torch.compiler.assume_constant_result
def _torch_threads() -> int:
    """``torch.get_num_threads()``, a constant to ``torch.compile`` (a decoding step traced with the
    matmuls inside keeps the split it was traced with)."""
    return torch.get_num_threads()


def split_capacity(n: int) -> int:
    """The smallest ``m >= n`` whose keys :func:`value_pieces` splits evenly (fewer than ``n / DECODE_SPLIT``
    extra slots: ~0.1%); ``n`` itself when it is too short to split."""
    s = n // DECODE_SPLIT
    return n if s < 2 else -(-n // s) * s


def weighted_values(probs: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``probs (B, Hkv, G, L) @ value (B, Hkv, L, Dv)`` for decoding, split over the keys where that pays.

    One matmul reduces over all ``L`` keys into a tiny ``G x Dv`` output per KV head, which a GPU
    runs on a handful of multiprocessors. :func:`value_pieces` equal pieces become a batch of matmuls
    whose partial outputs are summed in float32 (flash-decoding's split-K, in plain torch). Only when
    the pieces are a view of ``value`` (a whole static buffer, or any contiguous tensor): the cache is
    never copied; otherwise one matmul.
    """
    b, h, g, n = probs.shape
    pieces = value_pieces(n, value.device)
    if pieces < 2:
        return torch.matmul(probs, value)
    size, dv = n // pieces, value.shape[-1]
    try:
        v = value.view(b * h * pieces, size, dv)  # raises where the pieces are not one strided batch
    except RuntimeError:
        return torch.matmul(probs, value)
    p = probs.reshape(b, h, g, pieces, size).transpose(2, 3).reshape(b * h * pieces, g, size)  # small copy
    return torch.bmm(p, v).view(b, h, pieces, g, dv).float().sum(dim=2).to(value.dtype)


def window_attention_probs(
    query: torch.Tensor,
    key: torch.Tensor,
    key_pos: torch.Tensor,
    query_pos: torch.Tensor,
    scaling: float,
    window: int | None = None,
) -> torch.Tensor:
    """Attention probabilities of a few queries (an observation window) over all held keys.

    Returns float32 ``(B, Hkv, group, w, L)``; masked entries are 0. Used by scorers such as SnapKV
    and TOVA, whose query windows are short, so the full matrix is small.
    """
    b, hq, w, d = query.shape
    hkv = key.shape[1]
    qg = query.view(b, hkv, hq // hkv, w, d).float()
    scores = torch.matmul(qg, key.unsqueeze(2).float().transpose(-1, -2)) * scaling
    ok = allowed_mask(key_pos, query_pos, window).unsqueeze(2)
    scores = scores.masked_fill(~ok, float("-inf"))
    return torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)

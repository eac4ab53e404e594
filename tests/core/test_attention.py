"""The attention kernels agree with a dense softmax reference written from the definition."""

from __future__ import annotations

import pytest
import torch
from tinymodels import LargestAllocation

from kvlab.attention import (
    DECODE_SPLIT, decode_attention, masked_attention, sdpa_attention, split_capacity, value_pieces, weighted_values,
)


def reference(query, key, value, key_pos, query_pos, scaling, window=None):
    """Dense float64 attention over the allowed pairs (causal, window, empty slots)."""
    group = query.shape[1] // key.shape[1]
    k = key.repeat_interleave(group, 1).double()
    v = value.repeat_interleave(group, 1).double()
    kp = key_pos.repeat_interleave(group, 1).unsqueeze(2)  # (B, Hq, 1, L)
    qp = query_pos.view(1, 1, -1, 1)
    ok = (kp >= 0) & (kp <= qp)
    if window is not None:
        ok &= qp - kp < window
    scores = (query.double() @ k.transpose(-1, -2)) * scaling
    return torch.softmax(scores.masked_fill(~ok, float("-inf")), -1) @ v


def layout(hq, hkv, length, q, holes=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(1, hq, q, 32, generator=g)
    key = torch.randn(1, hkv, length, 32, generator=g)
    value = torch.randn(1, hkv, length, 32, generator=g)
    key_pos = torch.arange(length).expand(1, hkv, length).clone()
    if holes:
        drop = torch.rand(1, hkv, length - q, generator=g) < holes
        key_pos[..., : length - q] = key_pos[..., : length - q].masked_fill(drop, -1)
    return query, key, value, key_pos, torch.arange(length - q, length)


@pytest.mark.parametrize("length", [7, DECODE_SPLIT * 2, DECODE_SPLIT * 3 + 517])
@pytest.mark.parametrize("window", [None, 900])
def test_decode_attention_equals_reference(length, window):
    """One query over a long cache with empty slots: split-K reduction included (>= 2 pieces)."""
    query, key, value, key_pos, query_pos = layout(8, 2, length, 1, holes=0.3)
    out, mass = decode_attention(query, key, value, key_pos, query_pos, 0.2, window)
    ref = reference(query, key, value, key_pos, query_pos, 0.2, window)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    assert mass.shape == (1, 2, length)
    torch.testing.assert_close(mass.sum(-1), torch.full((1, 2), 4.0), atol=1e-4, rtol=0)  # 4 heads per group


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("length", [DECODE_SPLIT * 2, DECODE_SPLIT * 5 + 3, DECODE_SPLIT * 17 + 5])
def test_weighted_values_never_copies_the_values(length, threads, monkeypatch):
    """Split or not, the value reduction allocates nothing value-sized: a whole static buffer sized by
    split_capacity splits as a view; a view of a larger buffer (eager caches) is one matmul."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    buffer = torch.randn(1, 2, split_capacity(length) + 64, 16)
    for value in (buffer[:, :, : split_capacity(length)].contiguous(), buffer[:, :, :length]):
        probs = torch.softmax(torch.randn(1, 2, 3, value.shape[2]), -1)
        with LargestAllocation(value, probs) as seen:
            out = weighted_values(probs, value)
        torch.testing.assert_close(out, probs @ value, atol=1e-5, rtol=1e-5)
        assert seen.largest < value.nbytes // 4, "the values were copied"


@pytest.mark.parametrize("length", [*range(2 * DECODE_SPLIT, 40 * DECODE_SPLIT, 997), 3 * DECODE_SPLIT - 1])
def test_split_capacity_splits_evenly_with_few_extra_slots(length):
    assert split_capacity(2 * DECODE_SPLIT - 1) == 2 * DECODE_SPLIT - 1  # too short to split: as is
    cap = split_capacity(length)
    assert length <= cap < length + length // DECODE_SPLIT
    pieces = value_pieces(cap, torch.device("cuda"))  # the CUDA rule: any two pieces or more
    assert pieces >= 2 and cap % pieces == 0 and abs(cap // pieces - DECODE_SPLIT) < DECODE_SPLIT


def test_value_pieces_on_cpu_depend_on_threads(monkeypatch):
    cpu, n = torch.device("cpu"), 8 * DECODE_SPLIT
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert value_pieces(n, cpu) == 1 and value_pieces(32 * DECODE_SPLIT, cpu) == 32
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert value_pieces(n, cpu) == 8


@pytest.mark.parametrize("older,q", [(0, 40), (60, 40), (100, 1)])
def test_sdpa_and_masked_attention_equal_reference(older, q):
    query, key, value, key_pos, query_pos = layout(6, 2, older + q, q)
    ref = reference(query, key, value, key_pos, query_pos, 0.3)
    torch.testing.assert_close(sdpa_attention(query, key, value, 0.3).double(), ref, atol=1e-5, rtol=1e-5)
    out, mass = masked_attention(query, key, value, key_pos, query_pos, 0.3, want_key_mass=True)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mass.sum(-1), torch.full((1, 2), 3.0 * q), atol=1e-3, rtol=0)


@pytest.mark.parametrize("hq,hkv", [(6, 2), (4, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunk_after_older_keys_matches_reference(hq, hkv, dtype):
    """A prefill chunk after older keys (CPU: split into older-keys + own-causal parts merged by
    log-sum-exp, no q x L mask), grouped and plain heads, fp32 and bf16."""
    query, key, value, key_pos, query_pos = layout(hq, hkv, 300, 70, seed=3)
    query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
    ref = reference(query, key, value, key_pos, query_pos, 0.3)
    out = sdpa_attention(query, key, value, 0.3)
    assert out.dtype == dtype and out.shape == (1, hq, 70, 32)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)


def test_chunk_attention_with_narrower_values_matches_reference():
    """Value head size != key head size (MLA-like): the CPU chunk path or its masked fallback is exact."""
    query, key, value, key_pos, query_pos = layout(6, 2, 200, 50, seed=4)
    value = value[..., :16].contiguous()
    ref = reference(query, key, value, key_pos, query_pos, 0.3)
    torch.testing.assert_close(sdpa_attention(query, key, value, 0.3).double(), ref, atol=1e-5, rtol=1e-5)


def _math_attend(pad_to: int, trailing_one: bool):
    """A reference kernel with a log-sum-exp in the layouts real kernels use: ``(B, H, n)`` padded on
    the query axis (memory-efficient attention pads to 32) or ``(B, H, n, 1)`` (cuDNN)."""
    def attend(query, key, value, causal, scale):
        scores = (query.double() @ key.double().transpose(-1, -2)) * scale
        if causal:
            scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf"))
        lse = torch.logsumexp(scores, -1)
        out = (torch.softmax(scores, -1) @ value.double()).to(query.dtype)
        n = lse.shape[-1]
        lse = torch.cat([lse, torch.full((*lse.shape[:-1], -n % pad_to), 7.0, dtype=lse.dtype)], -1)
        return out, lse.float().unsqueeze(-1) if trailing_one else lse.float()
    return attend


@pytest.mark.parametrize("pad_to,trailing_one", [(1, False), (32, False), (1, True)])
def test_split_chunk_attention_merges_by_log_sum_exp(pad_to, trailing_one):
    """The split (older keys unmasked, grouped heads folded into the query axis; own keys causal)
    equals the dense reference whatever log-sum-exp layout the kernel returns."""
    from kvlab.chunk_attention import split_chunk_attention

    query, key, value, key_pos, query_pos = layout(6, 2, 150, 45, seed=5)
    ref = reference(query, key, value, key_pos, query_pos, 0.3)
    out = split_chunk_attention(query, key, value, 0.3, _math_attend(pad_to, trailing_one))
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


def test_cuda_chunk_split_is_opt_in(monkeypatch):
    from kvlab import chunk_attention

    monkeypatch.delenv(chunk_attention.CUDA_SWITCH, raising=False)
    assert chunk_attention.kernel_for(torch.device("cuda")) is None
    assert chunk_attention.kernel_for(torch.device("cpu")) is chunk_attention._cpu_attend
    monkeypatch.setenv(chunk_attention.CUDA_SWITCH, "split")
    assert chunk_attention.kernel_for(torch.device("cuda")) is chunk_attention._cudnn_attend

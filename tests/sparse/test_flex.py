"""The flex_attention path equals the blocked kernel, and its block lists cover every allowed pair.

Eager flex_attention (what runs on CPU without compiling) applies only the ``mask_mod``, so the
block lists -- what makes the compiled kernel skip work -- are checked separately against the exact
mask; the compiled CPU run (slow: ~30 s of compilation) checks both together.
"""

from __future__ import annotations

import pytest
import torch
from sparse_ref import layout

from kvlab.sparse import flex
from kvlab.sparse.blocked import blocked_attention
from kvlab.sparse.lambda_shape import LambdaShape
from kvlab.sparse.patterns import SinkWindow
from kvlab.sparse.vertical_slash import estimate

pytestmark = [pytest.mark.skipif(not flex.available(), reason="flex_attention is not available"),
              pytest.mark.filterwarnings("ignore::UserWarning")]

# (q heads, kv heads, held slots, new queries, first held position, window)
LAYOUTS = [
    (4, 2, 0, 300, 0, None),  # one pass, three blocks
    (4, 2, 150, 200, 0, None),  # a chunk starting mid-block
    (6, 2, 100, 140, 37, None),  # held keys not starting on a block boundary (front padding)
    (4, 4, 200, 130, 0, 100),  # sliding window
]


def patterns(query, key, key_pos, query_pos, window):
    spec_freqs = torch.tensor([1.0 / 10000 ** (i / 8) for i in range(8)])  # head_dim 16
    return {
        "a_shape": SinkWindow(20, 90),
        "lambda": LambdaShape(12, 100, limit_distance=120, freqs=spec_freqs),
        "minference": estimate(query, key, key_pos, query_pos, 0.25, window, last_q=16, vertical_size=24,
                               slash_size=40, block=64, sink_tokens=4, local_diagonals=16),
    }


def test_available_on_this_torch():
    assert flex.available()


@pytest.mark.parametrize("shape", LAYOUTS, ids=lambda s: f"h{s[0]}-{s[1]}o{s[2]}q{s[3]}p{s[4]}w{s[5]}")
def test_flex_equals_blocked(shape):
    hq, hkv, older, q, start, window = shape
    query, key, value, key_pos, query_pos = layout(1, hq, hkv, older, q, start=start, seed=hq + q)
    assert flex.supported(key_pos, query_pos)
    for name, pattern in patterns(query, key, key_pos, query_pos, window).items():
        got = flex.flex_sparse_attention(query, key, value, key_pos, query_pos, 0.25, window, pattern, compiled=False)
        ref, _ = blocked_attention(query, key, value, key_pos, query_pos, 0.25, window, pattern)
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("shape", LAYOUTS, ids=lambda s: f"h{s[0]}-{s[1]}o{s[2]}q{s[3]}p{s[4]}w{s[5]}")
def test_block_lists_cover_the_exact_mask(shape):
    from torch.nn.attention.flex_attention import create_mask

    hq, hkv, older, q, start, window = shape
    query, key, value, key_pos, query_pos = layout(1, hq, hkv, older, q, start=start, seed=3)
    for name, pattern in patterns(query, key, key_pos, query_pos, window).items():
        member = pattern.slash_member if name == "minference" else None
        if name == "lambda":
            pattern = SinkWindow(0, pattern.n_local)  # flex runs the local branch; the rest is dense
        qp, kp, _, block_mask, qpad = flex.prepare(query, key, value, key_pos, query_pos, window, pattern, member)
        heads = hq if block_mask.kv_num_blocks.shape[1] > 1 else 1
        exact = create_mask(block_mask.mask_mod, 1, heads, qp.shape[2], kp.shape[2], device="cpu")
        partial = dense_blocks(block_mask.kv_num_blocks, block_mask.kv_indices, qp.shape[2], kp.shape[2])
        full = dense_blocks(block_mask.full_kv_num_blocks, block_mask.full_kv_indices, qp.shape[2], kp.shape[2])
        assert not bool((exact & ~(partial | full)).any()), f"{name}: an allowed pair lies in a block that is not listed"
        assert not bool((full & ~exact).any()), f"{name}: a full block holds a pair the pattern does not allow"
        assert not bool((full & partial).any()), f"{name}: a block listed both full and partial"
        assert bool(exact[..., qpad:, :].any(-1).all()), f"{name}: a query with nothing to attend"
        if name == "a_shape" and q + older >= 300:
            assert 1 - (partial | full).float().mean().item() > 0.1, "A-shape should skip blocks"


def dense_blocks(counts, indices, n_q, n_k):
    """The pairs covered by a block list ``counts (B, H, nQ)``, ``indices (B, H, nQ, nK)`` -> bool ``(B, H, n_q, n_k)``."""
    if counts is None:
        return torch.zeros(1, 1, n_q, n_k, dtype=torch.bool)
    n_kb = indices.shape[-1]
    listed = torch.arange(n_kb).view(1, 1, 1, -1) < counts.unsqueeze(-1).long()
    blocks = torch.zeros(*indices.shape[:3], n_kb, dtype=torch.bool).scatter_(-1, indices.long(), listed)
    pairs = blocks.repeat_interleave(flex.BLOCK, -2).repeat_interleave(flex.BLOCK, -1)
    return pairs[..., :n_q, :n_k]


# A-shape with a long window and MInference with dense block diagonals: most blocks are full
FULL_CASES = [(SinkWindow(130, 400), 0, 700, 0, None), (SinkWindow(0, 300), 200, 500, 37, 350)]


@pytest.mark.parametrize("case", range(len(FULL_CASES)))
def test_full_blocks_are_listed_and_exact(case):
    from torch.nn.attention.flex_attention import create_mask

    pattern, older, q, start, window = FULL_CASES[case]
    query, key, value, key_pos, query_pos = layout(1, 4, 2, older, q, start=start, seed=case)
    qp, kp, _, block_mask, qpad = flex.prepare(query, key, value, key_pos, query_pos, window, pattern)
    exact = create_mask(block_mask.mask_mod, 1, 1, qp.shape[2], kp.shape[2], device="cpu")
    full = dense_blocks(block_mask.full_kv_num_blocks, block_mask.full_kv_indices, qp.shape[2], kp.shape[2])
    partial = dense_blocks(block_mask.kv_num_blocks, block_mask.kv_indices, qp.shape[2], kp.shape[2])
    assert bool(full.any()), "no full block found"
    assert not bool((full & ~exact).any()) and not bool((exact & ~(full | partial)).any())
    got = flex.flex_sparse_attention(query, key, value, key_pos, query_pos, 0.25, window, pattern, compiled=False)
    ref, _ = blocked_attention(query, key, value, key_pos, query_pos, 0.25, window, pattern)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_minference_dense_diagonals_make_full_blocks():
    query, key, value, key_pos, query_pos = layout(1, 4, 2, 0, 640, seed=5)
    pattern = estimate(query, key, key_pos, query_pos, 0.25, None, last_q=16, vertical_size=8, slash_size=640,
                       block=64, sink_tokens=4, local_diagonals=16)
    assert bool(pattern.diagonals[..., :10].all())  # every offset 0..639 kept: the slash part is the causal triangle
    *_, block_mask, _ = flex.prepare(query, key, value, key_pos, query_pos, None, pattern, pattern.slash_member)
    # 5 query blocks of 128: every block strictly below the diagonal is full, the diagonal ones partial
    assert block_mask.full_kv_num_blocks.flatten().tolist() == [0, 1, 2, 3, 4] * 4
    assert block_mask.kv_num_blocks.flatten().tolist() == [1] * 20


def test_unsupported_layouts_are_detected():
    *_, key_pos, query_pos = layout(1, 4, 2, 30, 20, holes=True)
    assert not flex.supported(key_pos, query_pos)
    _, _, _, key_pos, query_pos = layout(1, 4, 2, 30, 20)
    assert not flex.supported(key_pos, query_pos, softcap=30.0)


@pytest.mark.slow
def test_compiled_flex_on_cpu_equals_blocked():
    """The real kernel (inductor, block lists honoured) where flex compiles on CPU.

    Only the single-call A-shape: torch's CPU flex kernel cannot return the log-sum-exp the
    two-branch patterns merge with.
    """
    query, key, value, key_pos, query_pos = layout(1, 4, 2, 150, 250, seed=9)
    cases = [(patterns(query, key, key_pos, query_pos, None)["a_shape"], (query, key, value, key_pos, query_pos)),
             (FULL_CASES[0][0], layout(1, 4, 2, 0, 700, seed=10))]  # the second with full blocks
    for pattern, (query, key, value, key_pos, query_pos) in cases:
        torch._dynamo.reset()  # torch's CPU flex template fails to build the dynamic-shape recompile
        try:
            got = flex.flex_sparse_attention(query, key, value, key_pos, query_pos, 0.25, None, pattern, compiled=True)
        except Exception as exc:  # noqa: BLE001 - no C++ compiler, an unsupported CPU backend ...
            pytest.skip(f"flex_attention does not compile on this CPU: {type(exc).__name__}")
        ref, _ = blocked_attention(query, key, value, key_pos, query_pos, 0.25, None, pattern)
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)

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
        listed = block_mask.to_dense().bool()  # (1, H, nQ, nK) blocks
        blocks = listed.repeat_interleave(flex.BLOCK, -2).repeat_interleave(flex.BLOCK, -1)
        blocks = blocks[..., : qp.shape[2], : kp.shape[2]]
        assert not bool((exact & ~blocks).any()), f"{name}: an allowed pair lies in a block that is not listed"
        assert bool(exact[..., qpad:, :].any(-1).all()), f"{name}: a query with nothing to attend"
        skipped = 1 - listed.float().mean().item()
        if name == "a_shape" and q + older >= 300:
            assert skipped > 0.1, "A-shape should skip blocks"


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
    pattern = patterns(query, key, key_pos, query_pos, None)["a_shape"]
    try:
        got = flex.flex_sparse_attention(query, key, value, key_pos, query_pos, 0.25, None, pattern, compiled=True)
    except Exception as exc:  # noqa: BLE001 - no C++ compiler, an unsupported CPU backend ...
        pytest.skip(f"flex_attention does not compile on this CPU: {type(exc).__name__}")
    ref, _ = blocked_attention(query, key, value, key_pos, query_pos, 0.25, None, pattern)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)

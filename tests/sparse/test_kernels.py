"""Each sparse pattern, through the blocked kernel, equals a dense masked reference."""

from __future__ import annotations

import pytest
import torch
from sparse_ref import a_shape, dense_reference, layout, vertical_slash

from kvlab.sparse.blocked import blocked_attention, merge
from kvlab.sparse.patterns import SinkWindow, range_any
from kvlab.sparse.vertical_slash import estimate

# (batch, q heads, kv heads, held slots before this forward, new queries, first position, holes, window)
SHAPES = [
    (1, 4, 2, 0, 70, 0, False, None),  # one-pass prefill, GQA
    (1, 6, 2, 45, 33, 0, False, None),  # a later chunk: older tokens in the cache
    (2, 3, 3, 20, 50, 0, False, None),  # MHA, batch of two
    (1, 4, 1, 30, 40, 7, True, None),  # MQA, held keys with empty slots, not starting at 0
    (1, 4, 2, 25, 64, 0, False, 24),  # sliding window layer
]


def run_blocked(pattern, q, k, v, kp, qp, window, block=16):
    """The float32 path (with lse), checked against the fused-SDPA path on the way."""
    out, lse = blocked_attention(q, k, v, kp, qp, 0.25, window, pattern, block=block)
    fused, none = blocked_attention(q, k, v, kp, qp, 0.25, window, pattern, block=block, want_lse=False)
    assert none is None
    torch.testing.assert_close(fused, out, rtol=1e-5, atol=1e-5)
    return out, lse


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"b{s[0]}h{s[1]}-{s[2]}o{s[3]}q{s[4]}")
@pytest.mark.parametrize("n_init,n_local", [(4, 8), (0, 20), (10, 1)])
def test_a_shape_equals_dense_reference(shape, n_init, n_local):
    b, hq, hkv, older, q, start, holes, window = shape
    query, key, value, key_pos, query_pos = layout(b, hq, hkv, older, q, holes=holes, start=start)
    out, lse = run_blocked(SinkWindow(n_init, n_local), query, key, value, key_pos, query_pos, window)
    ref, ref_lse = dense_reference(query, key, value, key_pos, query_pos, 0.25, window, a_shape(n_init, n_local))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-5, atol=1e-5)


def test_a_shape_is_really_sparse_and_block_size_does_not_matter():
    query, key, value, key_pos, query_pos = layout(1, 4, 2, 0, 96)
    pattern = SinkWindow(4, 8)
    outs = [run_blocked(pattern, query, key, value, key_pos, query_pos, None, block)[0] for block in (1, 7, 32, 128)]
    for other in outs[1:]:
        torch.testing.assert_close(other, outs[0], rtol=1e-5, atol=1e-5)
    dense, _ = dense_reference(query, key, value, key_pos, query_pos, 0.25, None, lambda *a: torch.tensor(True))
    assert (outs[0][:, :, 20:] - dense[:, :, 20:]).abs().max() > 1e-2  # far queries lose the middle
    torch.testing.assert_close(outs[0][:, :, :12], dense[:, :, :12], rtol=1e-5, atol=1e-5)  # all in window


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"b{s[0]}h{s[1]}-{s[2]}o{s[3]}q{s[4]}")
@pytest.mark.parametrize("block", [4, 8])
def test_vertical_slash_equals_dense_reference(shape, block):
    b, hq, hkv, older, q, start, holes, window = shape
    query, key, value, key_pos, query_pos = layout(b, hq, hkv, older, q, holes=holes, start=start, seed=3)
    pattern = estimate(query, key, key_pos, query_pos, 0.25, window, last_q=8, vertical_size=6, slash_size=5,
                       block=block, sink_tokens=2, local_diagonals=3)
    assert pattern.vertical.shape[:2] == (b, hq) and pattern.diagonals.shape[:2] == (b, hq)
    out, lse = run_blocked(pattern, query, key, value, key_pos, query_pos, window)
    allowed = vertical_slash(pattern.vertical, pattern.diagonals, block)
    ref, ref_lse = dense_reference(query, key, value, key_pos, query_pos, 0.25, window, allowed)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-5, atol=1e-5)


def test_merge_of_disjoint_parts_equals_the_whole():
    query, key, value, key_pos, query_pos = layout(1, 4, 2, 10, 40, seed=5)
    whole, whole_lse = dense_reference(query, key, value, key_pos, query_pos, 0.25, None, a_shape(5, 9))
    sink = run_blocked(SinkWindow(5, 0), query, key, value, key_pos, query_pos, None)
    # the window part without the sinks: a pattern object for "qp - kp < 9 and kp >= 5"
    class Rest(SinkWindow):
        def member(self, b, h, qp, kp):
            return (kp >= 5) & (qp - kp < 9)

    rest = run_blocked(Rest(0, 9), query, key, value, key_pos, query_pos, None)
    torch.testing.assert_close(merge([sink, rest]), whole, rtol=1e-5, atol=1e-5)
    empty = (torch.zeros_like(whole), torch.full_like(whole_lse, float("-inf")))
    torch.testing.assert_close(merge([(whole, whole_lse), empty]), whole, rtol=1e-6, atol=1e-6)


def test_range_any_matches_a_loop():
    g = torch.Generator().manual_seed(1)
    table = torch.rand(2, 3, 17, generator=g) < 0.2
    first = torch.randint(-5, 20, (2, 3, 11), generator=g)
    last = first + torch.randint(-2, 6, (2, 3, 11), generator=g)
    got = range_any(table, first, last)
    for b in range(2):
        for h in range(3):
            for i in range(11):
                lo, hi = max(0, int(first[b, h, i])), min(16, int(last[b, h, i]))
                expected = hi >= lo and bool(table[b, h, lo:hi + 1].any())
                assert bool(got[b, h, i]) == expected

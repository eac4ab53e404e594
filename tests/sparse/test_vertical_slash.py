"""MInference's estimation: the vertical and slash lines are Algorithm 2's, computed by brute force."""

from __future__ import annotations

import pytest
import torch
from sparse_ref import layout

from kvlab.sparse.vertical_slash import estimate


def brute_force(query, key, last_q, vertical_size, slash_size, sink, local, scaling=0.25):
    """Algorithm 2 on a one-pass prefill (positions = slots), per query head, with Python loops."""
    b, hq, q, _ = query.shape
    rep = hq // key.shape[1]
    k = key.repeat_interleave(rep, 1)
    w = min(last_q, q)
    scores = query[:, :, -w:] @ k.transpose(-1, -2) * scaling  # (B, Hq, w, L)
    rows = torch.arange(q - w, q).view(-1, 1)
    scores = scores.masked_fill(torch.arange(q).view(1, -1) > rows, float("-inf"))
    a = torch.softmax(scores, -1)
    verticals, slashes = {}, {}
    for bi in range(b):
        for h in range(hq):
            col = a[bi, h].sum(0).clone()
            col[:sink] = float("inf")
            verticals[bi, h] = set(col.topk(max(vertical_size, sink)).indices.tolist())
            diag = torch.zeros(q)
            for i in range(w):
                for j in range(q - w + i + 1):
                    diag[(q - w + i) - j] += a[bi, h, i, j]
            diag[:local] = float("inf")
            slashes[bi, h] = set(diag.topk(max(slash_size, local)).indices.tolist())
    return verticals, slashes


@pytest.mark.parametrize("hq,hkv,block", [(4, 2, 8), (3, 3, 16), (6, 1, 4)])
def test_estimate_matches_algorithm_2(hq, hkv, block):
    query, key, _, key_pos, query_pos = layout(2, hq, hkv, 0, 90, seed=hq * 10 + block)
    pattern = estimate(query, key, key_pos, query_pos, 0.25, None, last_q=16, vertical_size=7, slash_size=9,
                       block=block, sink_tokens=3, local_diagonals=4)
    verticals, slashes = brute_force(query, key, 16, 7, 9, 3, 4)
    for (b, h), cols in verticals.items():
        assert set(torch.nonzero(pattern.vertical[b, h]).flatten().tolist()) == cols
        expected = {o // block for o in slashes[b, h]} | {-(-o // block) for o in slashes[b, h]}
        assert set(torch.nonzero(pattern.diagonals[b, h]).flatten().tolist()) == expected


def test_heads_get_their_own_pattern_and_a_strongly_attended_key_becomes_vertical():
    query, key, _, key_pos, query_pos = layout(1, 4, 2, 0, 120, seed=1)
    key[0, 1, 57] = query[0, 3, -8:].mean(0) * 8  # head 3 (group of KV head 1) looks at key 57
    pattern = estimate(query, key, key_pos, query_pos, 0.25, None, last_q=8, vertical_size=5, slash_size=6,
                       block=8, sink_tokens=2, local_diagonals=3)
    assert bool(pattern.vertical[0, 3, 57])
    assert not torch.equal(pattern.vertical[0, 0], pattern.vertical[0, 3])
    assert bool(pattern.vertical[0, :, :2].all())  # sinks forced
    assert bool(pattern.diagonals[0, :, 0].all())  # the local diagonal forced


def test_chunk_estimation_uses_absolute_positions():
    """A later chunk: columns are positions of held keys; offsets are measured between positions."""
    query, key, _, key_pos, query_pos = layout(1, 4, 2, 60, 40, start=5, holes=True, seed=2)
    pattern = estimate(query, key, key_pos, query_pos, 0.25, None, last_q=8, vertical_size=6, slash_size=6,
                       block=8, sink_tokens=2, local_diagonals=3)
    cols = torch.nonzero(pattern.vertical[0, 0]).flatten()
    held = set(key_pos[0, 0][key_pos[0, 0] >= 0].tolist())
    assert set(cols.tolist()) <= held and len(cols) == 6
    assert pattern.vertical.shape[-1] == int(query_pos[-1]) + 1

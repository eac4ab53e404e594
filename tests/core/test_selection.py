"""Each scorer keeps exactly its protected slots plus its top-scored ones (synthetic layer contexts)."""

from __future__ import annotations

import pytest
import torch
from method_matrix import METHOD_CASES

from kvlab.methods import get_method
from kvlab.methods.base import LayerContext
from kvlab.models.spec import ModelSpec

SPEC = ModelSpec("t", "llama", num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, dtype=torch.float32,
                 max_positions=4096, sliding_windows=(None, None))


class FakeLayer:
    def __init__(self, positions):
        self.extras = {}
        self.positions = positions

    def extra(self, name):
        if name not in self.extras:
            self.extras[name] = torch.rand(self.positions.shape, generator=torch.Generator().manual_seed(9))
        return self.extras[name]


def make_ctx(capacity: int, n: int = 48, q: int = 12, seed: int = 0, holes: bool = False) -> LayerContext:
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(1, 2, n, 8, generator=g)
    positions = torch.arange(n).expand(1, 2, n).clone()
    if holes:
        positions[0, 1, 5:9] = -1
    return LayerContext(
        layer_idx=0, spec=SPEC, query=torch.randn(1, 4, q, 8, generator=g), query_pos=torch.arange(n - q, n),
        keys=keys, values=torch.randn(1, 2, n, 8, generator=g), positions=positions, scaling=8 ** -0.5,
        window=None, phase="context", layer=FakeLayer(positions), capacity=capacity,
    )


SCORERS = [n for n in METHOD_CASES if n not in ("full", "adakv")
           and get_method(n).kind == "eviction"]


@pytest.mark.parametrize("name", SCORERS)
@pytest.mark.parametrize("capacity,holes", [(20, False), (33, False), (20, True)])
def test_selection_is_protected_plus_top_scored(name, capacity, holes):
    m = get_method(name, **METHOD_CASES[name])
    ctx = make_ctx(capacity, holes=holes)
    scores = m.score(ctx).float()
    protected = m.protected(ctx)
    protected = torch.zeros_like(scores, dtype=torch.bool) if protected is None else protected
    index, valid = m.select(ctx, capacity)
    for h in range(2):
        kept = set(index[0, h][valid[0, h]].tolist())
        usable = ctx.positions[0, h] >= 0
        prot = set(torch.nonzero(protected[0, h] & usable).flatten().tolist())
        assert prot <= kept, "protected slots must be kept"
        rest_kept = [s for s in kept if s not in prot]
        dropped = [s for s in range(scores.shape[-1]) if s not in kept and bool(usable[s])]
        assert len(kept) == min(capacity, int(usable.sum()))
        if rest_kept and dropped:
            assert min(scores[0, h, rest_kept]) >= max(scores[0, h, dropped])
        assert all(bool(usable[s]) for s in kept), "empty slots are never kept"


def test_snapkv_scores_are_pooled_window_votes():
    m = get_method("snapkv", window_size=4, kernel_size=3)
    ctx = make_ctx(10, q=6)
    probs = ctx.last_queries_probs(4)  # (1, 2, 2, 4, 48)
    votes = probs.sum(3).mean(2)
    votes[..., -4:] = 0  # the window itself is not pooled
    padded = torch.nn.functional.pad(votes, (1, 1))
    expected = (padded[..., :-2] + padded[..., 1:-1] + padded[..., 2:]) / 3
    torch.testing.assert_close(m.score(ctx), expected)
    assert m.protected(ctx)[0, 0].nonzero().flatten().tolist() == [44, 45, 46, 47]


def test_h2o_splits_budget_between_heavy_and_recent():
    m = get_method("h2o")
    ctx = make_ctx(20)
    assert int(m.protected(ctx)[0, 0].sum()) == 10  # recent half
    m = get_method("h2o", heavy_ratio=0.75)
    assert int(m.protected(ctx)[0, 0].sum()) == 5


def test_adakv_allocation_is_global_top_k_with_safeguard():
    m = get_method("adakv", scorer=get_method("knorm"), alpha_safeguard=0.25)
    ctx = make_ctx(12)
    scores = m.score(ctx)[0]  # (2, 48)
    index, valid = m.select(ctx, 12)
    kept = [set(index[0, h][valid[0, h]].tolist()) for h in range(2)]
    assert sum(map(len, kept)) == 24
    for h in range(2):  # each head keeps at least its own top 3
        assert set(scores[h].topk(3).indices.tolist()) <= kept[h]
    # beyond the safeguard, a kept token outscores every dropped token of any head
    safe = [set(scores[h].topk(3).indices.tolist()) for h in range(2)]
    kept_scores = [float(scores[h, s]) for h in range(2) for s in kept[h] - safe[h]]
    dropped = [float(scores[h, s]) for h in range(2) for s in range(48) if s not in kept[h]]
    assert min(kept_scores) >= max(dropped)

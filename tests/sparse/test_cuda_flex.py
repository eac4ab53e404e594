"""Compiled flex_attention on CUDA equals the blocked kernel (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch
from sparse_ref import layout

from kvlab.sparse import flex
from kvlab.sparse.blocked import blocked_attention
from kvlab.sparse.lambda_shape import LambdaShape
from kvlab.sparse.patterns import SinkWindow
from kvlab.sparse.vertical_slash import estimate

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
              pytest.mark.filterwarnings("ignore::UserWarning")]


def test_cuda_sparse_flex_equals_blocked():
    """Compiled flex_attention on CUDA equals the blocked kernel for the three sparse patterns."""
    query, key, value, key_pos, query_pos = (t.to("cuda") for t in layout(1, 8, 2, 300, 700, d=64, seed=1))
    query, key, value = (t.to(torch.bfloat16) for t in (query, key, value))
    freqs = torch.tensor([1.0 / 10000 ** (i / 32) for i in range(32)], device="cuda")
    patterns = {
        "a_shape": SinkWindow(64, 256),
        "lambda": LambdaShape(10, 256, limit_distance=300, freqs=freqs),
        "minference": estimate(query, key, key_pos, query_pos, 0.125, None, last_q=64, vertical_size=64,
                               slash_size=128, block=64, sink_tokens=4, local_diagonals=32),
    }
    for name, pattern in patterns.items():
        out = flex.flex_sparse_attention(query, key, value, key_pos, query_pos, 0.125, None, pattern, compiled=True)
        ref, _ = blocked_attention(query, key, value, key_pos, query_pos, 0.125, None, pattern, None,
                                   want_lse=False)
        torch.testing.assert_close(out.float(), ref.float(), atol=3e-2, rtol=3e-2, msg=name)

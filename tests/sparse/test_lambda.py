"""LM-Infinite: RoPE re-rotation and the Λ pattern with its distance limit against a reference
built from un-rotated vectors with transformers' own rotary embedding."""

from __future__ import annotations

import pytest
import torch
from tinymodels import make_tiny
from sparse_ref import dense_reference
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from kvlab.errors import KvlabError
from kvlab.models import shapes
from kvlab.models.spec import ModelSpec
from kvlab.sparse.blocked import blocked_attention
from kvlab.sparse.lambda_shape import LambdaShape
from kvlab.sparse.rope import inv_freq, rotate


def llama_rotary(shape: str = "llama-3.1-8b"):
    config = shapes.config_for(shape)
    return config, LlamaRotaryEmbedding(config), ModelSpec.from_config(config, dtype=torch.float32)


def rope_at(x: torch.Tensor, positions: torch.Tensor, rotary) -> torch.Tensor:
    """transformers' RoPE of ``x (B, H, n, D)`` at ``positions (n,)``."""
    cos, sin = rotary(x, positions.view(1, -1))
    return apply_rotary_pos_emb(x, x, cos, sin)[0]


@pytest.mark.parametrize("shape", ["llama-3.1-8b", "smollm2-135m", "tiny-llama"])
def test_inv_freq_matches_the_model(shape):
    _, rotary, spec = llama_rotary(shape)
    torch.testing.assert_close(inv_freq(spec, 0), rotary.inv_freq.float())


def test_inv_freq_per_layer_type():
    lm = make_tiny("gemma3")
    rotary = lm.model.model.rotary_emb
    torch.testing.assert_close(inv_freq(lm.spec, 0), rotary.sliding_attention_inv_freq.float())
    torch.testing.assert_close(inv_freq(lm.spec, 1), rotary.full_attention_inv_freq.float())


def test_unsupported_rope_is_a_clear_error():
    spec = ModelSpec("m", "llama", 2, 4, 2, 16, torch.float32, 4096, rope={"rope_type": "mystery"})
    with pytest.raises(KvlabError, match="mystery"):
        inv_freq(spec, 0)


def test_rotate_moves_rope_to_another_position():
    _, rotary, spec = llama_rotary()
    x = torch.randn(1, 2, 5, 128)
    pos = torch.tensor([0, 3, 100, 9000, 4000])
    delta = torch.tensor([7, -3, 5000, -9000, 1])
    moved = rotate(rope_at(x, pos, rotary), delta, inv_freq(spec, 0))
    # transformers computes angles in float32 (about 1e-3 rad of error at 10^4 positions)
    torch.testing.assert_close(moved, rope_at(x, pos + delta, rotary), rtol=1e-3, atol=2e-3)
    back = rotate(moved, -delta, inv_freq(spec, 0))
    torch.testing.assert_close(back, rope_at(x, pos, rotary), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("older,q,n_global,n_local,limit", [(0, 80, 4, 16, 16), (40, 30, 3, 10, 25),
                                                              (0, 60, 0, 12, 12), (20, 50, 6, 64, 64)])
def test_lambda_equals_reference_with_limited_distance(older, q, n_global, n_local, limit):
    _, rotary, spec = llama_rotary("tiny-llama")  # head_dim 16
    g = torch.Generator().manual_seed(older + q)
    length = older + q
    q_raw = torch.randn(1, 4, q, 16, generator=g)
    k_raw = torch.randn(1, 2, length, 16, generator=g)
    value = torch.randn(1, 2, length, 16, generator=g)
    query_pos = torch.arange(older, length)
    key_pos = torch.arange(length).expand(1, 2, length)
    query, key = rope_at(q_raw, query_pos, rotary), rope_at(k_raw, torch.arange(length), rotary)
    pattern = LambdaShape(n_global, n_local, limit_distance=limit, freqs=inv_freq(spec, 0))
    out, lse = blocked_attention(query, key, value, key_pos, query_pos, 0.25, None, pattern, block=16)

    q_stat = rope_at(q_raw, torch.full((q,), limit), rotary)  # the authors' stationary query
    stat = q_stat @ k_raw.repeat_interleave(2, 1).transpose(-1, -2) * 0.25  # keys un-rotated

    def scores_fn(scores, qp, kp):
        return torch.where((kp < n_global) & (qp - kp >= n_local), stat, scores)

    def allowed(b, h, qp, kp):
        return (kp < n_global) | (qp - kp < n_local)

    ref, ref_lse = dense_reference(query, key, value, key_pos, query_pos, 0.25, None, allowed, scores_fn)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-4, atol=1e-4)
    fused, _ = blocked_attention(query, key, value, key_pos, query_pos, 0.25, None, pattern, block=16, want_lse=False)
    torch.testing.assert_close(fused, ref, rtol=1e-4, atol=1e-4)  # SDPA with the limit as a logit bias
    if n_global and q + older > n_local + n_global:  # the limit changed something
        plain, _ = dense_reference(query, key, value, key_pos, query_pos, 0.25, None, allowed)
        assert (plain - ref).abs().max() > 1e-4

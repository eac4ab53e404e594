"""The CUDA-only code paths agree with the CPU/reference ones (skipped without a GPU).

CI has no GPU; these run on a lent GPU machine (``pytest -m gpu``) before any benchmark there.
"""

from __future__ import annotations

import pytest
import torch
from tinymodels import make_tiny, random_ids

from kvlab.attention import masked_attention, sdpa_attention
from kvlab.engine import prefill_context

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("hq,hkv,older,q", [(8, 2, 0, 256), (8, 2, 700, 256), (4, 4, 1000, 1), (8, 1, 50, 300)])
def test_cuda_sdpa_equals_the_masked_reference(dtype, hq, hkv, older, q):
    """Lower-right causal chunks (flash/efficient, never a materialised mask), one-pass causal and
    single-token steps all equal the exact masked kernel."""
    g = torch.Generator().manual_seed(0)
    d, length = 64, older + q
    query = torch.randn(1, hq, q, d, generator=g).to("cuda", dtype)
    key = torch.randn(1, hkv, length, d, generator=g).to("cuda", dtype)
    value = torch.randn(1, hkv, length, d, generator=g).to("cuda", dtype)
    key_pos = torch.arange(length, device="cuda").expand(1, hkv, length)
    query_pos = torch.arange(older, length, device="cuda")
    out = sdpa_attention(query, key, value, d ** -0.5)
    ref, _ = masked_attention(query, key, value, key_pos, query_pos, d ** -0.5)
    tol = 2e-2 if dtype == torch.bfloat16 else 2e-4
    torch.testing.assert_close(out.float(), ref.float(), atol=tol, rtol=tol)


@pytest.mark.parametrize("method,budget", [("full", None), ("snapkv", "96"), ("streaming_llm", "64")])
def test_cuda_chunked_prefill_matches_cpu(method, budget):
    """The same tiny model and prompt on CUDA and CPU keep the same tokens and the same last logits."""
    cpu = make_tiny("llama")
    gpu = make_tiny("llama")
    gpu.model.to("cuda")
    ids = random_ids(400)
    a = prefill_context(cpu, ids, method, budget, chunk_size=128)
    b = prefill_context(gpu, ids, method, budget, chunk_size=128)
    torch.testing.assert_close(b.last_logits.cpu(), a.last_logits, atol=1e-3, rtol=1e-3)
    for la, lb in zip(a.cache.layers, b.cache.layers):
        assert torch.equal(la.positions, lb.positions.cpu())
    assert a.cache.bytes_held == b.cache.bytes_held


@pytest.mark.parametrize("hq,hkv,older,q", [(8, 2, 700, 256), (8, 8, 1000, 64), (32, 8, 4096, 512)])
def test_cuda_split_chunk_attention_equals_the_masked_reference(hq, hkv, older, q, monkeypatch):
    """The opt-in CUDA chunk path (KVLAB_CUDA_CHUNK_ATTENTION=split): two cuDNN calls merged by their
    log-sum-exps. Called directly (a refusal fails here instead of falling back) and through
    sdpa_attention with the switch on."""
    from kvlab import chunk_attention

    g = torch.Generator().manual_seed(1)
    d, length = 128, older + q
    query = torch.randn(1, hq, q, d, generator=g).to("cuda", torch.bfloat16)
    # keys and values as the cache hands them out: views of buffers with spare capacity
    key, value = (torch.randn(1, hkv, length + 100, d, generator=g).to("cuda", torch.bfloat16)[:, :, :length]
                  for _ in range(2))
    key_pos = torch.arange(length, device="cuda").expand(1, hkv, length)
    ref, _ = masked_attention(query, key, value, key_pos, torch.arange(older, length, device="cuda"), d ** -0.5)
    direct = chunk_attention.split_chunk_attention(query, key, value, d ** -0.5, chunk_attention._cudnn_attend)
    torch.testing.assert_close(direct.float(), ref.float(), atol=2e-2, rtol=2e-2)
    monkeypatch.setenv(chunk_attention.CUDA_SWITCH, "split")
    monkeypatch.setattr(chunk_attention, "_warned", False)
    assert chunk_attention.kernel_for(query.device) is chunk_attention._cudnn_attend
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the switch must take, not fall back
        out = sdpa_attention(query, key, value, d ** -0.5)
    torch.testing.assert_close(out.float(), ref.float(), atol=2e-2, rtol=2e-2)

"""Architectures beyond the plain decoder: hybrid models (linear-attention layers between attention
layers), chunked attention (Llama 4), attention-sink logits (gpt-oss), per-layer attention shapes
(Gemma 4), and what is refused: layers sharing keys and values, latent attention (DeepSeek), layer
kinds the budgeted cache cannot hold. GPT-NeoX and Qwen3-Next also run the whole method matrix (``tiny``)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from tinymodels import TINY, kv_layers, loaded_from_config, make_tiny, random_ids

import kvlab
from kvlab.budget import Budget
from kvlab.cache import BudgetCache, KVLayer
from kvlab.engine import continue_generation, prefill_context
from kvlab.errors import KvlabError
from kvlab.models.spec import ModelSpec
from kvlab.sampling import SamplingParams


@pytest.fixture(scope="module")
def hybrid():
    return make_tiny("qwen3_next")


def plain_generate(lm, ids, new):
    with torch.no_grad():
        out = lm.model.generate(torch.tensor([ids]), max_new_tokens=new, min_new_tokens=new, do_sample=False)
    return out[0, len(ids):].tolist()


def test_hybrid_budget_counts_only_the_attention_layers(hybrid):
    spec = hybrid.spec
    assert spec.kv_layers == (1, 3)
    assert spec.kv_bytes_per_token == 2 * spec.layer_kv_bytes(1) == 2 * (2 * 2 * 16 * 4)
    assert spec.full_cache_bytes(100) == 200 * spec.layer_kv_bytes(1)
    # a bytes budget buys tokens in the two attention layers, not in four
    assert Budget.parse(f"{20 * spec.kv_bytes_per_token}B").resolve(spec, 100) == 20


def test_hybrid_engine_keeps_transformers_states_and_matches_generate(hybrid):
    from transformers.cache_utils import LinearAttentionCacheLayerMixin

    ids = random_ids(50, seed=21)
    expected = plain_generate(hybrid, ids, 6)
    one = prefill_context(hybrid, ids, "full", None, None)
    chunked = prefill_context(hybrid, ids, "full", None, 16)
    torch.testing.assert_close(chunked.last_logits, one.last_logits, rtol=1e-4, atol=1e-5)
    states = [layer for layer in chunked.cache.layers if not isinstance(layer, KVLayer)]
    assert len(states) == 2 and all(isinstance(s, LinearAttentionCacheLayerMixin) for s in states)
    assert chunked.cache.get_seq_length() == 50  # read from an attention layer
    out = continue_generation(chunked, [], SamplingParams(max_new_tokens=6))
    assert out.token_ids == expected


def test_hybrid_compression_keeps_the_budget_and_copies_do_not_share_states(hybrid):
    prefilled = prefill_context(hybrid, random_ids(80, seed=22), "snapkv", 24, 32)
    assert [layer.length for layer in kv_layers(prefilled.cache)] == [24, 24]
    copy = prefilled.cache.clone()
    for mine, theirs in zip(prefilled.cache.layers, copy.layers):
        if not isinstance(mine, KVLayer):
            assert mine is not theirs
            assert mine.recurrent_states[0].data_ptr() != theirs.recurrent_states[0].data_ptr()
            torch.testing.assert_close(mine.recurrent_states[0], theirs.recurrent_states[0])


def test_hybrid_captured_decoding_is_refused_with_a_way_out(hybrid):
    prefilled = prefill_context(hybrid, random_ids(40, seed=23), "h2o", 16, None)
    with pytest.raises(KvlabError, match="'static' or 'eager'"):
        continue_generation(prefilled, [], SamplingParams(max_new_tokens=2), decode="compiled")


def test_layers_with_a_state_beside_their_keys_and_values():
    """Falcon-H1: attention and a Mamba mixer side by side in every layer."""
    from transformers import AutoConfig
    from transformers.cache_utils import LinearAttentionCacheLayerMixin

    config = AutoConfig.for_model("falcon_h1", **TINY, head_dim=16, mamba_d_ssm=64, mamba_n_heads=4,
                                  mamba_d_head=16, mamba_d_state=8, mamba_n_groups=1)
    lm = loaded_from_config(config, "tiny-falcon-h1")
    ids = random_ids(50, seed=30)
    expected = plain_generate(lm, ids, 6)
    prefilled = prefill_context(lm, ids, "full", None, 16)
    layers = kv_layers(prefilled.cache)
    assert len(layers) == 3 and all(isinstance(layer, LinearAttentionCacheLayerMixin) for layer in layers)
    assert prefilled.cache.has_states
    copy = prefilled.cache.clone()  # the copy continues like the original: the states came along
    assert continue_generation(prefilled, [], SamplingParams(max_new_tokens=6)).token_ids == expected
    replay = dataclasses.replace(prefilled, cache=copy)
    assert continue_generation(replay, [], SamplingParams(max_new_tokens=6)).token_ids == expected
    prefilled = prefill_context(lm, ids, "snapkv", 16, 16)
    assert [layer.length for layer in kv_layers(prefilled.cache)] == [16, 16, 16]
    with pytest.raises(KvlabError, match="'static' or 'eager'"):
        continue_generation(prefilled, [], SamplingParams(max_new_tokens=2), decode="compiled")


def test_layer_kinds_the_cache_cannot_hold_raise_clearly():
    spec = ModelSpec("sparse-indexed", "deepseek_v32", 2, 4, 2, 16, torch.float32, 2048,
                     sliding_windows=(None, None), layer_types=("full_attention", "indexed_attention"))
    with pytest.raises(KvlabError, match=r"type indexed_attention.*kvlab.apply\(\)"):
        BudgetCache(spec)


@pytest.fixture(scope="module")
def chunked():
    from transformers import Llama4TextConfig

    config = Llama4TextConfig(**TINY, head_dim=16, attention_chunk_size=16, num_local_experts=2,
                              num_experts_per_tok=1, intermediate_size_mlp=128, no_rope_layers=[1, 1, 0])
    return loaded_from_config(config, "tiny-llama4", "sdpa")


def test_chunked_attention_matches_the_model_across_chunks(chunked):
    spec = chunked.spec
    assert spec.attention_chunk == 16
    assert spec.full_cache_bytes(45) == (16 + 16 + 45) * spec.layer_kv_bytes(0)
    assert spec.layer_types == ("chunked_attention", "chunked_attention", "full_attention")
    ids = random_ids(45, seed=24)  # three attention chunks, the last one partial
    expected = plain_generate(chunked, ids, 8)
    with torch.no_grad(), kvlab.apply(chunked.model, "full"):
        assert plain_generate(chunked, ids, 8) == expected
    for prefill_chunk in (None, 7, 16):
        prefilled = prefill_context(chunked, ids, "full", None, prefill_chunk)
        chunked_layers = [layer for idx, layer in prefilled.cache.kv_layers if spec.layer_types[idx] != "full_attention"]
        # the tokens of finished chunks are gone: only the current chunk's (32..44) stay
        assert all(sorted(layer.positions[0, 0].tolist()) == list(range(32, 45)) for layer in chunked_layers)
        assert kv_layers(prefilled.cache)[-1].length == 45
        out = continue_generation(prefilled, [], SamplingParams(max_new_tokens=8))
        assert out.token_ids == expected, prefill_chunk


def test_chunked_attention_under_a_budget_and_what_it_refuses(chunked):
    prefilled = prefill_context(chunked, random_ids(50, seed=25), "snapkv", 8, 16)
    assert [layer.length for layer in kv_layers(prefilled.cache)] == [2, 2, 8]  # 48, 49 left in the chunk
    assert len(continue_generation(prefilled, [], SamplingParams(max_new_tokens=4)).token_ids) == 4
    prefilled = prefill_context(chunked, random_ids(30, seed=25), "h2o", 8, None)
    with pytest.raises(KvlabError, match="use 'eager'"):
        continue_generation(prefilled, [], SamplingParams(max_new_tokens=2), decode="static")
    with pytest.raises(KvlabError, match="sparse prefill.*chunked attention"):
        prefill_context(chunked, random_ids(100, seed=28), kvlab.get_method("a_shape", n_init=4, n_local=32),
                        None, None)


def test_per_layer_attention_shapes(hybrid):
    from transformers import Gemma4TextConfig

    config = Gemma4TextConfig(**TINY, head_dim=16, global_head_dim=32, sliding_window=24)  # last layer global
    lm = loaded_from_config(config, "tiny-gemma4")
    spec = lm.spec
    assert (spec.num_kv_heads, spec.head_dim) == (2, 16) and spec.head_dim_of(2) == 32
    assert spec.kv_bytes_per_token == 2 * 2 * (16 + 16 + 32) * 4
    ids = random_ids(40, seed=29)
    expected = plain_generate(lm, ids, 6)
    prefilled = prefill_context(lm, ids, "snapkv", 64, 16)
    assert [layer.slot_bytes for layer in kv_layers(prefilled.cache)] == [spec.layer_kv_bytes(i) for i in range(3)]
    assert continue_generation(prefilled, [], SamplingParams(max_new_tokens=6)).token_ids == expected
    assert not hybrid.spec.layer_shapes  # uniform models keep the scalar geometry


def test_layers_sharing_keys_and_values_are_refused():
    from transformers import Gemma4TextConfig

    config = Gemma4TextConfig(**TINY, head_dim=16, global_head_dim=32, sliding_window=24, num_kv_shared_layers=1)
    with pytest.raises(KvlabError, match="shares keys and values between layers"):
        ModelSpec.from_config(config)


def test_masked_attention_with_sinks_matches_the_softmax_with_a_sink_column():
    from kvlab.attention import masked_attention

    torch.manual_seed(0)
    b, hq, hkv, n, d = 1, 4, 2, 9, 8
    q, k, v = torch.randn(b, hq, n, d), torch.randn(b, hkv, n, d), torch.randn(b, hkv, n, d)
    sinks = torch.randn(hq) * 2
    pos = torch.arange(n).expand(b, hkv, n)
    out, mass = masked_attention(q, k, v, pos, torch.arange(n), 0.35, window=5, want_key_mass=True, sinks=sinks)
    # gpt-oss's eager formula: softmax over [scores, sink], the sink's column dropped
    kk, vv = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    scores = q @ kk.transpose(-1, -2) * 0.35
    i = torch.arange(n)
    scores = scores.masked_fill(~((i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < 5)), float("-inf"))
    probs = torch.softmax(torch.cat([scores, sinks.view(1, hq, 1, 1).expand(b, hq, n, 1)], dim=-1), dim=-1)[..., :-1]
    torch.testing.assert_close(out, probs @ vv)
    torch.testing.assert_close(mass, probs.view(b, hkv, 2, n, n).sum(dim=(2, 3)))
    assert float(probs.sum(-1).max()) < 1  # the sink took some of every row


@pytest.fixture(scope="module")
def with_sinks():
    from transformers import GptOssConfig

    config = GptOssConfig(**TINY, head_dim=16, sliding_window=24, num_local_experts=2, num_experts_per_tok=1,
                          layer_types=["sliding_attention", "full_attention", "sliding_attention"])
    lm = loaded_from_config(config, "tiny-gpt-oss", "eager")
    for module in lm.model.modules():  # sinks large enough to matter
        if isinstance(getattr(module, "sinks", None), torch.Tensor):
            module.sinks.data.normal_(0.0, 2.0)
    return lm


def test_attention_sinks_match_the_model_under_apply_and_in_the_engine(with_sinks):
    ids = random_ids(60, seed=26)
    expected = plain_generate(with_sinks, ids, 6)
    with torch.no_grad(), kvlab.apply(with_sinks.model, "full"):
        assert plain_generate(with_sinks, ids, 6) == expected
    prefilled = prefill_context(with_sinks, ids, "full", None, 16)
    assert continue_generation(prefilled, [], SamplingParams(max_new_tokens=6)).token_ids == expected
    prefilled = prefill_context(with_sinks, ids, "h2o", 20, 16)  # decodes eagerly (auto) under its budget
    out = continue_generation(prefilled, [], SamplingParams(max_new_tokens=6))
    assert len(out.token_ids) == 6 and max(len_ for len_ in prefilled.cache.tokens_per_layer()) <= 20


def test_attention_sinks_refuse_what_has_no_sink_term(with_sinks):
    prefilled = prefill_context(with_sinks, random_ids(40, seed=27), "snapkv", 16, None)
    with pytest.raises(KvlabError, match="use 'eager'"):
        continue_generation(prefilled, [], SamplingParams(max_new_tokens=2), decode="static")
    with pytest.raises(KvlabError, match="sparse prefill.*attention-sink"):
        prefill_context(with_sinks, random_ids(200, seed=28), kvlab.get_method("a_shape", n_init=4, n_local=32),
                        None, None)


def test_latent_attention_is_refused_by_name():
    from transformers import AutoModelForCausalLM, DeepseekV3Config

    config = DeepseekV3Config(**{**TINY, "num_key_value_heads": 4}, kv_lora_rank=16, q_lora_rank=24,
                              qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8, n_routed_experts=4,
                              num_experts_per_tok=2, moe_intermediate_size=32, n_group=1, topk_group=1)
    model = AutoModelForCausalLM.from_config(config)
    before = model.config._attn_implementation
    with pytest.raises(KvlabError, match="latent attention"), kvlab.apply(model, "snapkv", budget=16):
        pass
    assert model.config._attn_implementation == before


def test_chunked_attention_contexts_past_one_chunk_are_not_replayed(chunked):
    from kvlab.shared_prefill import shareable

    snapkv = kvlab.get_method("snapkv")
    assert shareable(snapkv, chunked.spec, 16, None) and not shareable(snapkv, chunked.spec, 17, None)


def test_the_architecture_check_script_reports_passes_and_refusals(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "check_architectures.py"
    out = tmp_path / "arch.json"
    proc = subprocess.run([sys.executable, str(script), "qwen3_next", "bloom", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    assert set(results["qwen3_next"].values()) == {"ok"}
    assert results["bloom"]["build"] == "ok" and "no attention modules kvlab recognises" in results["bloom"]["engine"]
    assert "1/2 model types pass every check" in proc.stdout

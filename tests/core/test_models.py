"""Model loading: local directories, cached hub ids (never downloaded), random shapes, the ModelSpec."""

from __future__ import annotations

import pytest
import torch
from tinymodels import make_tiny, tiny_config

from kvlab.errors import KvlabError
from kvlab.models import load_model
from kvlab.models.spec import ModelSpec


def test_spec_reads_the_kv_geometry():
    spec = ModelSpec.from_config(tiny_config("gemma3"), dtype=torch.bfloat16)
    assert (spec.num_layers, spec.num_heads, spec.num_kv_heads, spec.head_dim) == (4, 4, 2, 16)
    assert spec.sliding_windows == (24, None, 24, None)
    assert spec.kv_bytes_per_token == 4 * 2 * 2 * 16 * 2
    assert spec.full_cache_bytes(100) == (24 + 100 + 24 + 100) * 2 * 2 * 16 * 2
    assert ModelSpec.from_config(tiny_config("mistral")).sliding_windows == (24, 24, 24)
    assert ModelSpec.from_config(tiny_config("llama")).rope["rope_type"] == "default"


def test_local_directory_round_trip(tmp_path, embedded):
    lm = make_tiny("llama")
    lm.model.save_pretrained(tmp_path, safe_serialization=True)
    embedded.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), device="cpu")
    assert loaded.spec.num_layers == 3 and loaded.tokenizer is not None
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, lm.model(ids).logits)


def test_architectures_without_sdpa_load_with_eager_attention(tmp_path, embedded):
    from tinymodels import TINY
    from transformers import AutoModelForCausalLM, Gemma2Config

    config = Gemma2Config(**{**TINY, "vocab_size": len(embedded.tokenizer)}, head_dim=16)
    try:
        AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    except ValueError as exc:  # transformers 5.2x: "does not support ... scaled_dot_product_attention"
        assert "scaled_dot_product_attention" in str(exc)
    else:
        pytest.skip("this transformers version runs Gemma 2 with SDPA (5.17 does)")
    AutoModelForCausalLM.from_config(config, attn_implementation="eager").save_pretrained(tmp_path)
    embedded.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), device="cpu")
    assert loaded.model.config._attn_implementation == "eager"


def test_pickled_weights_are_refused(tmp_path):
    (tmp_path / "config.json").write_text(tiny_config("llama").to_json_string())
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(KvlabError, match="does not load pickled weights"):
        load_model(str(tmp_path), device="cpu")


def test_uncached_hub_id_is_never_downloaded(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(KvlabError, match="never downloads"):
        load_model("someone/not-a-cached-model", device="cpu")


def test_unknown_alias_suggests_the_closest():
    with pytest.raises(KvlabError, match="Did you mean 'default'"):
        load_model("defautl", device="cpu")


def test_random_shape_has_the_named_geometry():
    lm = load_model("random:tiny-llama", device="cpu")
    assert lm.tokenizer is None and lm.spec.num_layers == 2 and lm.spec.num_kv_heads == 2
    with pytest.raises(KvlabError, match="llama-3.1-8b"):
        load_model("random:llama-8b", device="cpu")

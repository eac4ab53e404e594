"""Fixtures for the task tests: the embedded model's tokenizer (no weights) and a tiny random
Llama that uses it, so the evaluator runs end to end in milliseconds."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from kvlab.models.embedded import embedded_model_dir

    return AutoTokenizer.from_pretrained(str(embedded_model_dir()))


@pytest.fixture(scope="session")
def tiny_with_tokenizer(tokenizer):
    """A random-weight 2-layer Llama over the embedded tokenizer's vocabulary (fast, meaningless output)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from kvlab.models.loading import LoadedModel
    from kvlab.models.spec import ModelSpec

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=8192,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    spec = ModelSpec.from_config(config, dtype=torch.float32, name="tiny-llama-tok")
    return LoadedModel(model=model, tokenizer=tokenizer, spec=spec, name="tiny-llama-tok", source="test")

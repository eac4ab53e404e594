"""Named model shapes for random-weight models (speed and memory do not need trained weights)."""

from __future__ import annotations

from typing import Any

import torch

from kvlab.errors import UnknownNameError

SHAPES: dict[str, dict[str, Any]] = {
    # Llama-3.1-8B: 32 layers, 32 query / 8 KV heads of 128, 128K context, llama3 RoPE scaling.
    "llama-3.1-8b": dict(
        model_type="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
        num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
        max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=False,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192},
    ),
    # SmolLM2-135M: the embedded model's shape.
    "smollm2-135m": dict(
        model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
        num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, head_dim=64,
        max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
    ),
    # A tiny Llama for tests and smoke runs.
    "tiny-llama": dict(
        model_type="llama", vocab_size=256, hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        max_position_embeddings=4096, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    ),
}


def names() -> list[str]:
    return sorted(SHAPES)


def config_for(shape: str):
    from transformers import AutoConfig

    try:
        params = dict(SHAPES[shape])
    except KeyError:
        raise UnknownNameError("model shape", shape, SHAPES) from None
    model_type = params.pop("model_type")
    return AutoConfig.for_model(model_type, **params)


def random_model(shape: str, dtype: torch.dtype = torch.float32, seed: int = 0,
                 device: str | torch.device = "cpu"):
    """A model of the named shape with random weights, created directly in ``dtype`` on ``device``
    (an 8B model initialised on the CPU and then copied would take minutes; on the GPU, seconds)."""
    from transformers import AutoModelForCausalLM

    config = config_for(shape)
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    finally:
        torch.set_default_dtype(previous)
    return model.to(dtype)

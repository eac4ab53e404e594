"""ModelSpec: the KV geometry of a model, read once from its Hugging Face config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from kvlab.errors import KvlabError

# transformers' names for the kinds of decoder layer (``config.layer_types``, the cache's layer classes)
KV_LAYER_TYPES = ("full_attention", "sliding_attention", "chunked_attention")
# layers that hold no keys and values: a recurrent/convolution state (hybrid models such as Qwen3.5,
# Qwen3-Next, LFM2) or nothing (MoE/MLP-only layers)
STATE_LAYER_TYPES = ("linear_attention", "conv", "mamba", "dummy", "moe", "mlp")


@dataclass(frozen=True)
class ModelSpec:
    """What budget arithmetic and the attention mechanism need to know about a model.

    Attributes:
        name: a label for reports (model id or path).
        model_type: the HF ``model_type`` (``llama``, ``qwen2`` ...).
        num_layers, num_heads, num_kv_heads, head_dim: attention geometry (of most layers where it varies).
        dtype: the dtype the KV cache is stored in (the model's compute dtype).
        max_positions: the trained context window (``max_position_embeddings``).
        rope: the ``rope_parameters`` dict (``rope_type``, ``rope_theta``, scaling fields) or {}.
        sliding_windows: per layer, the sliding-window size or None for full attention.
        layer_types: per layer, transformers' layer type (``full_attention``, ``sliding_attention``,
            ``chunked_attention``, ``linear_attention`` ...); all attention layers when empty.
        attention_chunk: the chunk of ``chunked_attention`` layers (Llama 4), else None.
        conv_states: states per linear-attention layer (transformers' ``number_of_conv_states``).
        layer_shapes: per layer ``(kv_heads, head_dim)`` where layers differ (Gemma 4's global layers),
            else empty.
    """

    name: str
    model_type: str
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    dtype: torch.dtype
    max_positions: int
    rope: dict[str, Any] = field(default_factory=dict)
    sliding_windows: tuple[int | None, ...] = ()
    layer_types: tuple[str, ...] = ()
    attention_chunk: int | None = None
    conv_states: int = 1
    layer_shapes: tuple[tuple[int, int], ...] = ()

    @classmethod
    def from_config(cls, config: Any, dtype: torch.dtype | None = None, name: str | None = None) -> ModelSpec:
        config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        try:
            num_layers = int(config.num_hidden_layers)
            num_heads = int(config.num_attention_heads)
        except AttributeError as exc:
            raise KvlabError(
                f"model type '{getattr(config, 'model_type', '?')}' is not a decoder with standard attention "
                f"(config has no {exc.name}); kvlab supports Hugging Face causal LMs with multi-head attention"
            ) from None
        if getattr(config, "num_kv_shared_layers", 0):
            raise KvlabError(
                f"model type '{config.model_type}' shares keys and values between layers "
                f"(num_kv_shared_layers={config.num_kv_shared_layers}), which kvlab's cache does not support yet"
            )
        shapes = _attention_shapes(config, num_layers, num_heads)
        num_kv_heads, head_dim = max(set(shapes), key=shapes.count)
        if dtype is None:
            dtype = getattr(config, "dtype", None) or torch.float32
            if isinstance(dtype, str):
                dtype = getattr(torch, dtype)
        max_positions = int(getattr(config, "max_position_embeddings", 0) or 0)
        layer_types = tuple(getattr(config, "layer_types", None) or ())[:num_layers]
        chunk = getattr(config, "attention_chunk_size", None) if "chunked_attention" in layer_types else None
        rope = dict(getattr(config, "rope_parameters", None) or {})
        return cls(
            name=name or getattr(config, "_name_or_path", "") or config.model_type,
            model_type=config.model_type,
            num_layers=num_layers,
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
            head_dim=head_dim,
            dtype=dtype,
            max_positions=max_positions,
            rope=rope,
            sliding_windows=tuple(_sliding_windows(config, num_layers)),
            layer_types=layer_types,
            attention_chunk=int(chunk) if chunk else None,
            conv_states=int(getattr(config, "number_of_conv_states", 1) or 1),
            layer_shapes=tuple(shapes) if len(set(shapes)) > 1 else (),
        )

    @property
    def dtype_bytes(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()

    def chunk_of(self, layer_idx: int) -> int | None:
        """The attention chunk of layer ``layer_idx`` if it is a chunked-attention layer (Llama 4), else None."""
        chunked = self.attention_chunk and self.layer_types[layer_idx] == "chunked_attention"
        return self.attention_chunk if chunked else None

    def shape_of(self, layer_idx: int) -> tuple[int, int]:
        """``(kv_heads, head_dim)`` of layer ``layer_idx``."""
        return self.layer_shapes[layer_idx] if self.layer_shapes else (self.num_kv_heads, self.head_dim)

    def head_dim_of(self, layer_idx: int) -> int:
        """The head size of layer ``layer_idx``."""
        return self.shape_of(layer_idx)[1]

    def layer_kv_bytes(self, layer_idx: int) -> int:
        """Bytes one token's keys and values take in layer ``layer_idx``: 2 * kv_heads * head_dim * dtype bytes."""
        kv_heads, head_dim = self.shape_of(layer_idx)
        return 2 * kv_heads * head_dim * self.dtype_bytes

    def holds_kv(self, layer_idx: int) -> bool:
        """Whether layer ``layer_idx`` keeps keys and values (not a linear-attention/state or MLP layer)."""
        return not self.layer_types or self.layer_types[layer_idx] not in STATE_LAYER_TYPES

    @property
    def kv_layers(self) -> tuple[int, ...]:
        """The indices of the layers that keep keys and values (all of them but in hybrid models)."""
        return tuple(idx for idx in range(self.num_layers) if self.holds_kv(idx))

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes one token takes across all KV layers (the full-cache cost of a token)."""
        return sum(self.layer_kv_bytes(idx) for idx in self.kv_layers)

    def full_cache_bytes(self, num_tokens: int) -> int:
        """What an uncompressed cache holds for ``num_tokens`` tokens (sliding layers hold their window,
        chunked-attention layers at most one chunk)."""
        windows = self.sliding_windows or (None,) * self.num_layers
        total = 0
        for idx in self.kv_layers:
            limit = self.chunk_of(idx) or windows[idx]
            total += self.layer_kv_bytes(idx) * (num_tokens if limit is None else min(num_tokens, limit))
        return total

    @property
    def gqa_group(self) -> int:
        return self.num_heads // self.num_kv_heads


def _attention_shapes(config: Any, num_layers: int, num_heads: int) -> list[tuple[int, int]]:
    """``(kv_heads, head_dim)`` of every layer, from the config or, where those attributes vary per
    layer (transformers' heterogeneous configs, Gemma 4), from ``config.per_layer_config``."""

    def shape(layer_config: Any) -> tuple[int, int]:
        kv_heads = getattr(layer_config, "num_key_value_heads", None) or num_heads
        return int(kv_heads), int(getattr(layer_config, "head_dim", None) or config.hidden_size // num_heads)

    try:
        return [shape(config)] * num_layers
    except (AttributeError, RuntimeError):  # transformers: "a per-layer attribute"
        layer_configs = getattr(config, "per_layer_config", None)
        if layer_configs is None:
            raise
        return [shape(layer_config) for layer_config in list(layer_configs)[:num_layers]]


def _sliding_windows(config: Any, num_layers: int) -> list[int | None]:
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        return [window if t in ("sliding_attention", "hybrid_sliding") else None for t in layer_types[:num_layers]]
    if window and getattr(config, "use_sliding_window", True):
        return [int(window)] * num_layers
    return [None] * num_layers

"""Re-rotating RoPE'd queries and keys to other positions (LM-Infinite's distance limit).

Keys in kvlab's cache and the queries the attention function receives already carry the rotary
embedding of their own position ``p``. Because RoPE is a rotation, a vector rotated at ``p`` is
moved to position ``p + delta`` by rotating it by ``delta`` with the same frequencies, whatever the
scaling scheme (``linear``, ``llama3``, ``yarn``... change the frequencies, not this identity; the
yarn ``attention_factor`` scales magnitudes and is left untouched).

Only the first ``2 * len(inv_freq)`` dimensions are rotated (partial rotary models rotate a prefix),
in transformers' ``rotate_half`` layout.
"""

from __future__ import annotations

import torch

from kvlab.errors import KvlabError
from kvlab.models.spec import ModelSpec


def rope_parameters(spec: ModelSpec, layer_idx: int) -> dict:
    """The RoPE parameters of ``layer_idx`` (per layer type for models such as Gemma 3)."""
    rope = dict(spec.rope or {})
    if rope and all(isinstance(v, dict) for v in rope.values()):  # {"full_attention": {...}, ...}
        windows = spec.sliding_windows or (None,) * spec.num_layers
        layer_type = "sliding_attention" if windows[layer_idx] is not None else "full_attention"
        if layer_type not in rope:
            raise KvlabError(f"{spec.name} has no RoPE parameters for {layer_type} layers")
        rope = dict(rope[layer_type])
    return rope


def inv_freq(spec: ModelSpec, layer_idx: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Inverse frequencies ``(rot_dim / 2,)`` float32 of the rotary embedding of ``layer_idx``.

    ``default`` RoPE is computed here; scaled variants come from transformers' own initialisers so
    they match the model exactly. ``dynamic`` RoPE equals ``default`` inside the trained window.
    """
    rope = rope_parameters(spec, layer_idx)
    if not rope:
        raise KvlabError(f"{spec.name} declares no rotary embedding (rope_parameters); a RoPE model is needed")
    kind = rope.get("rope_type", rope.get("type", "default"))
    theta = float(rope.get("rope_theta", 10000.0))
    head_dim = spec.head_dim_of(layer_idx)
    dim = int(head_dim * float(rope.get("partial_rotary_factor", 1.0)))
    if kind in ("default", "dynamic"):
        exponent = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
        return (1.0 / theta**exponent).to(device)
    from transformers import PretrainedConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    if kind not in ROPE_INIT_FUNCTIONS:
        raise KvlabError(f"RoPE type '{kind}' of {spec.name} is not supported for re-rotation")
    config = PretrainedConfig()
    config.rope_parameters = rope
    config.head_dim = head_dim
    config.hidden_size = head_dim * spec.num_heads
    config.num_attention_heads = spec.num_heads
    config.max_position_embeddings = spec.max_positions
    try:
        freqs, _ = ROPE_INIT_FUNCTIONS[kind](config, device)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise KvlabError(f"cannot compute the '{kind}' RoPE frequencies of {spec.name}: {exc}") from None
    return freqs.float().to(device)


def rotate(x: torch.Tensor, delta: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate RoPE'd vectors by ``delta`` positions.

    Args:
        x: ``(..., n, D)`` vectors carrying RoPE of some positions.
        delta: ``(n,)`` (or broadcastable to ``x.shape[:-1]``) signed position shifts.
        freqs: ``(R,)`` inverse frequencies; the first ``2R`` dims of ``x`` are rotated.
    Returns:
        ``x`` moved by ``delta``: same shape and dtype (computed in float32; angles in float64 so
        shifts of a million positions stay exact).
    """
    rot = 2 * freqs.shape[0]
    angles = delta.to(torch.float64).unsqueeze(-1) * freqs.to(torch.float64)  # (..., n, R)
    angles = torch.cat([angles, angles], dim=-1)
    cos, sin = angles.cos().float(), angles.sin().float()
    head, rest = x[..., :rot].float(), x[..., rot:]
    half = rot // 2
    rotated_half = torch.cat([-head[..., half:], head[..., :half]], dim=-1)
    out = head * cos + rotated_half * sin
    if rest.shape[-1]:
        out = torch.cat([out, rest.float()], dim=-1)
    return out.to(x.dtype)

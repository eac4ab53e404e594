"""The layers of a :class:`~kvlab.cache.BudgetCache` for hybrid models.

Hybrid models mix attention with linear-attention or state-space mixers whose cache is a fixed-size
state, not keys and values: Qwen3.5 and Qwen3-Next (``linear_attention`` layers between attention
layers), LFM2 (``conv``), Falcon-H1 (``hybrid``: attention and a Mamba mixer side by side in every
layer). kvlab's budget applies to the keys and values only; the states are transformers' own cache
layers (built as its ``DynamicCache`` builds them), which the model updates through the cache's
``update_conv_state`` / ``update_recurrent_state`` and kvlab never touches.
"""

from __future__ import annotations

import copy
import functools
import inspect
from typing import Any

from transformers.cache_utils import LinearAttentionLayer

from kvlab.cache import KVLayer, KVMeter
from kvlab.errors import KvlabError
from kvlab.models.spec import KV_LAYER_TYPES, STATE_LAYER_TYPES, ModelSpec

# layers holding keys and values *and* a linear-attention state (transformers' type names)
STATE_KV_LAYER_TYPES = ("hybrid", "hybrid_sliding")


class StateKVLayer(KVLayer, LinearAttentionLayer):
    """A budgeted KV layer that also keeps transformers' linear-attention state (Falcon-H1's layers).

    The keys and values behave as in :class:`KVLayer` (its methods come first); the conv/recurrent
    states are :class:`transformers.cache_utils.LinearAttentionLayer`'s, as in transformers'
    ``LinearAttentionAndFullAttentionLayer``.
    """

    def __init__(self, sliding_window: int | None = None, reserve: int = 0, meter: KVMeter | None = None,
                 number_of_states: int = 1):
        KVLayer.__init__(self, sliding_window, reserve, meter)
        LinearAttentionLayer.__init__(self, number_of_states=number_of_states)

    def lazy_initialization(self, *args: Any, **kwargs: Any) -> None:
        if args:  # update(key_states, value_states)
            KVLayer.lazy_initialization(self, *args)
        else:  # update_conv_state / update_recurrent_state: conv_states=, recurrent_states=, state_idx=
            LinearAttentionLayer.lazy_initialization(self, **kwargs)

    def clone(self, meter: KVMeter, spare: int | None = None) -> StateKVLayer:
        other = KVLayer.clone(self, meter, spare)
        for name in _state_attributes():
            setattr(other, name, copy.deepcopy(getattr(self, name)))
        return other


@functools.cache
def _state_attributes() -> tuple[str, ...]:
    """The attributes ``LinearAttentionLayer.__init__`` sets (the state and its bookkeeping)."""
    probe = LinearAttentionLayer.__new__(LinearAttentionLayer)
    LinearAttentionLayer.__init__(probe, number_of_states=1)
    return tuple(name for name in vars(probe) if name not in ("device", "dtype"))


def build_layers(spec: ModelSpec, reserve: int, meter: KVMeter) -> list:
    """One cache layer per decoder layer of ``spec``."""
    known = KV_LAYER_TYPES + STATE_LAYER_TYPES + STATE_KV_LAYER_TYPES
    unknown = sorted({t for t in spec.layer_types if t not in known})
    if unknown:
        raise KvlabError(
            f"{spec.name} has layers of type {', '.join(unknown)}, which kvlab's budgeted cache does not hold "
            f"(it holds {', '.join(KV_LAYER_TYPES + STATE_KV_LAYER_TYPES)} layers and keeps linear-attention "
            "states as they are); kvlab.apply() around the model's own generate() may still work"
        )
    windows = spec.sliding_windows or (None,) * spec.num_layers
    layers = []
    for idx, window in enumerate(windows):
        kind = spec.layer_types[idx] if spec.layer_types else "full_attention"
        if kind in STATE_KV_LAYER_TYPES:
            layers.append(StateKVLayer(window, reserve, meter, number_of_states=spec.conv_states))
        elif spec.holds_kv(idx):
            layers.append(KVLayer(window, reserve=reserve, meter=meter))
        else:
            layers.append(_state_layer(spec, kind))
    return layers


def _state_layer(spec: ModelSpec, kind: str):
    """transformers' own cache layer for a layer without keys and values (a recurrent or convolution
    state, or nothing), built the way its DynamicCache builds it."""
    from transformers.cache_utils import DYNAMIC_LAYER_TYPE_MAPPING

    layer_class = DYNAMIC_LAYER_TYPE_MAPPING.get(kind)
    if layer_class is None:
        raise KvlabError(f"this transformers version has no cache layer for '{kind}' layers ({spec.name})")
    params = inspect.signature(layer_class.__init__).parameters
    return layer_class(number_of_states=spec.conv_states) if "number_of_states" in params else layer_class()

"""The only place that touches transformers' attention registry.

kvlab registers one attention function under the name ``kvlab`` with
``transformers.AttentionInterface`` while at least one :func:`kvlab.apply` is active, switches the
applied model to it, and restores the model's previous implementation on exit. Nothing changes
at import time; no module is patched; no hook is registered.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any

import torch

from kvlab.errors import KvlabError

ATTN_NAME = "kvlab"
_lock = threading.Lock()
_active: dict[int, Any] = {}  # id(attention config) -> state


def attention_configs(model: Any) -> dict[int, Any]:
    """The config objects the model's attention modules read ``_attn_implementation`` from."""
    configs = {}
    for module in model.modules():
        if hasattr(module, "layer_idx") and hasattr(module, "kv_lora_rank"):
            raise KvlabError(
                f"{type(model).__name__} uses multi-head latent attention (DeepSeek-V2/V3, MiniCPM3), whose "
                "cached keys and values differ in head size; kvlab's cache and kernels do not handle it yet"
            )
        # the head size is ``head_dim`` in most architectures, ``head_size`` in GPT-NeoX (Pythia)
        is_attention = hasattr(module, "head_dim") or hasattr(module, "head_size")
        if is_attention and hasattr(module, "layer_idx") and hasattr(module, "config") \
                and _calls_attention_interface(type(module)):
            configs[id(module.config)] = module.config
    if not configs:
        import transformers

        raise KvlabError(
            f"{type(model).__name__} has no attention modules kvlab recognises (modules with layer_idx, "
            "head_dim and config that call transformers' attention interface); kvlab supports Hugging Face "
            "decoder-only causal LMs whose attention goes through that interface (BLOOM, MPT, GPT-Neo and "
            f"XGLM, for instance, compute attention inline; so do others in older transformers releases, "
            f"this is {transformers.__version__})"
        )
    return configs


@functools.cache
def _calls_attention_interface(module_type: type) -> bool:
    """Whether the module's forward dispatches through transformers' attention interface (where
    kvlab's attention can take over); modules that compute attention inline would silently ignore it.
    True when the source cannot be read."""
    try:
        source = inspect.getsource(module_type.forward)
    except (OSError, TypeError):
        return True
    return any(name in source for name in ("ALL_ATTENTION_FUNCTIONS", "attention_interface", "AttentionInterface"))


def has_attention_sinks(model: Any) -> bool:
    """Whether the model's attention modules carry learned attention-sink logits (``sinks``, passed to
    the attention function as ``s_aux``: gpt-oss, Granite-SWA, MiMo-V2-Flash ...)."""
    return any(hasattr(m, "layer_idx") and isinstance(getattr(m, "sinks", None), torch.Tensor)
               for m in model.modules())


def lookup(config: Any) -> Any | None:
    """The active state for the model an attention module belongs to."""
    return _active.get(id(config))


def activate(model: Any, state: Any, attention_fn: Callable) -> str:
    """Switch ``model`` to kvlab's attention; return the implementation to restore."""
    from transformers import AttentionInterface

    configs = attention_configs(model)
    with _lock:
        if any(key in _active for key in configs):
            raise KvlabError("kvlab.apply() is already active on this model; finish that block first")
        AttentionInterface.register(ATTN_NAME, attention_fn)
        previous = model.config._attn_implementation or "sdpa"
        try:
            model.set_attn_implementation(ATTN_NAME)
        except Exception:
            _drop_registration_if_idle()
            raise
        for key in configs:
            _active[key] = state
    return previous


def deactivate(model: Any, previous: str) -> None:
    """Restore ``previous`` and forget the model's state (also when the body raised)."""
    configs = attention_configs(model)
    with _lock:
        for key in configs:
            _active.pop(key, None)
        try:
            model.set_attn_implementation(previous)
        finally:
            _drop_registration_if_idle()


def is_registered() -> bool:
    from transformers import AttentionInterface

    return ATTN_NAME in AttentionInterface._global_mapping


def _drop_registration_if_idle() -> None:
    from transformers import AttentionInterface

    if not _active:
        AttentionInterface._global_mapping.pop(ATTN_NAME, None)


@functools.cache
def _cache_param(model_type: type) -> str:
    """The forward argument that takes the KV cache: ``cache`` from transformers 5.2x on
    (``past_key_values`` is deprecated there, to be removed in 5.40), ``past_key_values`` before."""
    params = inspect.signature(model_type.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """``{name: cache}`` for ``model(...)`` / ``model.generate(...)`` under this transformers version."""
    return {_cache_param(type(model)): cache}


def output_cache(output: Any) -> Any:
    """The cache a forward returned (``output.cache`` or, before the rename, ``output.past_key_values``)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values

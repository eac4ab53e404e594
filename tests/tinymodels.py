"""Tiny random-weight models built from configs, for unit tests (import from here, not from conftest).

They cover the architectures kvlab must handle: Llama (GQA), Qwen2 (attention bias), Mistral
(sliding window on every layer), a Gemma-3-like model (alternating sliding and full layers,
query/key norms), GPT-NeoX (Pythia: partial rotary, ``head_size``) and Qwen3-Next (a hybrid:
linear-attention layers between the full-attention layers, whose states transformers' own cache layers keep).
They run in milliseconds on CPU.
"""

from __future__ import annotations

import torch

TINY = dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)


def tiny_config(arch: str):
    from transformers import (
        Gemma3TextConfig,
        GPTNeoXConfig,
        LlamaConfig,
        MistralConfig,
        Qwen2Config,
        Qwen3NextConfig,
    )

    if arch == "llama":
        return LlamaConfig(**TINY, head_dim=16)
    if arch == "qwen2":
        return Qwen2Config(**TINY)
    if arch == "mistral":
        return MistralConfig(**TINY, head_dim=16, sliding_window=24)
    if arch == "gemma3":
        return Gemma3TextConfig(
            **{**TINY, "num_hidden_layers": 4}, head_dim=16, sliding_window=24,
            layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
            query_pre_attn_scalar=16, attn_logit_softcapping=None, final_logit_softcapping=None,
        )
    if arch == "gpt_neox":
        return GPTNeoXConfig(**{k: v for k, v in TINY.items() if k != "num_key_value_heads"}, rotary_pct=0.5,
                             eos_token_id=None)
    if arch == "qwen3_next":
        return Qwen3NextConfig(
            **{**TINY, "num_hidden_layers": 4}, head_dim=16, num_experts=4, num_experts_per_tok=2,
            moe_intermediate_size=32, shared_expert_intermediate_size=32, linear_num_value_heads=2,
            linear_num_key_heads=2, linear_key_head_dim=16, linear_value_head_dim=16,
            layer_types=["linear_attention", "full_attention", "linear_attention", "full_attention"],
        )
    raise ValueError(arch)


ARCHS = ("llama", "qwen2", "mistral", "gemma3", "gpt_neox", "qwen3_next")


def make_tiny(arch: str, seed: int = 0):
    """A LoadedModel around a random-weight tiny model of ``arch`` (no tokenizer)."""
    return loaded_from_config(tiny_config(arch), f"tiny-{arch}", "sdpa", seed)


def loaded_from_config(config, name: str, attn_implementation: str | None = None, seed: int = 0):
    """A LoadedModel around a random-weight model built from ``config`` (no tokenizer, float32);
    ``attn_implementation`` None: transformers' default for the architecture."""
    from transformers import AutoModelForCausalLM

    from kvlab.models.loading import LoadedModel
    from kvlab.models.spec import ModelSpec

    torch.manual_seed(seed)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = AutoModelForCausalLM.from_config(config, **kwargs).eval()
    spec = ModelSpec.from_config(config, dtype=torch.float32, name=name)
    return LoadedModel(model=model, tokenizer=None, spec=spec, name=name, source="test")


def random_ids(n: int, vocab: int = TINY["vocab_size"], seed: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n,), generator=g).tolist()


class LargestAllocation:
    """Context manager recording the largest new storage (bytes) any aten op returns inside it.

    Outputs sharing the storage of a ``known`` tensor (views, in-place writes) do not count. Used to
    show that a step never copies a cache-sized tensor.
    """

    def __init__(self, *known: torch.Tensor):
        from torch.utils._python_dispatch import TorchDispatchMode

        owner = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in out if isinstance(out, (tuple, list)) else (out,):
                    if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in owner.known:
                        owner.largest = max(owner.largest, t.untyped_storage().nbytes())
                return out

        self.known = {t.untyped_storage().data_ptr() for t in known}
        self.largest = 0
        self._mode = _Mode()

    def __enter__(self):
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self._mode.__exit__(*exc)


# Python source for a subprocess probe of glibc's allocator: ``mapped(nbytes)`` allocates a torch
# tensor of that size and returns 1 if glibc mapped it afresh (above the mmap threshold), 0 if it came
# from the heap (mallinfo2, glibc >= 2.33).
MAPPED_PROBE = """
import ctypes, torch

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2

def mapped(nbytes):
    before = libc.mallinfo2().hblks
    t = torch.empty(nbytes, dtype=torch.uint8)
    return libc.mallinfo2().hblks - before
"""


def kv_layers(cache) -> list:
    """The layers of a :class:`kvlab.BudgetCache` that keep keys and values (hybrid models also have
    linear-attention state layers)."""
    return [layer for _, layer in cache.kv_layers]

"""kvlab: long-context inference under a KV-cache budget.

Python API::

    import kvlab
    lm = kvlab.load_model("default")                       # embedded SmolLM2-135M-Instruct
    out = kvlab.generate(lm, document, question="Who signs?", method="snapkv", budget="25%")
    print(out.text, out.stats.kv_bytes)

    with kvlab.apply(lm.model, "snapkv", budget="1024"):   # around a plain transformers generate
        lm.model.generate(...)

The names below are imported on first use (PEP 562), so ``import kvlab`` -- and every ``kvlab``
command's ``--help`` and argument errors -- do not pay for importing torch and transformers.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "apply": "kvlab.apply_method",
    "Budget": "kvlab.budget",
    "BudgetCache": "kvlab.cache",
    "Generation": "kvlab.engine",
    "GenerationStats": "kvlab.engine",
    "continue_generation": "kvlab.engine",
    "generate": "kvlab.engine",
    "prefill_context": "kvlab.engine",
    "KvlabError": "kvlab.errors",
    "METHODS": "kvlab.methods",
    "Method": "kvlab.methods",
    "get_method": "kvlab.methods",
    "LoadedModel": "kvlab.models",
    "ModelSpec": "kvlab.models",
    "load_model": "kvlab.models",
    "PromptParts": "kvlab.prompting",
    "render": "kvlab.prompting",
    "SamplingParams": "kvlab.sampling",
}

__all__ = [  # the keys of _EXPORTS, written out for tools that read __all__ without running it
    "METHODS", "Budget", "BudgetCache", "Generation", "GenerationStats", "KvlabError", "LoadedModel",
    "Method", "ModelSpec", "PromptParts", "apply", "continue_generation", "generate", "get_method",
    "SamplingParams", "load_model", "prefill_context", "render",
]


def __getattr__(name: str) -> Any:
    """An exported name, or a submodule (``kvlab.sampling`` works after a bare ``import kvlab``)."""
    module = _EXPORTS.get(name)
    if module is None:
        if name.startswith("_") or importlib.util.find_spec(f"kvlab.{name}") is None:
            raise AttributeError(f"module 'kvlab' has no attribute {name!r}")
        return importlib.import_module(f"kvlab.{name}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from kvlab.apply_method import apply
    from kvlab.budget import Budget
    from kvlab.cache import BudgetCache
    from kvlab.engine import Generation, GenerationStats, continue_generation, generate, prefill_context
    from kvlab.errors import KvlabError
    from kvlab.methods import METHODS, Method, get_method
    from kvlab.models import LoadedModel, ModelSpec, load_model
    from kvlab.prompting import PromptParts, render
    from kvlab.sampling import SamplingParams

"""kvlab: long-context inference under a KV-cache budget.

Python API::

    import kvlab
    lm = kvlab.load_model("default")                       # embedded SmolLM2-135M-Instruct
    out = kvlab.generate(lm, document, question="Who signs?", method="snapkv", budget="25%")
    print(out.text, out.stats.kv_bytes)

    with kvlab.apply(lm.model, "snapkv", budget="1024"):   # around a plain transformers generate
        lm.model.generate(...)
"""

from kvlab.apply import apply
from kvlab.budget import Budget
from kvlab.cache import BudgetCache
from kvlab.engine import Generation, GenerationStats, continue_generation, generate, prefill_context
from kvlab.errors import KvlabError
from kvlab.methods import METHODS, Method, get_method
from kvlab.models import LoadedModel, ModelSpec, load_model
from kvlab.prompting import PromptParts, render

__version__ = "0.1.0"

__all__ = [
    "METHODS", "Budget", "BudgetCache", "Generation", "GenerationStats", "KvlabError", "LoadedModel",
    "Method", "ModelSpec", "PromptParts", "apply", "continue_generation", "generate", "get_method",
    "load_model", "prefill_context", "render",
]

"""A-shape sparse prefill: attention sinks plus a local window for every prompt query."""

from __future__ import annotations

from dataclasses import dataclass

from kvlab.errors import KvlabError
from kvlab.methods import register_method
from kvlab.methods.base import LayerContext, Method
from kvlab.sparse.patterns import SinkWindow
from kvlab.sparse.prefill import SparsePrefill, check_kernel, fixed


@register_method
@dataclass(frozen=True)
class AShape(Method):
    """A-shape attention during prefill (MInference 1.0, Jiang et al., NeurIPS 2024).

    https://arxiv.org/abs/2407.02490 -- MInference's static "A-shape" head pattern: while the prompt
    is prefilled, every query attends only the first ``n_init`` tokens (attention sinks) and its
    ``n_local`` most recent tokens (StreamingLLM's mask applied to prefill). The KV cache is kept
    whole, so decoding and the question after the context see every token.

    Defaults are MInference's A-shape baseline (``n_init=128, n_local=3968``). Differences: the
    pattern is applied to every head of every layer (MInference's offline search may choose it per
    head); ``kernel`` picks kvlab's implementation (``auto``: flex_attention on CUDA, the blocked
    torch kernel on CPU). A prompt shorter than ``n_local`` is attended densely (same result).
    """

    name = "a_shape"
    family = "sparse prefill (static pattern)"
    kind = "sparse_prefill"
    phase = "none"
    paper = "Jiang et al. 2024, MInference 1.0: Accelerating Pre-filling for Long-Context LLMs via Dynamic Sparse Attention"
    url = "https://arxiv.org/abs/2407.02490"

    n_init: int = 128
    n_local: int = 3968
    kernel: str = "auto"

    def __post_init__(self):
        if self.n_init < 0 or self.n_local < 1:
            raise KvlabError(f"a_shape needs n_init >= 0 and n_local >= 1 (got {self.n_init}, {self.n_local})")
        check_kernel(self.kernel)

    def prefill_pattern(self, ctx: LayerContext) -> SparsePrefill | None:
        if int(ctx.newest) < self.n_local:  # every held key is within the window: dense is the same
            return None
        return fixed(SinkWindow(self.n_init, self.n_local), self.kernel)

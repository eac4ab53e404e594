"""LM-Infinite: the Λ-shaped attention mask with a distance limit."""

from __future__ import annotations

from dataclasses import dataclass

from kvlab.errors import KvlabError
from kvlab.methods import register_method
from kvlab.methods.base import LayerContext, Method
from kvlab.sparse.lambda_shape import LambdaShape
from kvlab.sparse.prefill import SparsePrefill, check_kernel, fixed
from kvlab.sparse.rope import inv_freq


@register_method
@dataclass(frozen=True)
class LMInfinite(Method):
    """LM-Infinite: Zero-Shot Extreme Length Generalization for LLMs (Han et al., NAACL 2024).

    https://arxiv.org/abs/2308.16137 -- (1) a Λ-shaped mask: each token attends the first
    ``n_global`` tokens and its ``n_local`` nearest tokens; (2) a distance limit: relative distances
    are capped at ``limit_distance`` (= the pre-training length), so no query sees a distance the
    model was not trained on. Following the authors' implementation, global tokens outside the local
    window are scored at exactly ``limit_distance`` (query rotated to that position, key un-rotated);
    tokens inside the window keep their true distance. Defaults: ``n_global=10`` (the authors'
    ``convert_llama_model(model, 4096, 10)``), ``n_local = limit_distance = L_pretrain`` (0 here
    means the model's ``max_position_embeddings``).

    What kvlab implements and simplifies: the Λ mask and the distance limit during prefill, exact
    (flex_attention on CUDA, the blocked kernel on CPU); the KV cache is kept whole. Decoding and the
    question suffix attend densely over the cache, and kvlab's engine still refuses prompts longer
    than the trained window, so this is the paper's *prefill* and no length extension yet; with the
    defaults a prompt inside the window is attended densely (identical to the model). The optional
    top-k middle tokens of the paper's later version are not implemented.
    """

    name = "lm_infinite"
    family = "sparse prefill / context extension"
    kind = "sparse_prefill"
    phase = "none"
    paper = "Han et al. 2024, LM-Infinite: Zero-Shot Extreme Length Generalization for Large Language Models"
    url = "https://arxiv.org/abs/2308.16137"

    n_global: int = 10
    n_local: int = 0
    limit_distance: int = 0
    kernel: str = "auto"

    def __post_init__(self):
        if self.n_global < 0 or self.n_local < 0 or self.limit_distance < 0:
            raise KvlabError("lm_infinite's n_global, n_local and limit_distance must be >= 0 (0 = L_pretrain)")
        check_kernel(self.kernel)

    def window(self, ctx: LayerContext) -> tuple[int, int]:
        """``(n_local, limit_distance)`` resolved against the model."""
        local = self.n_local or ctx.spec.max_positions
        if not local:
            raise KvlabError(f"{ctx.spec.name} declares no trained window; give lm_infinite an n_local")
        return local, self.limit_distance or local

    def prefill_pattern(self, ctx: LayerContext) -> SparsePrefill | None:
        local, limit = self.window(ctx)
        if int(ctx.newest) < local:  # all keys within the window: the Λ mask is the causal mask
            return None
        freqs = inv_freq(ctx.spec, ctx.layer_idx, ctx.query.device)
        return fixed(LambdaShape(self.n_global, local, limit_distance=limit, freqs=freqs), self.kernel)

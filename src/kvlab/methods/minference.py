"""MInference: dynamic vertical-slash sparse prefill, estimated per head from the last queries."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from kvlab.errors import KvlabError
from kvlab.methods import register_method
from kvlab.methods.base import LayerContext, Method
from kvlab.sparse.prefill import SparsePrefill, check_kernel
from kvlab.sparse.vertical_slash import estimate


@register_method
@dataclass(frozen=True)
class MInference(Method):
    """MInference 1.0: Accelerating Pre-filling for Long-Context LLMs via Dynamic Sparse Attention
    (Jiang et al., NeurIPS 2024).

    https://arxiv.org/abs/2407.02490 -- long-context attention is sparse with a few recurring
    shapes; for the "vertical-slash" shape, the attention of the last ``last_q`` queries picks per
    head the ``vertical_size`` most attended keys (vertical lines) and the ``slash_size`` most
    attended diagonals (slash lines), and the prompt's attention is computed only there
    (Algorithm 2; the first ``sink_tokens`` keys and the ``local_diagonals`` nearest diagonals always
    kept, as in MInference's kernel). The KV cache is kept whole.

    Defaults: MInference's fallback pattern for a head without a searched config
    (``vertical_and_slash, 1000, 6096``), ``last_q=64``, ``block_size=64`` (its kernel's block).
    Simplifications: every head uses vertical-slash (the paper's offline kernel-aware search that
    assigns A-shape / vertical-slash / block-sparse and sizes per head is not run); slash lines are
    widened to the ``block_size`` block diagonals they cross (see :mod:`kvlab.sparse.vertical_slash`);
    with chunked prefill each chunk estimates its pattern from its own last queries. The pattern
    depends on the prompt's end, so a question placed last steers it (``query_aware``).
    """

    name = "minference"
    family = "sparse prefill (dynamic pattern)"
    kind = "sparse_prefill"
    phase = "none"
    query_aware = True
    paper = "Jiang et al. 2024, MInference 1.0: Accelerating Pre-filling for Long-Context LLMs via Dynamic Sparse Attention"
    url = "https://arxiv.org/abs/2407.02490"

    last_q: int = 64
    vertical_size: int = 1000
    slash_size: int = 6096
    block_size: int = 64
    sink_tokens: int = 30
    local_diagonals: int = 100
    kernel: str = "auto"

    def __post_init__(self):
        sizes = (self.last_q, self.vertical_size, self.slash_size, self.block_size, self.local_diagonals)
        if min(sizes) < 1 or self.sink_tokens < 0:
            raise KvlabError("minference's sizes must be >= 1 (sink_tokens >= 0)")
        check_kernel(self.kernel)

    def prefill_pattern(self, ctx: LayerContext) -> SparsePrefill | None:
        if int(ctx.newest) < max(self.slash_size, self.local_diagonals):  # every diagonal kept: dense
            return None
        make = partial(estimate, last_q=self.last_q, vertical_size=self.vertical_size, slash_size=self.slash_size,
                       block=self.block_size, sink_tokens=self.sink_tokens, local_diagonals=self.local_diagonals)
        return SparsePrefill(make, self.kernel)

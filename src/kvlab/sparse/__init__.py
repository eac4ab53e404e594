"""Sparse prefill: attention patterns that skip most of the ``q x L`` score matrix.

* :mod:`~kvlab.sparse.patterns` -- patterns over absolute positions (A-shape / Λ sink + window);
* :mod:`~kvlab.sparse.vertical_slash` -- MInference's per-head vertical-slash pattern and its
  estimation from the last queries;
* :mod:`~kvlab.sparse.lambda_shape` -- LM-Infinite's distance limit (stationary global branch);
* :mod:`~kvlab.sparse.blocked` -- the plain-torch blocked kernel (CPU, reference);
* :mod:`~kvlab.sparse.flex` -- the same patterns through flex_attention block masks (CUDA);
* :mod:`~kvlab.sparse.prefill` -- what the methods (``a_shape``, ``lm_infinite``, ``minference``)
  return from ``prefill_pattern``, and kernel selection.

These methods keep the whole KV cache (``phase = "none"``); only the prompt's attention is sparse.
"""

from kvlab.sparse.blocked import blocked_attention, merge
from kvlab.sparse.patterns import Pattern, SinkWindow
from kvlab.sparse.prefill import KERNELS, SparsePrefill, kernel_for, sparse_attention

__all__ = ["KERNELS", "Pattern", "SinkWindow", "SparsePrefill", "blocked_attention", "kernel_for", "merge",
           "sparse_attention"]

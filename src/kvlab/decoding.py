"""Decoding steps: one token in, next-token logits out, under the active method and budget.

Four ways to run a step, same results:

* ``eager``: the model's forward on the growing/evicting :class:`~kvlab.cache.BudgetCache` (any
  device; decode-time methods re-select their slots with top-k every step).
* ``static``: the cache is switched to fixed capacity (:meth:`KVLayer.make_static`): each token goes
  into a free slot, decode-time methods free one slot per step with an arg-min, attention masks
  empty slots -- no shape changes and no host syncs inside the step.
* ``graph`` (CUDA): the static step captured once in a CUDA graph and replayed, which removes the
  ~1,500 kernel launches per token that make eager decoding launch-bound on a GPU.
* ``compiled``: the static step through ``torch.compile`` (``fullgraph=True``, static shapes):
  inductor fuses the step's small kernels (norms, RoPE, activations, residuals, the cache write)
  and decode attention's passes over the scores (:func:`kvlab.attention.decode_attention` traced into
  the step; ``KVLAB_DECODE_ATTENTION=matmul`` keeps it one opaque operator with the eager numerics).
  On CUDA the compiled step is then captured in a CUDA graph as in ``graph``. The first step
  compiles (tens of seconds to minutes); a cache of another capacity compiles again (torch's
  recompile limit applies), so non-evicting methods round the capacity up to a multiple of
  :data:`CAPACITY_MULTIPLE` (the extra slots are empty and masked).

For decode-time methods a static cache has the slots of the largest budget of the generation plus
one; each step keeps the budget eager decoding would keep at that length (a ratio budget grows with
the sequence; see :meth:`kvlab.apply_method.State._after_static_step`), so every mode keeps the same tokens.
Every static capacity is then rounded up by :func:`kvlab.attention.split_capacity` (under 0.1% more
empty slots) so decode attention can split its value reduction into equal pieces without copying.

The static modes' attention kernel is :func:`kvlab.attention.decode_attention` (in ``compiled``
traced into the step) or, with ``KVLAB_DECODE_ATTENTION=flex``, flex_attention's decoding kernel
(:mod:`kvlab.flex_decode`), chosen when the step is built (:func:`kvlab.decode_kernel.kernel_for`);
with ``flex`` non-evicting methods round their capacity as ``compiled`` does.
"""

from __future__ import annotations

from typing import Any

import torch

from kvlab import decode_kernel
from kvlab.attention import split_capacity
from kvlab.cache import BudgetCache
from kvlab.defaults import DECODE_MODES
from kvlab.errors import KvlabError
from kvlab.models import hf_compat

CAPACITY_MULTIPLE = 256


def resolve_mode(mode: str, device: torch.device, method: Any = None) -> str:
    """The mode a step runs in. ``auto``: ``graph`` on CUDA; on CPU ``static`` for decode-time
    eviction methods (an arg-min per step instead of eager's top-k and cache rebuild: 1.2-1.4x faster
    on the embedded model, same tokens) and ``eager`` otherwise (static measured no faster there)."""
    if mode not in DECODE_MODES:
        raise KvlabError(f"unknown decode mode '{mode}'; use one of {', '.join(DECODE_MODES)}")
    if mode == "auto":
        if device.type == "cuda":
            return "graph"
        evicts = method is not None and method.compresses and method.evicts_during_decode
        return "static" if evicts else "eager"
    if mode == "graph" and device.type != "cuda":
        raise KvlabError("decode mode 'graph' needs a CUDA device; use 'static' or 'eager' on CPU")
    return mode


class EagerStep:
    """The model's forward for one token on the dynamic budgeted cache."""

    def __init__(self, model: Any, cache: BudgetCache, device: torch.device):
        self.model, self.cache, self.device = model, cache, device

    def __call__(self, token: int) -> torch.Tensor:
        ids = torch.tensor([[token]], device=self.device)
        pos = torch.tensor([[self.cache.get_seq_length()]], device=self.device)
        out = self.model(input_ids=ids, position_ids=pos, use_cache=True, logits_to_keep=1,
                         **hf_compat.cache_kwargs(self.model, self.cache))
        return out.logits[0, -1]

    def finish(self) -> None:
        """Account what the cache holds (the dynamic cache meters itself)."""


class StaticStep:
    """A fixed-shape decoding step over a static cache (see the module docstring)."""

    capacity_multiple = 1
    mode = "static"

    def __init__(self, model: Any, cache: BudgetCache, device: torch.device, state: Any, max_new_tokens: int):
        self.model, self.cache, self.device = model, cache, device
        method = state.method
        self.state, self.kernel = state, decode_kernel.kernel_for(method, self.mode)  # decode attention
        if self.kernel == "flex":  # a compiled kernel: fewer distinct capacities, fewer compiles
            self.capacity_multiple = CAPACITY_MULTIPLE
        self.evicts = method.compresses and method.evicts_during_decode
        start = cache.get_seq_length()
        if self.evicts:
            # the budget of every step, as eager decoding resolves it (a ratio budget grows with the
            # sequence): the step that brings the sequence to `seen` tokens keeps capacities(seen)
            table = [state.capacities(seen) for seen in range(start + 1, start + max_new_tokens + 1)]
            per_layer = torch.tensor(table, dtype=torch.long).T.contiguous() if table else None
        for idx, layer in cache.kv_layers:
            if self.evicts:
                steps = per_layer[idx] if per_layer is not None else torch.tensor([layer.length])
                state.decode_capacity[idx] = (steps.to(device), start + 1)
                room = max(0, min(int(steps.max()), layer.length + max_new_tokens) - layer.length)
                slots = layer.length + room + 1  # the largest budget plus the slot the next token goes to
            else:
                slots = -(-(layer.length + max_new_tokens) // self.capacity_multiple) * self.capacity_multiple
            # a few more empty slots where that lets decode attention split its value reduction evenly
            layer.make_static(split_capacity(slots) - layer.length)
        self.ids = torch.zeros(1, 1, dtype=torch.long, device=device)
        self.pos = torch.zeros(1, 1, dtype=torch.long, device=device)
        self.next_pos = cache.get_seq_length()
        self.cache_kwargs = hf_compat.cache_kwargs(model, cache)

    def forward(self) -> torch.Tensor:
        out = self.model(input_ids=self.ids, position_ids=self.pos, use_cache=True, logits_to_keep=1,
                         **self.cache_kwargs)
        return out.logits[0, -1]

    def __call__(self, token: int) -> torch.Tensor:
        self._next(token)
        return self.forward()

    def _next(self, token: int) -> None:
        """Set the step's inputs (and its attention kernel: steps of several modes may share a state)."""
        self.state.decode_kernel = self.kernel
        self.ids.fill_(token)
        self.pos.fill_(self.next_pos)
        self.next_pos += 1

    def finish(self) -> None:
        """Meter the bytes held after static decoding (the step itself never syncs to count them), and
        bring the host-side token counters up to date (the step counts on the device only)."""
        layers = [layer for _, layer in self.cache.kv_layers]
        for layer in layers:
            layer.seen = int(layer.seen_t)
        meter = self.cache.meter
        held = sum(layer.valid_slots() * layer.slot_bytes for layer in layers)
        transient = sum(layer.slot_bytes for layer in layers) if self.evicts else 0
        meter.add(held - meter.held)
        meter.peak = max(meter.peak, held + transient)


class GraphStep(StaticStep):
    """The static step captured in a CUDA graph on first use, then replayed."""

    mode = "graph"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None

    def __call__(self, token: int) -> torch.Tensor:
        self._next(token)
        if self.graph is None:
            self._capture()
        self.graph.replay()
        return self.logits

    def _capture(self) -> None:
        # Warm up (cuBLAS handles, allocator) on a side stream, then undo what the warm-up step did to
        # the cache bookkeeping: it wrote the token into the free slot (harmless, rewritten by the
        # first replay) and, for decode-time methods, evicted a slot and counted one more token.
        snapshot = [(lay._pos.clone(), lay.free.clone(), lay.seen_t.clone(), lay.seen,
                     {n: t.clone() for n, t in lay._extras.items()}) for _, lay in self.cache.kv_layers]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self.forward()
        torch.cuda.current_stream().wait_stream(stream)
        self._restore(snapshot)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = self.forward()
        self._restore(snapshot)  # capture ran the Python side once (host counters)

    def _restore(self, snapshot) -> None:
        for (_, layer), (pos, free, seen_t, seen, extras) in zip(self.cache.kv_layers, snapshot):
            layer._pos.copy_(pos)
            layer.free.copy_(free)
            layer.seen_t.copy_(seen_t)
            layer.seen = seen
            for name, t in extras.items():
                layer._extras[name].copy_(t)


class CompiledStep(GraphStep):
    """The static step compiled by ``torch.compile``; on CUDA also captured in a CUDA graph."""

    capacity_multiple = CAPACITY_MULTIPLE
    mode = "compiled"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.compiled = torch.compile(super().forward, fullgraph=True, dynamic=False)

    def forward(self) -> torch.Tensor:
        return self.compiled()

    def __call__(self, token: int) -> torch.Tensor:
        if self.device.type == "cuda":
            return super().__call__(token)
        return StaticStep.__call__(self, token)


def make_step(mode: str, model: Any, cache: BudgetCache, device: torch.device, state: Any,
              max_new_tokens: int):
    asked, mode = mode, resolve_mode(mode, device, state.method)
    if mode in ("graph", "compiled") and cache.has_states:
        # a captured or compiled step would have to snapshot transformers' linear-attention states too
        if asked != "auto":
            raise KvlabError(f"decode mode '{mode}' is not supported for hybrid models (layers with a "
                             "linear-attention state); use 'static' or 'eager'")
        mode = "static"
    if mode != "eager" and (cache.spec.attention_chunk or hf_compat.has_attention_sinks(model)):
        # static decode attention has no sink term and no chunk mask: such models decode on the dynamic cache
        if asked != "auto":
            raise KvlabError(f"decode mode '{mode}' does not support attention-sink logits (gpt-oss and "
                             "others) or chunked attention (Llama 4); use 'eager'")
        mode = "eager"
    if mode == "eager":
        return EagerStep(model, cache, device)
    if mode == "static":
        return StaticStep(model, cache, device, state, max_new_tokens)
    if mode == "compiled":
        return CompiledStep(model, cache, device, state, max_new_tokens)
    return GraphStep(model, cache, device, state, max_new_tokens)

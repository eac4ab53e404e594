"""Prefill a context once, compress it many ways: sweeps run each method from one recorded forward.

In a single-chunk prefill, a layer is compressed right after its own attention, and the layer's
output does not depend on what is evicted: every prefill-time eviction method computes the *same*
forward and differs only in what it keeps. :func:`record_prefill` runs that forward once without
compression and keeps, per layer, what the compression step sees (the chunk's queries, positions,
scaling, window and, when asked, the attention mass every key received); :func:`compress_recorded`
then replays the engine's own eviction step (:meth:`kvlab.apply_method.State.compress_layer`) on a copy of
each layer, in layer order and through the same byte meter, so the compressed cache, its kept
positions, the accumulated statistics and the bytes held and at peak equal a direct
:func:`kvlab.engine.prefill_context` -- tested for every registered method that qualifies.

It applies when the context fits in one chunk (``chunk_size`` None or >= the context), no sliding
window drops tokens inside it, and the method has no sparse prefill pattern (those change the
forward itself; ``full`` qualifies and its replay is a copy); :class:`PrefillMemo`
falls back to a direct prefill otherwise. A replayed context reports the recorded forward's time
plus its own compression time as ``prefill_seconds``: what a direct prefill costs.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from kvlab.apply_method import State, apply
from kvlab.budget import Budget
from kvlab.cache import BudgetCache
from kvlab.engine import DEFAULT_CHUNK_SIZE, PrefilledContext, _forward, _sync, prefill_context
from kvlab.errors import KvlabError
from kvlab.methods import Method, get_method
from kvlab.methods.base import LayerContext
from kvlab.models.loading import LoadedModel


@dataclass
class LayerRecord:
    """What one layer's compression step saw: ``query (B, Hq, n, D)``, ``query_pos (n,)``, the
    scaling, the sliding window and ``key_mass (B, Hkv, n)`` (or None)."""

    query: torch.Tensor
    query_pos: torch.Tensor
    scaling: float
    window: int | None
    key_mass: torch.Tensor | None


@dataclass(frozen=True)
class _Recorder(Method):
    """Internal: never compresses, records each layer's context (not registered as a method)."""

    name: ClassVar[str] = "_recorder"
    phase: ClassVar[str] = "none"
    kind: ClassVar[str] = "baseline"
    records: list = field(default_factory=list, compare=False, hash=False)

    def observe(self, ctx: LayerContext) -> None:
        self.records.append(LayerRecord(ctx.query, ctx.query_pos, ctx.scaling, ctx.window, ctx.key_mass))


@dataclass(frozen=True)
class _MassRecorder(_Recorder):
    needs_attention_weights: ClassVar[bool] = True


@dataclass
class PrefillRecording:
    """An uncompressed single-chunk prefill of ``context_ids`` and its per-layer records."""

    loaded: LoadedModel
    context_ids: list[int]
    cache: BudgetCache
    layers: list[LayerRecord]
    last_logits: torch.Tensor
    forward_seconds: float
    with_mass: bool

    @property
    def nbytes(self) -> int:
        tensors = [r.query for r in self.layers] + [r.key_mass for r in self.layers if r.key_mass is not None]
        return self.cache.bytes_allocated + sum(t.numel() * t.element_size() for t in tensors)


def shareable(method: Method, spec, context_tokens: int, chunk_size: int | None) -> bool:
    """Whether ``method``'s prefill of a ``context_tokens`` context can be replayed from a recording:
    one chunk, a method that does not change the forward (no sparse pattern; ``full`` qualifies, its
    replay is a copy), and no sliding window or attention chunk that would already drop tokens inside it."""
    single_chunk = chunk_size is None or context_tokens <= chunk_size
    limits = (*(spec.sliding_windows or ()), spec.attention_chunk)
    windows_hold = all(w is None or w >= context_tokens for w in limits)
    return single_chunk and windows_hold and type(method).prefill_pattern is Method.prefill_pattern


def record_prefill(loaded: LoadedModel, context_ids: Sequence[int], with_mass: bool = False) -> PrefillRecording:
    """Run the context through the model once (one chunk, no compression) and record every layer."""
    if not context_ids:
        raise KvlabError("the context is empty; give a prompt or a file with some text")
    recorder = (_MassRecorder if with_mass else _Recorder)()
    n = len(context_ids)
    cache = BudgetCache(loaded.spec, reserve=n)
    _sync(loaded.device)
    start = time.perf_counter()
    with torch.no_grad(), apply(loaded, recorder) as state:
        state.cache, state.phase, state.prompt_tokens = cache, "context", n
        logits = _forward(loaded.model, context_ids, cache, loaded.device)[-1]
    _sync(loaded.device)
    seconds = time.perf_counter() - start
    assert len(recorder.records) == len(cache.kv_layers), "every attention layer records once per forward"
    return PrefillRecording(loaded, list(context_ids), cache, list(recorder.records), logits, seconds, with_mass)


def compress_recorded(recording: PrefillRecording, method: str | Method, budget: str | int | float | Budget | None,
                      reserve_extra: int = 0) -> PrefilledContext:
    """The context compressed by ``method`` under ``budget``, as a direct prefill would leave it."""
    method, budget = get_method(method), Budget.parse(budget)
    n = len(recording.context_ids)
    if not shareable(method, recording.loaded.spec, n, None):
        raise KvlabError(f"{method.name} cannot be replayed from a recorded prefill (it changes the forward)")
    if method.needs_attention_weights and not recording.with_mass:
        raise KvlabError(f"{method.name} needs the attention mass; record the prefill with with_mass=True")
    spec = recording.loaded.spec
    cache = BudgetCache(spec)
    cache.copy_states(recording.cache)  # the linear-attention states of hybrid models, as recorded
    state = State(method, budget, spec)
    state.cache, state.phase, state.prompt_tokens = cache, "context", n
    start = time.perf_counter()
    with torch.no_grad():
        for (idx, source), rec in zip(recording.cache.kv_layers, recording.layers):
            layer = source.clone(cache.meter, spare=reserve_extra)  # the chunk lands in this layer ...
            cache.layers[idx] = layer
            mass = rec.key_mass if method.needs_attention_weights else None
            state.compress_layer(idx, layer, rec.query, rec.query_pos, rec.scaling, rec.window, mass)  # ... and shrinks
    _sync(recording.loaded.device)
    seconds = recording.forward_seconds + (time.perf_counter() - start)
    return PrefilledContext(loaded=recording.loaded, method=method, budget=budget, cache=cache,
                            context_ids=list(recording.context_ids), last_logits=recording.last_logits,
                            prefill_seconds=seconds, chunk_size=None)


class PrefillMemo:
    """Recordings of recent contexts, bounded in bytes (least recently used dropped first).

    ``prefill(...)`` has :func:`kvlab.engine.prefill_context`'s signature and result: it replays a
    recording when the method qualifies (recording the context on first use) and prefills directly
    otherwise. A recording larger than ``max_bytes`` is used once and not kept.
    """

    def __init__(self, max_bytes: int = 2 << 30):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, PrefillRecording] = OrderedDict()
        self.hits = self.misses = 0

    def prefill(self, loaded: LoadedModel, context_ids: Sequence[int], method: str | Method = "full",
                budget: str | int | float | Budget | None = None, chunk_size: int | None = DEFAULT_CHUNK_SIZE,
                reserve_extra: int = 0) -> PrefilledContext:
        method = get_method(method)
        if not shareable(method, loaded.spec, len(context_ids), chunk_size):
            return prefill_context(loaded, context_ids, method, budget, chunk_size, reserve_extra=reserve_extra)
        key = (id(loaded), method.needs_attention_weights, tuple(context_ids))
        recording = self._items.get(key)
        if recording is None or recording.loaded is not loaded:
            self.misses += 1
            recording = record_prefill(loaded, context_ids, with_mass=method.needs_attention_weights)
            self._store(key, recording)
        else:
            self.hits += 1
            self._items.move_to_end(key)
        prefilled = compress_recorded(recording, method, budget, reserve_extra)
        prefilled.chunk_size = chunk_size
        return prefilled

    def _store(self, key: tuple, recording: PrefillRecording) -> None:
        if recording.nbytes > self.max_bytes:
            return
        self._items[key] = recording
        while sum(r.nbytes for r in self._items.values()) > self.max_bytes:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

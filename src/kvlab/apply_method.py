"""``kvlab.apply``: run a model under a method and a budget, through kvlab's attention function.

(The module is ``kvlab.apply_method`` so that the package's lazily imported ``kvlab.apply`` is
always the function, never this module.)

::

    with kvlab.apply(model, "snapkv", budget="1024"):
        out = model.generate(**inputs, max_new_tokens=64)

Inside the block every attention call of ``model`` goes through :func:`kvlab_attention`, which

1. computes exact attention over the tokens the cache holds (SDPA for the plain causal layout, a
   blocked masked kernel for empty slots, sliding windows or soft-capping);
2. gives the method a :class:`~kvlab.methods.base.LayerContext` to observe;
3. evicts: tokens out of a sliding window are dropped, and while the prompt is prefilled (or at
   every step for decode-time methods) a layer over its budget keeps the method's selection.

The cache is kvlab's :class:`~kvlab.cache.BudgetCache` when the engine runs the model. Around a
plain ``model.generate`` (which builds a ``DynamicCache``), kvlab keeps the positions itself and
shrinks the layer's tensors in place. The previous attention implementation is restored on exit,
also when the body raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from kvlab import decode_kernel, flex_decode
from kvlab.attention import decode_attention, masked_attention, sdpa_attention
from kvlab.budget import Budget
from kvlab.cache import BudgetCache, KVLayer
from kvlab.errors import KvlabError
from kvlab.methods import Method, get_method
from kvlab.methods.base import LayerContext, mask_to_index
from kvlab.models import hf_compat
from kvlab.models.spec import ModelSpec


class ForeignLayer:
    """Positions and statistics for one layer of a cache kvlab did not create (a DynamicCache)."""

    def __init__(self, sliding_window: int | None):
        self.sliding_window = sliding_window
        self.seen = 0
        self.length = 0
        self.has_holes = False
        self.keys = self.values = self.positions = None
        self.extras: dict[str, torch.Tensor] = {}

    def sync(self, key: torch.Tensor, value: torch.Tensor, q_len: int) -> None:
        """Account for the ``q_len`` tokens the cache just appended; ``key`` is everything it returned."""
        total = key.shape[2]
        b, h = key.shape[:2]
        fresh = total == q_len
        if fresh:
            self.seen, self.positions, self.extras, self.has_holes = 0, None, {}, False
        elif self.sliding_window is None and total != self.length + q_len:
            raise KvlabError(
                "this model's cache did not keep kvlab's eviction (it holds "
                f"{total - q_len} tokens, kvlab kept {self.length}); run it with kvlab.generate() or pass "
                "past_key_values=kvlab.BudgetCache(spec) to generate()"
            )
        new = torch.arange(self.seen, self.seen + q_len, device=key.device).expand(b, h, q_len)
        if self.sliding_window is not None or fresh:
            # A sliding DynamicLayer keeps the most recent tokens itself, contiguous.
            start = self.seen + q_len - total
            self.positions = torch.arange(start, self.seen + q_len, device=key.device).expand(b, h, total)
            self.extras = {n: _tail(t, total, q_len) for n, t in self.extras.items()}
        else:
            self.positions = torch.cat([self.positions, new], dim=-1)
            self.extras = {n: torch.cat([t, t.new_zeros(b, h, q_len)], dim=-1) for n, t in self.extras.items()}
        self.seen += q_len
        self.length = total
        self.keys, self.values = key, value

    def extra(self, name: str) -> torch.Tensor:
        if name not in self.extras:
            self.extras[name] = torch.zeros(self.positions.shape, dtype=torch.float32, device=self.positions.device)
        return self.extras[name]

    def keep(self, index: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        idx = index.unsqueeze(-1)
        new_k = self.keys.gather(2, idx.expand(-1, -1, -1, self.keys.shape[-1]))
        new_v = self.values.gather(2, idx.expand(-1, -1, -1, self.values.shape[-1]))
        self.positions = self.positions.gather(2, index)
        self.extras = {n: t.gather(2, index) for n, t in self.extras.items()}
        if valid is not None and not bool(valid.all()):
            self.positions = self.positions.masked_fill(~valid, -1)
            self.has_holes = True
        # Shrink the tensors the DynamicLayer holds, in place: it keeps referring to these objects.
        self.keys.data = new_k
        self.values.data = new_v
        self.length = index.shape[-1]


def _tail(t: torch.Tensor, total: int, q_len: int) -> torch.Tensor:
    t = torch.cat([t, t.new_zeros(*t.shape[:2], q_len)], dim=-1)
    return t[..., -total:]


class State:
    """Per-request state of an applied method (never stored on the method dataclass).

    Attributes:
        method, budget, spec: what runs.
        phase: ``"context"`` while the prompt is prefilled (layers over budget are compressed),
            ``"append"`` afterwards (only decode-time methods evict).
        prompt_tokens: the length the budget resolves against (set by the engine, or by the first
            forward of a plain ``generate``).
        cache: the BudgetCache the engine runs with, or None around a plain ``generate``.
    """

    def __init__(self, method: Method, budget: Budget, spec: ModelSpec):
        self.method, self.budget, self.spec = method, budget, spec
        self.phase = "context"
        self.prompt_tokens: int | None = None
        self.cache: BudgetCache | None = None
        self.foreign: dict[int, ForeignLayer] = {}
        self.evictions = 0
        # static decoding of a decode-time method: per layer, (capacity of each step (steps,) on the
        # device, the sequence length after the first step) -- set by kvlab.decoding.StaticStep
        self.decode_capacity: dict[int, tuple[torch.Tensor, int]] = {}
        # static decoding: the attention kernel ("matmul", "flex" or "inductor", kvlab.decode_kernel; set by
        # StaticStep) and whether the step computes the attention mass each slot received (H2O, TOVA read it)
        self.decode_kernel = "matmul"
        self.decode_key_mass = decode_kernel.wants_key_mass(method)

    def capacity(self, layer_idx: int, seen: int) -> int:
        """Slots ``layer_idx`` may keep now: the budget resolved against the prompt while it is being
        prefilled, against the whole sequence so far afterwards (decode-time eviction)."""
        return self.capacities(seen)[layer_idx]

    def capacities(self, seen: int) -> list[int]:
        """:meth:`capacity` of every layer."""
        n = self.prompt_tokens if (self.phase == "context" and self.prompt_tokens) else seen
        n = max(n, 1)
        kept = self.budget.resolve(self.spec, n)
        return self.method.layer_capacities(kept, self.spec, n)

    # --- the attention call -----------------------------------------------------------------
    def attend(self, module, query, key, value, attention_mask, scaling, **kwargs):
        if attention_mask is not None and not _all_true(attention_mask):
            raise KvlabError("padded batches are not supported under kvlab.apply(); run one prompt at a time")
        layer_idx = module.layer_idx
        q_len = query.shape[2]
        window = kwargs["sliding_window"] if "sliding_window" in kwargs else self.spec.sliding_windows[layer_idx]
        scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
        chunk = self.spec.chunk_of(layer_idx)
        # transformers' own cache keeps a chunked layer's last chunk - 1 tokens, as a sliding window
        layer = self._layer(layer_idx, key, value, q_len, window if chunk is None else chunk)
        softcap = kwargs.get("softcap")
        sinks = kwargs.get("s_aux")  # learned attention-sink logits (gpt-oss and others), (Hq,)
        if getattr(layer, "static", False):
            assert sinks is None and chunk is None, "decoding.make_step decodes these models eagerly"
            query_pos = (layer.seen_t - 1).view(1)
            if self.decode_kernel == "flex":
                out, key_mass = flex_decode.flex_decode_attention(
                    query, key, value, layer.positions, query_pos, scaling, window, softcap), None
            else:
                out, key_mass = decode_attention(query, key, value, layer.positions, query_pos, scaling, window,
                                                 softcap, want_key_mass=self.decode_key_mass,
                                                 opaque=self.decode_kernel != "inductor")
            self._after_static_step(layer_idx, layer, query, query_pos, scaling, window, key_mass)
            return out.transpose(1, 2).contiguous(), None
        query_pos = torch.arange(layer.seen - q_len, layer.seen, device=query.device)
        needs_mass = self.method.needs_attention_weights
        key_mass = None
        pattern = None
        if self.phase == "context" and q_len > 1:
            pattern = self.method.prefill_pattern(self._context(layer_idx, layer, query, query_pos, scaling, window))
        if pattern is not None:
            if sinks is not None or chunk is not None:
                raise KvlabError(f"{self.method.name} (sparse prefill) does not support models with attention-sink "
                                 "logits (gpt-oss and others) or chunked attention (Llama 4); use an eviction "
                                 "method or full")
            out = pattern.attend(query, key, value, layer.positions, query_pos, scaling, window)
        elif (needs_mass or softcap is not None or sinks is not None or chunk is not None or layer.has_holes
              or _window_binds(layer, window, q_len)):
            out, key_mass = masked_attention(query, key, value, layer.positions, query_pos, scaling, window, softcap,
                                             want_key_mass=needs_mass, sinks=sinks, chunk=chunk)
        else:
            out = sdpa_attention(query, key, value, scaling)
        self.compress_layer(layer_idx, layer, query, query_pos, scaling, window, key_mass)
        return out.transpose(1, 2).contiguous(), None

    def _layer(self, layer_idx: int, key, value, q_len: int, window: int | None):
        if self.cache is not None:
            layer = self.cache.layers[layer_idx]
            assert key.shape[2] == layer.length, "attention got keys that are not the kvlab cache's"
            return layer
        layer = self.foreign.get(layer_idx)
        if layer is None:
            layer = self.foreign[layer_idx] = ForeignLayer(window)
        layer.sync(key, value, q_len)
        if layer.seen == q_len:  # first forward of a new sequence: a plain generate's prompt
            self.phase, self.prompt_tokens = "context", q_len
        elif layer_idx == 0:
            self.phase = "append"
        return layer

    def _context(self, layer_idx, layer, query, query_pos, scaling, window, key_mass=None) -> LayerContext:
        capacity = self.capacity(layer_idx, layer.seen) if self.method.compresses else layer.length
        return LayerContext(
            layer_idx=layer_idx, spec=self.spec, query=query, query_pos=query_pos, keys=layer.keys,
            values=layer.values, positions=layer.positions, scaling=scaling, window=window,
            phase=self.phase, layer=layer, capacity=capacity, key_mass=key_mass,
        )

    def compress_layer(self, layer_idx, layer, query, query_pos, scaling, window, key_mass) -> None:
        """After a layer's attention: let the method observe, drop tokens out of a sliding window, and
        evict a layer over its capacity to the method's selection (while the prompt is prefilled, or
        at every step for decode-time methods). :mod:`kvlab.shared_prefill` replays exactly this."""
        method = self.method
        foreign_sliding = isinstance(layer, ForeignLayer) and layer.sliding_window is not None
        evict = method.compresses and (self.phase == "context" or method.evicts_during_decode)
        ctx = self._context(layer_idx, layer, query, query_pos, scaling, window, key_mass)
        capacity = ctx.capacity
        method.observe(ctx)
        if foreign_sliding:
            return  # the DynamicSlidingWindowLayer trims itself; kvlab only observes
        dead = None
        chunk = self.spec.chunk_of(layer_idx)
        if window is not None:  # no later query can see these again
            dead = (layer.positions >= 0) & (layer.positions <= ctx.newest - window + 1)
        elif chunk is not None:  # nor these: the next query starts a chunk of its own or is in this one
            next_start = torch.div(ctx.newest + 1, chunk, rounding_mode="floor") * chunk
            dead = (layer.positions >= 0) & (layer.positions < next_start)
        if dead is not None and not bool(dead.any()):
            dead = None
        if evict and layer.length > capacity:
            if dead is not None:
                ctx.positions = layer.positions.masked_fill(dead, -1)
            index, valid = method.select(ctx, capacity)
            if valid is not None and not bool(valid.all()):  # drop selected-but-empty slots
                keep = torch.zeros_like(layer.positions, dtype=torch.bool).scatter_(-1, index, valid)
                index, valid = mask_to_index(keep)
            layer.keep(index, valid)
            self.evictions += 1
        elif dead is not None:
            layer.keep(*mask_to_index(~dead & (layer.positions >= 0)))


    def _after_static_step(self, layer_idx, layer, query, query_pos, scaling, window, key_mass) -> None:
        """Fixed-capacity decoding: decode-time methods free one slot per step (no host syncs).

        The layer holds the generation's largest budget + 1 slots; the step's token went into the free
        slot. When the live tokens now exceed this step's budget (``State.decode_capacity``, what eager
        decoding resolves at this length), the lowest-scored unprotected token's slot becomes free;
        otherwise an empty or out-of-window slot does (nothing is evicted). Sliding-window layers of
        other methods reuse the slot of a token that fell out of the window.
        """
        method = self.method
        evicts = method.compresses and method.evicts_during_decode
        capacity: int | torch.Tensor = layer.length
        if evicts:  # this step's budget, as eager decoding resolves it at this length
            steps, first_seen = self.decode_capacity[layer_idx]
            capacity = steps.index_select(0, (layer.seen_t - first_seen).clamp(0, steps.numel() - 1).view(1))
        ctx = LayerContext(
            layer_idx=layer_idx, spec=self.spec, query=query, query_pos=query_pos, keys=layer.keys,
            values=layer.values, positions=layer.positions, scaling=scaling, window=window, phase=self.phase,
            layer=layer, capacity=capacity, key_mass=key_mass,
        )
        method.observe(ctx)
        if not evicts and window is None:
            return
        usable = layer.positions >= 0
        if window is not None:  # out-of-window tokens are dead: their slots are reused first
            usable &= layer.positions > ctx.newest - window + 1
        if evicts:
            ranked = method.score(ctx).float()
            protected = method.protected(ctx)
            if protected is not None:
                ranked = ranked.masked_fill(protected, float("inf"))
            over = usable.sum(-1, keepdim=True) > capacity  # (B, Hkv, 1): evict a live token
            # over budget: only live tokens are candidates; within it: an empty or dead slot is freed
            unusable = torch.where(over, float("inf"), float("-inf"))
            victim = torch.where(usable, ranked, unusable).argmin(dim=-1)  # (B, Hkv)
        else:  # only free dead or empty slots (a non-evicting layer always has an empty one)
            ranked = torch.full(layer.positions.shape, float("inf"), device=layer.positions.device)
            victim = ranked.masked_fill(~usable, float("-inf")).argmin(dim=-1)  # (B, Hkv)
        layer.positions.scatter_(-1, victim.unsqueeze(-1), -1)
        layer.free.copy_(victim)


def _window_binds(layer, window: int | None, q_len: int) -> bool:
    """Whether a sliding window hides some held key from some query of this forward."""
    if window is None or layer.length == 0:
        return False
    oldest = int(layer.positions[..., 0].min()) if not layer.has_holes else 0
    return (layer.seen - 1) - oldest >= window


def _all_true(mask) -> bool:
    return isinstance(mask, torch.Tensor) and mask.dtype == torch.bool and bool(mask.all())


def kvlab_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The function registered with ``transformers.AttentionInterface`` under the name ``kvlab``.

    Args follow transformers' attention interface: ``query (B, Hq, q, D)``, ``key``/``value``
    ``(B, Hkv, L, D)`` (everything the cache holds after its update). Returns
    ``(output (B, q, Hq, D), None)``.
    """
    state = hf_compat.lookup(module.config)
    if state is None:
        raise KvlabError("kvlab attention was called outside kvlab.apply()")
    return state.attend(module, query, key, value, attention_mask, scaling, **kwargs)


def _unwrap(model: Any):
    return getattr(model, "model", model) if hasattr(model, "spec") and hasattr(model, "tokenizer") else model


@contextmanager
def apply(model: Any, method: str | Method = "full", budget: str | int | float | Budget | None = None,
          **method_kwargs) -> Iterator[State]:
    """Run ``model`` (a transformers model or a :class:`~kvlab.models.LoadedModel`) under ``method``
    and ``budget`` inside the block. Yields the per-request :class:`State`.

    Restores the model's attention implementation on exit, also when the block raises.
    """
    method = get_method(method, **method_kwargs)
    budget = Budget.parse(budget)
    hf_model = _unwrap(model)
    spec = getattr(model, "spec", None) or ModelSpec.from_config(hf_model.config, dtype=hf_model.dtype)
    state = State(method, budget, spec)
    previous = hf_compat.activate(hf_model, state, kvlab_attention)
    try:
        yield state
    finally:
        hf_compat.deactivate(hf_model, previous)


__all__ = ["BudgetCache", "KVLayer", "State", "apply", "kvlab_attention"]

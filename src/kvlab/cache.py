"""The budgeted KV cache: one ``transformers`` Cache whose layers keep any subset of positions.

Each :class:`KVLayer` stores, per layer:

* ``keys`` / ``values``: views ``(batch, kv_heads, length, head_dim)`` into preallocated buffers.
  Kept keys carry the RoPE of their original positions (nothing is re-rotated).
* ``positions``: ``(batch, kv_heads, length)`` int64, the absolute index of each slot's token in
  the sequence; ``-1`` marks an empty slot (heads may keep different numbers of tokens, e.g.
  AdaKV, and are padded to the longest head).
* ``extras``: per-token statistics a method accumulates, ``(batch, kv_heads, length)`` float32
  (H2O's accumulated attention). They follow the tokens through eviction.
* ``seen``: how many tokens the sequence has had, so ``get_seq_length()`` keeps the original
  numbering and new tokens continue it.

Eviction (:meth:`KVLayer.keep`) is an index-select driven by method scores. Buffers grow
geometrically only when a caller did not reserve enough; the engine reserves budget + one chunk
(+ the tokens to generate), so chunked prefill never allocates more than that.

Bytes are the common currency: :class:`KVMeter` tracks the key/value bytes held by all layers
now and at peak, from the tensors' actual sizes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, CacheLayerMixin, LinearAttentionCacheLayerMixin

from kvlab.models.spec import ModelSpec


@dataclass
class KVMeter:
    """Bytes of keys+values held across all layers of one cache, now and at peak."""

    held: int = 0
    peak: int = 0

    def add(self, delta: int) -> None:
        self.held += delta
        self.peak = max(self.peak, self.held)

    def reset_peak(self) -> None:
        self.peak = self.held


class KVLayer(CacheLayerMixin):
    """One layer of the budgeted cache (see the module docstring for the layout)."""

    is_compileable = False
    is_croppable = False

    def __init__(self, sliding_window: int | None = None, reserve: int = 0, meter: KVMeter | None = None):
        super().__init__()
        self.sliding_window = sliding_window
        self.is_sliding = sliding_window is not None
        self.reserve = reserve
        self.meter = meter or KVMeter()
        self.length = 0
        self.seen = 0
        self.has_holes = False  # some slots are empty (positions == -1)
        self.static = False  # fixed-capacity decoding: see make_static()
        self.free: torch.Tensor | None = None  # static mode: (B, H) slot the next token goes to
        self.seen_t: torch.Tensor | None = None  # static mode: ``seen`` as a device tensor
        self.positions: torch.Tensor | None = None
        self.extras: dict[str, torch.Tensor] = {}
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None
        self._pos: torch.Tensor | None = None
        self._extras: dict[str, torch.Tensor] = {}

    # --- transformers CacheLayerMixin API -------------------------------------------------
    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Append ``key_states``/``value_states`` ``(batch, kv_heads, q, head_dim)``; return all held."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.static:
            return self._update_static(key_states, value_states)
        b, h, q, d = key_states.shape
        dv = value_states.shape[-1]
        self._ensure_capacity(b, h, d, dv, self.length + q, key_states.dtype, key_states.device)
        end = self.length + q
        self._k[:, :, self.length:end].copy_(key_states)
        self._v[:, :, self.length:end].copy_(value_states)
        new_pos = torch.arange(self.seen, self.seen + q, device=self._pos.device)
        self._pos[:, :, self.length:end] = new_pos
        for buf in self._extras.values():
            buf[:, :, self.length:end] = 0
        self.meter.add(q * self.slot_bytes)
        self.length, self.seen = end, self.seen + q
        self._refresh_views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        """Tokens the sequence has had (not the tokens held): new tokens continue this numbering."""
        return self.seen

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self.meter.add(-self.length * self.slot_bytes)
        self.length = self.seen = 0
        self.has_holes = False
        self._refresh_views()

    def crop(self, max_length: int) -> None:  # pragma: no cover - not used by kvlab
        raise NotImplementedError("a budgeted cache cannot be cropped by position")

    # --- kvlab API --------------------------------------------------------------------------
    @property
    def slot_bytes(self) -> int:
        """Bytes of one slot (one token in every KV head of every batch row), keys + values."""
        if self._k is None:
            return 0
        b, h, _, d = self._k.shape
        return b * h * (d + self._v.shape[-1]) * self._k.element_size()

    @property
    def bytes_held(self) -> int:
        return self.length * self.slot_bytes

    @property
    def bytes_allocated(self) -> int:
        if self._k is None:
            return 0
        return self._k.numel() * self._k.element_size() + self._v.numel() * self._v.element_size()

    def tokens_held(self) -> torch.Tensor:
        """Valid (non-empty) slots per ``(batch, kv_head)``."""
        return (self.positions >= 0).sum(-1)

    def extra(self, name: str) -> torch.Tensor:
        """A per-token statistic ``(batch, kv_heads, length)`` float32, created as zeros on first use."""
        if name not in self._extras:
            b, h, cap = self._pos.shape
            self._extras[name] = torch.zeros(b, h, cap, dtype=torch.float32, device=self._pos.device)
            self._refresh_views()
        return self.extras[name]

    def keep(self, index: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """Keep the slots ``index`` ``(batch, kv_heads, k)`` (in that order); drop the rest.

        ``valid`` ``(batch, kv_heads, k)`` marks which of the kept slots hold a token; False entries
        become empty slots (used when heads keep different numbers of tokens).
        """
        k = index.shape[-1]
        assert k <= self.length, "keep() cannot grow a layer"
        idx = index.unsqueeze(-1)
        new_k = self.keys.gather(2, idx.expand(-1, -1, -1, self._k.shape[-1]))
        new_v = self.values.gather(2, idx.expand(-1, -1, -1, self._v.shape[-1]))
        new_pos = self.positions.gather(2, index)
        new_extras = {name: t.gather(2, index) for name, t in self.extras.items()}
        if valid is not None and not bool(valid.all()):
            new_pos = new_pos.masked_fill(~valid, -1)
            new_k = new_k.masked_fill(~valid.unsqueeze(-1), 0)
            new_v = new_v.masked_fill(~valid.unsqueeze(-1), 0)
            self.has_holes = True
        else:
            self.has_holes = bool(self.has_holes and (new_pos < 0).any())
        self._k[:, :, :k].copy_(new_k)
        self._v[:, :, :k].copy_(new_v)
        self._pos[:, :, :k].copy_(new_pos)
        for name, t in new_extras.items():
            self._extras[name][:, :, :k].copy_(t)
        self.meter.add((k - self.length) * self.slot_bytes)
        self.length = k
        self._refresh_views()

    # --- fixed-capacity decoding (capturable: no host syncs, no shape changes) ----------------
    def make_static(self, extra: int) -> None:
        """Switch to fixed-capacity decoding with ``extra`` empty slots after the held ones.

        Each new token is written into the slot ``free`` points at; the buffers never change shape,
        so a decoding step can be captured (CUDA graphs). Non-evicting methods advance ``free``; a
        decode-time method sets it to the slot it evicts (:func:`kvlab.apply_method.State`).
        """
        assert not self.static and self.is_initialized
        b, h = self._k.shape[:2]
        cap = self.length + extra
        if self._k.shape[2] != cap:  # exactly `cap` slots: contiguous views, no unread slack (one layer at a time)
            self._reallocate(cap)
        self._pos[:, :, self.length:cap] = -1
        self._k[:, :, self.length:cap] = 0  # masked slots must not hold NaN garbage (0 * NaN = NaN)
        self._v[:, :, self.length:cap] = 0
        for buf in self._extras.values():
            buf[:, :, self.length:cap] = 0
        self.free = torch.full((b, h), self.length, dtype=torch.long, device=self._pos.device)
        self.seen_t = torch.tensor(self.seen, dtype=torch.long, device=self._pos.device)
        self.static = True
        self.length = cap
        self._refresh_views()

    def _update_static(self, key_states: torch.Tensor, value_states: torch.Tensor):
        b, h, q, d = key_states.shape
        assert q == 1, "static mode decodes one token at a time"
        # index_put_ through the views attention reads (never through the buffers behind them): under
        # torch.compile that is done in place, where scatter_ or an aliased buffer copies the cache whole.
        bi = torch.arange(b, device=key_states.device).view(b, 1)
        hi = torch.arange(h, device=key_states.device).view(1, h)
        index = (bi, hi, self.free)
        self.keys.index_put_(index, key_states[:, :, 0])
        self.values.index_put_(index, value_states[:, :, 0])
        self.positions.index_put_(index, self.seen_t.expand(b, h))
        for buf in self.extras.values():
            buf.index_put_(index, torch.zeros((), dtype=buf.dtype, device=buf.device).expand(b, h))
        self.seen_t += 1  # the host-side ``seen`` is brought up to date when decoding ends
        self.free += 1
        return self.keys, self.values

    def valid_slots(self) -> int:
        """Slots holding a token (host sync; for accounting outside the decoding loop)."""
        return int((self.positions >= 0).sum(-1).max()) if self.length else 0

    def clone(self, meter: KVMeter, spare: int | None = None) -> KVLayer:
        """A deep copy holding the same tokens (for reusing a prefilled context).

        ``spare``: free slots the copy has after its tokens; None keeps this layer's capacity, 0 gives
        the smallest copy (to store a prefilled context without its prefill slack).
        """
        assert not self.static, "a static (decoding) layer is not cloned"
        other = type(self).__new__(type(self))
        KVLayer.__init__(other, self.sliding_window, reserve=self.reserve if spare is None else 0, meter=meter)
        other.length, other.seen, other.has_holes = self.length, self.seen, self.has_holes
        if self.is_initialized:
            cap = self._k.shape[2] if spare is None else self.length + spare
            other.dtype, other.device, other.is_initialized = self.dtype, self.device, True
            other._k, other._v = self._k[:, :, :cap].clone(), self._v[:, :, :cap].clone()
            other._pos = self._pos[:, :, :cap].clone()
            other._extras = {n: t[:, :, :cap].clone() for n, t in self._extras.items()}
            meter.add(other.bytes_held)
        other._refresh_views()
        return other

    # --- internals ---------------------------------------------------------------------------
    def _ensure_capacity(self, b, h, d, dv, needed, dtype, device) -> None:
        if self._k is not None and self._k.shape[2] >= needed:
            return
        old = 0 if self._k is None else self._k.shape[2]
        self._reallocate(max(needed, self.reserve, 2 * old, 16), (b, h, d, dv, dtype, device))

    def _reallocate(self, cap: int, layout: tuple | None = None) -> None:
        """New buffers of ``cap`` slots (``layout = (b, h, d, dv, dtype, device)``, default: the current
        buffers'), holding the current tokens."""
        if layout is None:
            layout = (*self._k.shape[:2], self._k.shape[-1], self._v.shape[-1], self._k.dtype, self._k.device)
        b, h, d, dv, dtype, device = layout
        k = torch.empty(b, h, cap, d, dtype=dtype, device=device)
        v = torch.empty(b, h, cap, dv, dtype=dtype, device=device)
        pos = torch.full((b, h, cap), -1, dtype=torch.long, device=device)
        extras = {n: torch.zeros(b, h, cap, dtype=torch.float32, device=device) for n in self._extras}
        if self.length:
            k[:, :, : self.length].copy_(self.keys)
            v[:, :, : self.length].copy_(self.values)
            pos[:, :, : self.length].copy_(self.positions)
            for n, t in self.extras.items():
                extras[n][:, :, : self.length].copy_(t)
        self._k, self._v, self._pos, self._extras = k, v, pos, extras
        self._refresh_views()

    def _refresh_views(self) -> None:
        if self._k is None:
            self.keys = self.values = self.positions = None
            self.extras = {}
            return
        n = self.length
        self.keys, self.values = self._k[:, :, :n], self._v[:, :, :n]
        self.positions = self._pos[:, :, :n]
        self.extras = {name: t[:, :, :n] for name, t in self._extras.items()}


class BudgetCache(Cache):
    """A transformers ``Cache`` of :class:`KVLayer` s, one per decoder layer that keeps keys and values.

    In hybrid models (Qwen3.5, Qwen3-Next, LFM2 ...) the linear-attention / convolution layers keep
    transformers' own state layers, untouched by kvlab: the budget applies to the attention layers.
    ``kv_layers`` lists ``(layer index, KVLayer)`` for those that hold keys and values.

    Args:
        spec: the model's spec (its layer types and which are sliding-window layers).
        reserve: slots to preallocate per layer on first use (budget + chunk, typically).
    """

    def __init__(self, spec: ModelSpec, reserve: int = 0):
        from kvlab import hybrid_layers

        self.meter = KVMeter()
        super().__init__(layers=hybrid_layers.build_layers(spec, reserve, self.meter))
        self.spec = spec

    @property
    def has_states(self) -> bool:
        """Whether some layers keep a linear-attention/state-space state (hybrid models)."""
        return any(not isinstance(layer, KVLayer) or isinstance(layer, LinearAttentionCacheLayerMixin)
                   for layer in self.layers)

    @property
    def kv_layers(self) -> list[tuple[int, KVLayer]]:
        """``(layer index, layer)`` for every layer that keeps keys and values."""
        return [(idx, layer) for idx, layer in enumerate(self.layers) if isinstance(layer, KVLayer)]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Tokens the sequence has had (read from an attention layer: state layers may not count them)."""
        if not isinstance(self.layers[layer_idx], KVLayer):
            kv = self.kv_layers
            return kv[0][1].get_seq_length() if kv else 0
        return self.layers[layer_idx].get_seq_length()

    @property
    def bytes_held(self) -> int:
        return self.meter.held

    @property
    def peak_bytes(self) -> int:
        return self.meter.peak

    @property
    def bytes_allocated(self) -> int:
        return sum(layer.bytes_allocated for _, layer in self.kv_layers)

    def tokens_per_layer(self) -> list[float]:
        """Mean valid tokens per KV head, for each layer that keeps keys and values."""
        return [float(layer.tokens_held().float().mean()) if layer.length else 0.0 for _, layer in self.kv_layers]

    def clone(self, spare: int | None = None) -> BudgetCache:
        """A deep copy (the original stays untouched when the copy is extended).

        ``spare``: free slots per layer after the held tokens (None: the same capacity as here).
        """
        other = BudgetCache.__new__(BudgetCache)
        other.meter = KVMeter()
        layers = [layer.clone(other.meter, spare) if isinstance(layer, KVLayer) else None for layer in self.layers]
        Cache.__init__(other, layers=layers)
        other.spec = self.spec
        other.copy_states(self)
        other.meter.reset_peak()
        return other

    def copy_states(self, other: BudgetCache) -> None:
        """Take copies of ``other``'s linear-attention/state layers (hybrid models); KV layers stay."""
        for idx, layer in enumerate(other.layers):
            if not isinstance(layer, KVLayer):
                self.layers[idx] = copy.deepcopy(layer)

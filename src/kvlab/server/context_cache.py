"""A byte-bounded LRU store of prefilled (compressed) contexts, for reuse across requests.

Many requests share one long document and differ only in the question. The server prefills the
document once, WITHOUT the question (query-agnostic compression), stores the compressed cache
here, and answers later requests with a copy of it (``continue_generation(copy=True)``).

An entry is found only by an exact key: the served model, the method with its hyperparameters,
the budget as asked, the prefill chunk size and the context's token ids. Everything in the key
changes what the compressed cache holds, so any difference is a miss. The store counts the bytes
its tensors really occupy (``bytes_allocated`` of the cache, which includes preallocated slack,
plus the saved logits) and evicts the least recently used entries to stay under its limit; an
entry larger than the whole limit is not stored.

Thread-safe: the engine worker reads and writes it, the HTTP side reads its statistics.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ContextKey:
    """Everything that determines a compressed context's content."""

    model: str
    method: str  # repr() of the Method instance: name and every hyperparameter
    budget: str
    chunk_size: int | None
    context_ids: tuple[int, ...]

    @classmethod
    def make(cls, model: str, method: Any, budget: Any, chunk_size: int | None,
             context_ids: Sequence[int]) -> ContextKey:
        return cls(model, repr(method), str(budget), chunk_size, tuple(context_ids))


def entry_bytes(prefilled: Any) -> int:
    """Memory held by a :class:`~kvlab.engine.PrefilledContext`: cache tensors plus saved logits."""
    logits = prefilled.last_logits
    return int(prefilled.cache.bytes_allocated) + logits.numel() * logits.element_size()


@dataclass
class CacheStats:
    entries: int
    bytes: int
    limit_bytes: int
    hits: int
    misses: int
    evictions: int
    rejected: int  # entries larger than the whole limit, not stored

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class ContextCache:
    """LRU of prefilled contexts bounded by ``limit_bytes`` (0 disables the store).

    ``sizeof`` measures a value in bytes (default :func:`entry_bytes`); tests pass plain objects.
    """

    def __init__(self, limit_bytes: int, sizeof=entry_bytes):
        if limit_bytes < 0:
            raise ValueError(f"limit_bytes must be >= 0, not {limit_bytes}")
        self.limit_bytes = limit_bytes
        self._sizeof = sizeof
        self._entries: OrderedDict[ContextKey, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = self.rejected = 0

    @property
    def enabled(self) -> bool:
        return self.limit_bytes > 0

    def get(self, key: ContextKey) -> Any | None:
        """The stored value for ``key`` (now the most recently used), or None."""
        with self._lock:
            item = self._entries.get(key)
            if item is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: ContextKey, value: Any) -> bool:
        """Store ``value``, evicting least recently used entries to make room.

        Returns False (and stores nothing) when the store is disabled or the value alone is larger
        than the limit.
        """
        size = int(self._sizeof(value))
        with self._lock:
            if not self.enabled or size > self.limit_bytes:
                self.rejected += self.enabled
                return False
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            while self._entries and self._bytes + size > self.limit_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._bytes -= evicted
                self.evictions += 1
            self._entries[key] = (value, size)
            self._bytes += size
            assert self._bytes <= self.limit_bytes, "context cache over its byte limit"
            return True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(entries=len(self._entries), bytes=self._bytes, limit_bytes=self.limit_bytes,
                              hits=self.hits, misses=self.misses, evictions=self.evictions,
                              rejected=self.rejected)

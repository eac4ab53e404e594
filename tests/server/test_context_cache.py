"""The byte-bounded LRU of prefilled contexts, with plain values of known sizes."""

from __future__ import annotations

import pytest

from kvlab.server.context_cache import ContextCache, ContextKey


def key(i: int, method: str = "snapkv") -> ContextKey:
    return ContextKey.make("m", method, "25%", 4096, [i, i + 1, i + 2])


def sized(limit: int) -> ContextCache:
    return ContextCache(limit, sizeof=lambda value: value[1])  # values are (name, bytes)


def test_evicts_least_recently_used_to_stay_under_the_limit():
    cache = sized(100)
    for i in range(3):
        assert cache.put(key(i), (f"v{i}", 40)) or i == 2
    assert cache.get(key(0)) is None  # the oldest went to make room for the third
    assert cache.get(key(1)) == ("v1", 40) and cache.get(key(2)) == ("v2", 40)
    cache.get(key(1))  # now key 2 is the least recently used
    cache.put(key(3), ("v3", 40))
    assert key(2) not in cache and key(1) in cache and key(3) in cache
    stats = cache.stats()
    assert stats.bytes == 80 <= stats.limit_bytes and stats.evictions == 2


def test_key_covers_everything_that_changes_the_compressed_context():
    cache = sized(1000)
    cache.put(key(0), ("a", 1))
    assert cache.get(key(0, method="snapkv(window_size=8)")) is None
    assert cache.get(ContextKey.make("m", "snapkv", "50%", 4096, [0, 1, 2])) is None
    assert cache.get(ContextKey.make("m", "snapkv", "25%", None, [0, 1, 2])) is None
    assert cache.get(ContextKey.make("other", "snapkv", "25%", 4096, [0, 1, 2])) is None
    assert cache.get(ContextKey.make("m", "snapkv", "25%", 4096, [0, 1, 3])) is None
    assert cache.get(ContextKey.make("m", "snapkv", "25%", 4096, (0, 1, 2))) == ("a", 1)


def test_oversized_entries_and_a_disabled_cache_store_nothing():
    cache = sized(100)
    cache.put(key(0), ("small", 10))
    assert not cache.put(key(1), ("huge", 101))
    assert key(0) in cache and cache.stats().rejected == 1  # nothing was evicted for it
    off = sized(0)
    assert not off.enabled and not off.put(key(0), ("x", 1)) and len(off) == 0


def test_replacing_a_key_does_not_double_count():
    cache = sized(100)
    cache.put(key(0), ("a", 60))
    cache.put(key(0), ("b", 70))
    assert cache.stats().bytes == 70 and cache.get(key(0)) == ("b", 70)


def test_negative_limit_is_refused():
    with pytest.raises(ValueError):
        ContextCache(-1)

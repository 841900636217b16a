"""The feature cache is bounded by bytes, counts hits and misses, and computes a key once."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from boxmask.runtime.cache import ByteLRUCache


@dataclass
class Blob:
    nbytes: int


def test_eviction_is_by_bytes_least_recently_used_first() -> None:
    cache: ByteLRUCache[Blob] = ByteLRUCache(max_bytes=100)
    cache.put("a", Blob(40))
    cache.put("b", Blob(40))
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("c", Blob(40))  # 120 > 100: evict the least recently used, b
    assert "b" not in cache and "a" in cache and "c" in cache
    stats = cache.stats()
    assert (stats.entries, stats.bytes, stats.evictions) == (2, 80, 1)
    cache.put("d", Blob(90))  # needs a and c gone
    assert list(cache._data) == ["d"] and cache.stats().bytes == 90


def test_many_small_entries_fit_where_one_large_did() -> None:
    cache: ByteLRUCache[Blob] = ByteLRUCache(max_bytes=100)
    for i in range(10):
        cache.put(str(i), Blob(10))
    assert len(cache) == 10 and cache.stats().evictions == 0
    cache.put("big", Blob(95))
    assert len(cache) == 1


def test_an_entry_larger_than_the_budget_is_kept_alone() -> None:
    cache: ByteLRUCache[Blob] = ByteLRUCache(max_bytes=50)
    cache.put("a", Blob(10))
    cache.put("huge", Blob(500))
    assert "huge" in cache and "a" not in cache
    cache.put("b", Blob(10))
    assert "huge" not in cache and "b" in cache


def test_hits_and_misses_are_counted() -> None:
    cache: ByteLRUCache[Blob] = ByteLRUCache(max_bytes=100)
    assert cache.get("x") is None
    value, hit = cache.get_or_compute("x", lambda: Blob(1))
    assert not hit
    _, hit = cache.get_or_compute("x", lambda: pytest.fail("computed twice"))
    assert hit
    assert cache.get("x") is value
    stats = cache.stats()
    assert (stats.hits, stats.misses) == (2, 2)


def test_zero_budget_caches_nothing() -> None:
    cache: ByteLRUCache[Blob] = ByteLRUCache(max_bytes=0)
    cache.put("a", Blob(1))
    assert len(cache) == 0


def test_concurrent_requests_for_one_key_compute_it_once() -> None:
    cache: ByteLRUCache[Blob] = ByteLRUCache(max_bytes=100)
    calls = 0

    def compute() -> Blob:
        nonlocal calls
        calls += 1
        time.sleep(0.05)
        return Blob(10)

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_compute("k", compute)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == 1
    assert len({id(v) for v, _ in results}) == 1
    assert sum(not hit for _, hit in results) == 1
    assert cache.stats().misses == 1 and cache.stats().hits == 7


def test_a_failed_computation_reaches_every_waiter_and_is_not_cached() -> None:
    cache: ByteLRUCache[Blob] = ByteLRUCache(max_bytes=100)
    with pytest.raises(ValueError, match="broken"):
        cache.get_or_compute("k", lambda: (_ for _ in ()).throw(ValueError("broken")))
    assert "k" not in cache
    value, hit = cache.get_or_compute("k", lambda: Blob(3))
    assert not hit and value.nbytes == 3

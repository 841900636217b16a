"""A thread-safe LRU cache of per-image encoder outputs, bounded by bytes.

A count bound would be meaningless here: one entry is ~80 MB for ResNet-50-FPN at 800x1216 and
~5 MB for a small model, so the budget is in bytes. Concurrent requests for the same new image
compute it once (the others wait for that result) instead of running the encoder twice.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar


class Sized(Protocol):
    @property
    def nbytes(self) -> int: ...


V = TypeVar("V", bound=Sized)


@dataclass(frozen=True)
class CacheStats:
    """Counters since the cache was made (hits, misses, evictions) and its current size."""

    hits: int
    misses: int
    evictions: int
    entries: int
    bytes: int
    max_bytes: int


@dataclass
class _InFlight:
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class ByteLRUCache(Generic[V]):
    """LRU mapping of str keys to values with an `nbytes`, holding at most `max_bytes` in total.

    One value larger than the whole budget is still kept, alone, so that the image just set can
    be used; it is the first to go when anything else is added. `max_bytes=0` disables caching.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._data: OrderedDict[str, V] = OrderedDict()
        self._bytes = 0
        self._hits = self._misses = self._evictions = 0
        self._lock = threading.Lock()
        self._in_flight: dict[str, _InFlight] = {}

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def get(self, key: str) -> V | None:
        """The value (now most recently used) or None; counts a hit or a miss."""
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self._misses += 1
                return None
            self._data.move_to_end(key)
            self._hits += 1
            return value

    def peek(self, key: str) -> V | None:
        """The value or None, counting nothing and leaving the order as it is: for a look that
        is not a use (the server sizing a request before it queues)."""
        with self._lock:
            return self._data.get(key)

    def put(self, key: str, value: V) -> None:
        with self._lock:
            self._put_locked(key, value)

    def _put_locked(self, key: str, value: V) -> None:
        if self.max_bytes == 0:
            return
        old = self._data.pop(key, None)
        if old is not None:
            self._bytes -= old.nbytes
        self._data[key] = value
        self._bytes += value.nbytes
        while self._bytes > self.max_bytes and len(self._data) > 1:
            _, evicted = self._data.popitem(last=False)
            self._bytes -= evicted.nbytes
            self._evictions += 1

    def get_or_compute(self, key: str, compute: Callable[[], V]) -> tuple[V, bool]:
        """`(value, hit)`: the cached value, or `compute()` stored under `key`.

        While one thread computes a key, others asking for the same key wait for it (and count
        as hits) rather than computing it again. An exception in `compute` reaches every waiter.
        """
        while True:
            with self._lock:
                value = self._data.get(key)
                if value is not None:
                    self._data.move_to_end(key)
                    self._hits += 1
                    return value, True
                flight = self._in_flight.get(key)
                if flight is None:
                    flight = self._in_flight[key] = _InFlight()
                    self._misses += 1
                    owner = True
                else:
                    owner = False
            if not owner:
                flight.done.wait()
                if flight.error is not None:
                    raise flight.error
                continue  # now cached (or already evicted: then compute it ourselves)
            try:
                value = compute()
            except BaseException as e:
                flight.error = e
                raise
            else:
                with self._lock:
                    self._put_locked(key, value)
                return value, False
            finally:
                with self._lock:
                    del self._in_flight[key]
                flight.done.set()

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                evictions=self._evictions,
                entries=len(self._data),
                bytes=self._bytes,
                max_bytes=self.max_bytes,
            )

"""A small in-memory cache with a size bound and an age limit.

``BoundedCache(max_entries, ttl)`` keeps at most ``max_entries`` values,
dropping the least recently used first, and answers a miss for a value put
more than ``ttl`` seconds ago. It is what keeps a long-running process's
memory flat while it caches hot reads (identity's validated tokens and
remembered rows).

Every operation is a handful of ``OrderedDict`` calls, each atomic under the
GIL, so the cache may be read on the event loop and written from worker
threads without a lock. Two threads racing can only make it evict one entry
too many or miss a hit, never hold more than ``max_entries`` for longer than
the write that overshot.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["BoundedCache"]

V = TypeVar("V")


class BoundedCache(Generic[V]):
    def __init__(self, max_entries: int, ttl: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if max_entries < 1:
            raise ValueError("a cache must hold at least one entry")
        self.max_entries = max_entries
        self.ttl = ttl if ttl is not None and ttl > 0 else None
        self._clock = clock
        self._data: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        return self.get(key) is not None

    def get(self, key: Hashable) -> V | None:
        """The value put under ``key`` if it is younger than ``ttl``, else None."""
        entry = self._data.get(key)
        if entry is None:
            return None
        if self.ttl is not None and self._clock() - entry[0] > self.ttl:
            self._data.pop(key, None)
            return None
        try:
            self._data.move_to_end(key)
        except KeyError:  # evicted by another thread meanwhile; the value is still right
            pass
        return entry[1]

    def put(self, key: Hashable, value: V) -> None:
        data = self._data
        data.pop(key, None)  # so that the new entry goes in last, as the most recent
        data[key] = (self._clock(), value)
        while len(data) > self.max_entries:
            try:
                data.popitem(last=False)
            except KeyError:
                break

    def pop(self, key: Hashable) -> V | None:
        entry = self._data.pop(key, None)
        return None if entry is None else entry[1]

    def clear(self) -> None:
        self._data.clear()

"""The cache values behind ``MemoryStore``: least recently used first out, with expiry.

Synchronous, not thread-safe by itself (``MemoryStore`` calls it under its lock). What
``cachetools.TLRUCache`` did here, for a few plain operations: an ``OrderedDict`` in
order of use (a read moves a value to the end) and a heap of expiry times. A write
first drops what has expired, then, when the cache is over its size, the least
recently used values; so expired values always go before live ones. A read of an
expired value misses (and drops it).
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict

__all__ = ["MemoryCache"]


class MemoryCache:
    """At most ``max_entries`` values, each until its expiry time."""

    __slots__ = ("_expiries", "_values", "max_entries")

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._values: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # -> (value, expires)
        self._expiries: list[tuple[float, str]] = []  # a heap; may name values since replaced

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: str, now: float) -> bytes | None:
        """The value, or ``None`` when missing or expired (a hit becomes the most recent)."""
        values = self._values
        entry = values.get(key)
        if entry is None:
            return None
        if not now < entry[1]:
            del values[key]
            return None
        values.move_to_end(key)
        return entry[0]

    def set(self, key: str, value: bytes, ttl: float | None, now: float) -> None:
        """Keep ``value`` for ``ttl`` seconds (``None``: until evicted; ``<= 0``: delete)."""
        self.expire(now)
        values = self._values
        expires = math.inf if ttl is None else now + ttl
        values.pop(key, None)
        if not now < expires:
            return
        values[key] = (value, expires)
        if expires != math.inf:
            heapq.heappush(self._expiries, (expires, key))
        while len(values) > self.max_entries:
            values.popitem(last=False)

    def delete(self, key: str) -> None:
        """Drop the value if present."""
        self._values.pop(key, None)

    def expire(self, now: float) -> None:
        """Drop every value that has expired."""
        values, expiries = self._values, self._expiries
        if len(expiries) > 2 * len(values) + 64:  # mostly replaced or evicted: rebuild
            expiries[:] = [(e, k) for k, (_, e) in values.items() if e != math.inf]
            heapq.heapify(expiries)
        while expiries and not now < expiries[0][0]:
            _, key = heapq.heappop(expiries)
            entry = values.get(key)
            if entry is not None and not now < entry[1]:
                del values[key]

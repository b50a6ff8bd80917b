"""``MemoryCache``, the cache table behind ``MemoryStore``: least recently used first
out, expiry by a heap; and the store's plain calls that use it."""

from __future__ import annotations

import math
import warnings

import pytest

from llmguard import MemoryStore, Window
from llmguard._stores import memory
from llmguard._stores._memory_cache import MemoryCache
from llmguard._stores.memory import PerProcessStoreWarning


def test_a_value_lives_until_its_expiry() -> None:
    cache = MemoryCache(10)
    assert cache.get("k", 0.0) is None
    cache.set("k", b"v", 5.0, 0.0)
    cache.set("forever", b"f", None, 0.0)
    assert cache.get("k", 4.999) == b"v"
    assert len(cache) == 2
    assert cache.get("k", 5.0) is None  # expired at its expiry: a miss, and dropped
    assert len(cache) == 1
    assert cache.get("forever", 1e12) == b"f"


def test_a_ttl_of_zero_or_less_deletes() -> None:
    cache = MemoryCache(10)
    cache.set("k", b"v", None, 0.0)
    cache.set("k", b"w", 0.0, 1.0)
    assert cache.get("k", 1.0) is None and len(cache) == 0
    cache.set("k", b"v", 10.0, 1.0)
    cache.set("k", b"w", -1.0, 2.0)
    assert cache.get("k", 2.0) is None and len(cache) == 0


def test_a_replaced_value_keeps_its_own_expiry() -> None:
    cache = MemoryCache(10)
    cache.set("k", b"short", 10.0, 0.0)
    cache.set("k", b"long", 100.0, 5.0)
    cache.expire(20.0)  # the heap still names the first expiry: it must not drop "long"
    assert cache.get("k", 20.0) == b"long"
    cache.set("k", b"none", None, 30.0)
    cache.expire(1e9)
    assert cache.get("k", 1e9) == b"none"


def test_the_least_recently_used_goes_first() -> None:
    cache = MemoryCache(3)
    for key in "abc":
        cache.set(key, key.encode(), None, 0.0)
    assert cache.get("a", 0.0) == b"a"  # now the most recent
    cache.set("d", b"d", None, 0.0)
    assert [cache.get(key, 0.0) for key in "abcd"] == [b"a", None, b"c", b"d"]


def test_expired_values_go_before_live_ones() -> None:
    cache = MemoryCache(2)
    cache.set("old", b"o", None, 0.0)  # the least recent, but live
    cache.set("brief", b"b", 5.0, 0.0)
    cache.set("new", b"n", None, 10.0)  # "brief" expired: it goes, "old" stays
    assert cache.get("old", 10.0) == b"o" and cache.get("new", 10.0) == b"n"
    assert cache.get("brief", 10.0) is None and len(cache) == 2


def test_the_expiry_heap_is_rebuilt_when_mostly_stale() -> None:
    cache = MemoryCache(100)
    for i in range(500):
        cache.set("k", b"%d" % i, 1000.0, float(i))  # each set leaves a stale heap entry
        assert len(cache._expiries) <= 2 * len(cache) + 64 + 1
    cache.set("other", b"o", 50.0, 500.0)
    assert cache.get("k", 1000.0) == b"499"
    cache.expire(1498.0)  # set at 499 for 1000 s: live until 1499
    assert cache.get("k", 1498.0) == b"499" and cache.get("other", 1498.0) is None
    cache.expire(1499.0)
    assert len(cache) == 0 and cache.get("k", 1499.0) is None


def test_delete() -> None:
    cache = MemoryCache(10)
    cache.set("k", b"v", 5.0, 0.0)
    cache.delete("k")
    cache.delete("missing")
    assert cache.get("k", 0.0) is None and len(cache) == 0
    cache.expire(10.0)  # its stale heap entry names nothing
    assert len(cache) == 0


# -- MemoryStore over it ---------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.anyio
async def test_the_store_and_its_plain_calls_share_the_table() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock, max_entries=2)
    await store.set("a", b"1", ttl=10)
    assert store.get_now("a") == b"1" and await store.get("a") == b"1"
    store.set_now("b", bytearray(b"2"), ttl=None)  # type: ignore[arg-type]
    assert await store.get("b") == b"2" and isinstance(store.get_now("b"), bytes)
    store.set_now("c", b"3", ttl=None)  # over max_entries: "a" (least recent) goes
    assert store.get_now("a") is None and store.get_now("c") == b"3"
    store.set_now("b", b"x", ttl=0)  # deletes
    assert await store.get("b") is None
    await store.set("d", b"4", ttl=5)
    clock.t += 5
    assert store.get_now("d") is None
    await store.delete("c")
    assert store.get_now("c") is None


def test_plain_calls_only_for_the_stores_own_commands() -> None:
    store = MemoryStore()
    assert store.plain_calls("get", "set", "reserve_many", "settle_many", "reserve", "settle")

    class Wrapped(MemoryStore):
        async def set(self, key: str, value: bytes, *, ttl: float | None) -> None:
            await super().set(key, value, ttl=ttl)

    assert not Wrapped().plain_calls("get", "set")
    assert Wrapped().plain_calls("get", "reserve")
    replaced = MemoryStore()
    replaced.get = replaced.get  # type: ignore[method-assign]
    assert not replaced.plain_calls("get")
    assert replaced.plain_calls("set")


@pytest.mark.anyio
async def test_a_fork_is_noticed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_forks", [memory._forks[0]])  # a counter the test may move
    store = MemoryStore()
    window = Window.fixed(3600)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        await store.reserve("k", "r1", 1, limit=10, window=window, hold=60)  # no warning
    memory._after_fork_in_child()  # what runs in the child of a fork
    with pytest.warns(PerProcessStoreWarning, match="another process"):
        await store.reserve("k", "r2", 1, limit=10, window=window, hold=60)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = await store.reserve("k", "r3", 1, limit=10, window=window, hold=60)
    assert result.ok and result.reserved == 3 and not math.isnan(result.reset_at)

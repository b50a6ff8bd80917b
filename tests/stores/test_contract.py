"""The store contract: every store implementation must pass these tests.

The ``store`` fixture runs each test against every entry of ``STORE_FACTORIES``. A
factory is an async context manager yielding a ``StoreHarness``: the store plus the
hooks a test needs to move the store's clock. To add a backend, write a factory (for
SQLite or Redis, one that points the store at a clock the harness controls) and add
it to ``STORE_FACTORIES``. The tests use nothing but the protocol methods.
"""

from __future__ import annotations

import functools
import math
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol
from zoneinfo import ZoneInfo

import anyio
import pytest
from _redis_servers import (
    CLUSTER,
    TRIO_REASON,
    age_keys,
    delete_prefix,
    on_asyncio,
    require_redis,
    require_server_binary,
)

from llmguard._stores._roles import BudgetLedger, CacheStore, SharedState, Window
from llmguard._stores.memory import SWEEP_EVERY, MemoryStore
from llmguard._stores.redis import RedisStore
from llmguard._stores.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


class Store(BudgetLedger, CacheStore, SharedState, Protocol):
    """A store that plays all three roles."""


def at(
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    *,
    tz: str = "UTC",
) -> float:
    """Epoch seconds of a wall-clock time in ``tz``: ``at(2024, 1, 15, 12)``."""
    return datetime(year, month, day, hour, minute, second, tzinfo=ZoneInfo(tz)).timestamp()


START = at(2024, 1, 15, 12)  # every test starts here, at the top of an hour
HOUR = Window.fixed(3600)


@dataclass
class StoreHarness:
    """A store under test and the hooks that move its clock."""

    store: Store
    now: Callable[[], float]
    set_time: Callable[[float], None]
    cache_capacity: int | None = None  # None: the backend's eviction is not tested

    def advance(self, seconds: float) -> None:
        self.set_time(self.now() + seconds)


class FakeClock:
    """A wall clock that moves only when told."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


MEMORY_CAPACITY = 8


@asynccontextmanager
async def make_memory_store() -> AsyncIterator[StoreHarness]:
    clock = FakeClock(START)

    def set_time(t: float) -> None:
        clock.t = t

    store = MemoryStore(clock=clock, max_entries=MEMORY_CAPACITY)
    yield StoreHarness(store=store, now=clock, set_time=set_time, cache_capacity=MEMORY_CAPACITY)


def _harness(store: Store, clock: FakeClock) -> StoreHarness:
    def set_time(t: float) -> None:
        clock.t = t

    return StoreHarness(store=store, now=clock, set_time=set_time)


@asynccontextmanager
async def make_sqlite_store() -> AsyncIterator[StoreHarness]:
    clock = FakeClock(START)
    with tempfile.TemporaryDirectory(prefix="llmguard-contract-") as folder:
        # The contract is about semantics; the bound is tested in test_sqlite.py. On a
        # loaded box 150 concurrent commands can wait longer than 250 ms for a thread.
        store = SQLiteStore(f"{folder}/store.db", clock=clock, timeout=5.0)
        try:
            yield _harness(store, clock)
        finally:
            await store.aclose()


# The contract is about semantics; the bound is tested in test_redis.py. A loaded CI
# box can take more than the default 250 ms to open 50 connections at once.
REDIS_TIMEOUT = 5.0


@asynccontextmanager
async def _redis_harness(
    store: RedisStore, prefix: str, urls: list[str]
) -> AsyncIterator[StoreHarness]:
    clock = FakeClock(START)
    store._test_clock = clock  # the scripts read this instead of the server's TIME

    def set_time(t: float) -> None:
        # Cache values expire by Redis's own clock (SET PX): it moves along.
        age_keys(urls, prefix, t - clock.t)
        clock.t = t

    try:
        await store.connect()
        yield StoreHarness(store=store, now=clock, set_time=set_time)
    finally:
        try:
            await delete_prefix(store._client, prefix)
        finally:
            await store.aclose()


@asynccontextmanager
async def make_redis_store() -> AsyncIterator[StoreHarness]:
    if not on_asyncio():
        pytest.skip(TRIO_REASON)
    url = require_redis()
    prefix = f"llmguard-test:{uuid.uuid4().hex}:"
    store = RedisStore.from_url(url, prefix=prefix, timeout=REDIS_TIMEOUT)
    async with _redis_harness(store, prefix, [url]) as harness:
        yield harness


@asynccontextmanager
async def make_redis_cluster_store() -> AsyncIterator[StoreHarness]:
    if not on_asyncio():
        pytest.skip(TRIO_REASON)
    require_server_binary()
    nodes = await anyio.to_thread.run_sync(CLUSTER.ensure)
    prefix = f"llmguard-test:{uuid.uuid4().hex}:"
    store = RedisStore.cluster(nodes, prefix=prefix, timeout=REDIS_TIMEOUT)
    urls = [f"redis://{node}/0" for node in nodes]
    async with _redis_harness(store, prefix, urls) as harness:
        yield harness


STORE_FACTORIES: dict[str, Callable[[], AbstractAsyncContextManager[StoreHarness]]] = {
    "memory": make_memory_store,
    "sqlite": make_sqlite_store,
    "redis": make_redis_store,
    "redis-cluster": make_redis_cluster_store,
}


@pytest.fixture(params=sorted(STORE_FACTORIES))
async def store(request: pytest.FixtureRequest, anyio_backend: str) -> AsyncIterator[StoreHarness]:
    async with STORE_FACTORIES[request.param]() as harness:
        yield harness


async def test_store_plays_every_role(store: StoreHarness) -> None:
    assert isinstance(store.store, BudgetLedger)
    assert isinstance(store.store, CacheStore)
    assert isinstance(store.store, SharedState)


# -- BudgetLedger: reserve -------------------------------------------------------------


async def test_concurrent_reserves_admit_exactly_the_limit(store: StoreHarness) -> None:
    s = store.store
    admitted: list[str] = []

    async def reserve(rid: str) -> None:
        result = await s.reserve("k", rid, 1, limit=100, window=HOUR, hold=60)
        if result.ok:
            admitted.append(rid)

    async with anyio.create_task_group() as tg:
        for i in range(150):
            tg.start_soon(reserve, f"r{i}")
    assert len(admitted) == 100
    usage = await s.usage("k", window=HOUR, limit=100)
    assert (usage.used, usage.reserved, usage.remaining) == (0, 100, 0)


async def test_reserve_admits_up_to_the_limit_and_refuses_beyond(store: StoreHarness) -> None:
    s = store.store
    first = await s.reserve("k", "a", 70, limit=100, window=HOUR, hold=60)
    assert first.ok
    assert (first.used, first.reserved, first.limit, first.remaining) == (0, 70, 100, 30)
    assert first.reset_at == START + 3600

    refused = await s.reserve("k", "b", 31, limit=100, window=HOUR, hold=60)
    assert not refused.ok
    assert (refused.used, refused.reserved, refused.limit, refused.remaining) == (0, 70, 100, 30)
    assert (await s.usage("k", window=HOUR)).reserved == 70  # nothing held

    exact = await s.reserve("k", "b", 30, limit=100, window=HOUR, hold=60)  # a refused id is free
    assert exact.ok
    assert exact.remaining == 0


async def test_refusal_counts_settled_usage(store: StoreHarness) -> None:
    s = store.store
    await s.settle("k", "a", 90, window=HOUR)
    refused = await s.reserve("k", "b", 11, limit=100, window=HOUR, hold=60)
    assert not refused.ok
    assert (refused.used, refused.reserved, refused.remaining) == (90, 0, 10)


async def test_repeated_reserve_holds_once(store: StoreHarness) -> None:
    s = store.store
    assert (await s.reserve("k", "a", 60, limit=100, window=HOUR, hold=60)).ok
    again = await s.reserve("k", "a", 60, limit=100, window=HOUR, hold=60)
    assert again.ok  # would not fit a second time, but it is the same reservation
    assert again.reserved == 60


@pytest.mark.parametrize("close", ["settle", "release"])
async def test_reserve_of_a_closed_id_is_ok_and_holds_nothing(
    store: StoreHarness, close: str
) -> None:
    s = store.store
    await s.reserve("k", "a", 50, limit=100, window=HOUR, hold=60)
    if close == "settle":
        await s.settle("k", "a", 40, window=HOUR)
    else:
        await s.release("k", "a", window=HOUR)
    again = await s.reserve("k", "a", 50, limit=100, window=HOUR, hold=60)
    assert again.ok
    assert again.reserved == 0
    assert again.used == (40 if close == "settle" else 0)


# -- BudgetLedger: settle and release --------------------------------------------------


async def test_settle_counts_the_real_amount_and_frees_the_hold(store: StoreHarness) -> None:
    s = store.store
    await s.reserve("k", "a", 50, limit=100, window=HOUR, hold=60)
    settled = await s.settle("k", "a", 30, window=HOUR)
    assert settled.ok
    assert (settled.used, settled.reserved) == (30, 0)
    assert settled.reset_at == START + 3600


async def test_release_counts_nothing(store: StoreHarness) -> None:
    s = store.store
    await s.reserve("k", "a", 50, limit=100, window=HOUR, hold=60)
    released = await s.release("k", "a", window=HOUR)
    assert released.ok
    assert (released.used, released.reserved) == (0, 0)


async def test_repeated_settle_counts_once(store: StoreHarness) -> None:
    s = store.store
    await s.reserve("k", "a", 50, limit=100, window=HOUR, hold=60)
    await s.settle("k", "a", 30, window=HOUR)
    store.advance(120)  # past the hold: the id is still remembered
    again = await s.settle("k", "a", 30, window=HOUR)
    assert again.ok
    assert again.used == 30


async def test_repeated_release_and_unknown_release_are_no_ops(store: StoreHarness) -> None:
    s = store.store
    await s.reserve("k", "a", 50, limit=100, window=HOUR, hold=60)
    await s.reserve("k", "b", 20, limit=100, window=HOUR, hold=60)
    await s.release("k", "a", window=HOUR)
    assert (await s.release("k", "a", window=HOUR)).reserved == 20
    assert (await s.release("k", "never", window=HOUR)).reserved == 20


async def test_settle_after_release_is_a_no_op(store: StoreHarness) -> None:
    s = store.store
    await s.reserve("k", "a", 50, limit=100, window=HOUR, hold=60)
    await s.release("k", "a", window=HOUR)
    assert (await s.settle("k", "a", 30, window=HOUR)).used == 0


async def test_expired_reservation_frees_the_budget(store: StoreHarness) -> None:
    s = store.store
    await s.reserve("k", "a", 80, limit=100, window=HOUR, hold=30)
    assert not (await s.reserve("k", "b", 80, limit=100, window=HOUR, hold=30)).ok
    store.advance(29)
    assert (await s.usage("k", window=HOUR)).reserved == 80
    store.advance(2)
    assert (await s.usage("k", window=HOUR)).reserved == 0
    assert (await s.reserve("k", "b", 80, limit=100, window=HOUR, hold=30)).ok


async def test_late_settle_after_expiry_still_counts(store: StoreHarness) -> None:
    s = store.store
    await s.reserve("k", "a", 50, limit=100, window=HOUR, hold=30)
    store.advance(60)
    late = await s.settle("k", "a", 45, window=HOUR)
    assert (late.used, late.reserved) == (45, 0)
    assert (await s.settle("k", "a", 45, window=HOUR)).used == 45  # and only once


async def test_settle_without_reservation_counts(store: StoreHarness) -> None:
    s = store.store
    assert (await s.settle("k", "never-reserved", 12, window=HOUR)).used == 12


async def test_keys_are_independent(store: StoreHarness) -> None:
    s = store.store
    await s.reserve("k1", "a", 100, limit=100, window=HOUR, hold=60)
    await s.settle("k1", "b", 7, window=HOUR)
    other = await s.reserve("k2", "a", 100, limit=100, window=HOUR, hold=60)
    assert other.ok
    assert (other.used, other.reserved) == (0, 100)


async def test_usage_reads_without_changing(store: StoreHarness) -> None:
    s = store.store
    empty = await s.usage("k", window=HOUR)
    assert (empty.used, empty.reserved, empty.limit, empty.remaining) == (0, 0, None, None)
    await s.reserve("k", "a", 10, limit=100, window=HOUR, hold=60)
    await s.settle("k", "b", 5, window=HOUR)
    for _ in range(2):
        usage = await s.usage("k", window=HOUR, limit=100)
        assert (usage.used, usage.reserved, usage.remaining) == (5, 10, 85)
        assert usage.reset_at == START + 3600


async def test_cancelled_command_does_nothing(store: StoreHarness) -> None:
    s = store.store
    with anyio.CancelScope() as scope:
        scope.cancel()
        await s.reserve("k", "a", 10, limit=100, window=HOUR, hold=60)
    assert scope.cancelled_caught
    assert (await s.usage("k", window=HOUR)).reserved == 0


# -- BudgetLedger: extend --------------------------------------------------------------


async def test_extend_grows_an_open_reservation_that_fits(store: StoreHarness) -> None:
    s = store.store
    await s.reserve("k", "a", 40, limit=100, window=HOUR, hold=60)
    grown = await s.extend("k", "a/1", 30, limit=100, window=HOUR, hold=60)
    assert grown.ok
    assert grown.reserved == 70
    settled = await s.settle("k", "a", 65, window=HOUR)
    assert (settled.used, settled.reserved) == (65, 0)  # the whole reservation closed


async def test_extend_that_does_not_fit_keeps_the_reservation(store: StoreHarness) -> None:
    s = store.store
    await s.reserve("k", "a", 40, limit=100, window=HOUR, hold=60)
    await s.settle("k", "x", 30, window=HOUR)
    refused = await s.extend("k", "a/1", 31, limit=100, window=HOUR, hold=60)
    assert not refused.ok
    assert (refused.used, refused.reserved, refused.remaining) == (30, 40, 30)
    fits = await s.extend("k", "a/1", 30, limit=100, window=HOUR, hold=60)  # retry, smaller
    assert fits.ok
    assert fits.remaining == 0


async def test_extend_applies_each_step_once(store: StoreHarness) -> None:
    s = store.store
    await s.reserve("k", "a", 10, limit=100, window=HOUR, hold=60)
    await s.extend("k", "a/1", 10, limit=100, window=HOUR, hold=60)
    again = await s.extend("k", "a/1", 10, limit=100, window=HOUR, hold=60)
    assert again.ok
    assert again.reserved == 20
    assert (await s.extend("k", "a/2", 10, limit=100, window=HOUR, hold=60)).reserved == 30


async def test_extend_names_the_reservation_before_the_last_slash(store: StoreHarness) -> None:
    s = store.store
    await s.reserve("k", "user/7", 10, limit=100, window=HOUR, hold=60)
    assert (await s.extend("k", "user/7/1", 5, limit=100, window=HOUR, hold=60)).reserved == 15
    assert (await s.settle("k", "user/7", 15, window=HOUR)).reserved == 0


async def test_extend_refreshes_the_hold(store: StoreHarness) -> None:
    s = store.store
    await s.reserve("k", "a", 10, limit=100, window=HOUR, hold=30)
    store.advance(25)
    await s.extend("k", "a/1", 10, limit=100, window=HOUR, hold=30)
    store.advance(25)  # 50s after the reserve, 25s after the extend
    assert (await s.usage("k", window=HOUR)).reserved == 20
    store.advance(10)
    assert (await s.usage("k", window=HOUR)).reserved == 0


async def test_extend_of_an_expired_reservation_reserves_afresh(store: StoreHarness) -> None:
    s = store.store
    await s.reserve("k", "a", 50, limit=100, window=HOUR, hold=30)
    store.advance(60)
    fresh = await s.extend("k", "a/1", 20, limit=100, window=HOUR, hold=30)
    assert fresh.ok
    assert fresh.reserved == 20  # only the step's amount
    assert (await s.settle("k", "a", 60, window=HOUR)).reserved == 0


async def test_extend_of_an_unknown_reservation_is_refused_when_it_does_not_fit(
    store: StoreHarness,
) -> None:
    s = store.store
    await s.settle("k", "x", 90, window=HOUR)
    refused = await s.extend("k", "a/1", 20, limit=100, window=HOUR, hold=30)
    assert not refused.ok
    assert refused.reserved == 0


async def test_extend_after_settle_holds_nothing(store: StoreHarness) -> None:
    s = store.store
    await s.reserve("k", "a", 10, limit=100, window=HOUR, hold=30)
    await s.settle("k", "a", 10, window=HOUR)
    late = await s.extend("k", "a/1", 10, limit=100, window=HOUR, hold=30)
    assert late.ok
    assert (late.used, late.reserved) == (10, 0)


# -- BudgetLedger: windows -------------------------------------------------------------


async def test_fixed_hour_window_rolls_over(store: StoreHarness) -> None:
    s = store.store
    store.set_time(at(2024, 1, 15, 10, 59, 30))
    await s.settle("k", "a", 50, window=HOUR)
    await s.reserve("k", "b", 20, limit=100, window=HOUR, hold=600)
    usage = await s.usage("k", window=HOUR, limit=100)
    assert (usage.used, usage.reserved, usage.reset_at) == (50, 20, at(2024, 1, 15, 11))
    store.advance(29.5)
    assert (await s.usage("k", window=HOUR)).used == 50
    store.advance(0.5)  # 11:00:00 exactly
    usage = await s.usage("k", window=HOUR, limit=100)
    assert (usage.used, usage.reserved, usage.reset_at) == (0, 20, at(2024, 1, 15, 12))


async def test_fixed_day_window_aligns_to_midnight_in_its_zone(store: StoreHarness) -> None:
    s = store.store
    day = Window.fixed(86400, tz="Europe/Berlin")
    store.set_time(at(2024, 6, 10, 23, 30, tz="Europe/Berlin"))  # 21:30 UTC
    await s.settle("k", "a", 5, window=day)
    usage = await s.usage("k", window=day)
    assert (usage.used, usage.reset_at) == (5, at(2024, 6, 11, tz="Europe/Berlin"))
    store.set_time(at(2024, 6, 11, tz="Europe/Berlin"))
    usage = await s.usage("k", window=day)
    assert (usage.used, usage.reset_at) == (0, at(2024, 6, 12, tz="Europe/Berlin"))


async def test_fixed_day_window_on_a_dst_day(store: StoreHarness) -> None:
    s = store.store
    day = Window.fixed(86400, tz="Europe/Berlin")
    store.set_time(at(2024, 3, 31, 0, 30, tz="Europe/Berlin"))  # CET, before the change
    await s.settle("k", "a", 5, window=day)
    store.set_time(at(2024, 3, 31, 12, tz="Europe/Berlin"))  # CEST: still the same day
    usage = await s.usage("k", window=day)
    assert (usage.used, usage.reset_at) == (5, at(2024, 4, 1, tz="Europe/Berlin"))
    store.set_time(at(2024, 4, 1, tz="Europe/Berlin"))
    assert (await s.usage("k", window=day)).used == 0


@pytest.mark.parametrize(
    ("now", "end", "next_end"),
    [
        (at(2028, 1, 20, 8), at(2028, 2, 1), at(2028, 3, 1)),
        (at(2028, 2, 29, 23, 59, 59), at(2028, 3, 1), at(2028, 4, 1)),  # leap year
        (at(2027, 2, 28, 12), at(2027, 3, 1), at(2027, 4, 1)),
        (at(2027, 12, 31, 23, 59, 59), at(2028, 1, 1), at(2028, 2, 1)),
    ],
    ids=["jan", "feb-leap", "feb", "dec"],
)
async def test_month_window(store: StoreHarness, now: float, end: float, next_end: float) -> None:
    s = store.store
    month = Window.month()
    store.set_time(now)
    await s.settle("k", "a", 5, window=month)
    usage = await s.usage("k", window=month)
    assert (usage.used, usage.reset_at) == (5, end)
    store.set_time(end - 0.5)
    assert (await s.usage("k", window=month)).used == 5
    store.set_time(end)
    usage = await s.usage("k", window=month)
    assert (usage.used, usage.reset_at) == (0, next_end)


async def test_month_window_in_a_zone(store: StoreHarness) -> None:
    s = store.store
    month = Window.month(tz="Europe/Berlin")
    store.set_time(at(2024, 3, 31, 23, 59, tz="Europe/Berlin"))  # 21:59 UTC
    await s.settle("k", "a", 5, window=month)
    assert (await s.usage("k", window=month)).reset_at == at(2024, 4, 1, tz="Europe/Berlin")
    store.set_time(at(2024, 4, 1, tz="Europe/Berlin"))  # still March in UTC
    assert (await s.usage("k", window=month)).used == 0


async def test_sliding_window(store: StoreHarness) -> None:
    s = store.store
    minute = Window.sliding(60)
    await s.settle("k", "a", 10, window=minute)
    store.advance(30)
    await s.settle("k", "b", 20, window=minute)
    usage = await s.usage("k", window=minute)
    assert (usage.used, usage.reset_at) == (30, START + 60)  # when "a" slides out
    store.set_time(START + 59.5)
    assert (await s.usage("k", window=minute)).used == 30
    store.set_time(START + 60)  # "a" is out exactly 60s after it was settled
    usage = await s.usage("k", window=minute)
    assert (usage.used, usage.reset_at) == (20, START + 90)
    store.set_time(START + 90)
    usage = await s.usage("k", window=minute)
    assert (usage.used, usage.reset_at) == (0, START + 150)  # nothing counted: now + 60


async def test_sliding_window_admits_as_entries_slide_out(store: StoreHarness) -> None:
    s = store.store
    minute = Window.sliding(60)
    await s.settle("k", "a", 60, window=minute)
    store.advance(30)
    await s.settle("k", "b", 30, window=minute)
    refused = await s.reserve("k", "c", 50, limit=100, window=minute, hold=10)
    assert not refused.ok
    assert (refused.remaining, refused.reset_at) == (10, START + 60)
    store.set_time(START + 60)
    assert (await s.reserve("k", "c", 50, limit=100, window=minute, hold=10)).ok


async def test_forever_window(store: StoreHarness) -> None:
    s = store.store
    forever = Window.forever()
    await s.settle("k", "a", 5, window=forever)
    store.advance(10 * 365 * 86400)
    usage = await s.usage("k", window=forever)
    assert usage.used == 5
    assert usage.reset_at == math.inf


# -- CacheStore ------------------------------------------------------------------------


async def test_cache_get_set_delete(store: StoreHarness) -> None:
    s = store.store
    assert await s.get("k") is None
    await s.set("k", b"one", ttl=None)
    assert await s.get("k") == b"one"
    await s.set("k", b"two", ttl=None)
    assert await s.get("k") == b"two"
    await s.delete("k")
    assert await s.get("k") is None
    await s.delete("k")  # deleting what is missing is fine


async def test_cache_ttl(store: StoreHarness) -> None:
    s = store.store
    await s.set("k", b"v", ttl=10)
    await s.set("forever", b"f", ttl=None)
    store.advance(9.5)
    assert await s.get("k") == b"v"
    store.advance(0.5)
    assert await s.get("k") is None
    store.advance(365 * 86400)
    assert await s.get("forever") == b"f"


async def test_cache_set_renews_the_ttl(store: StoreHarness) -> None:
    s = store.store
    await s.set("k", b"v", ttl=10)
    store.advance(8)
    await s.set("k", b"w", ttl=10)
    store.advance(8)
    assert await s.get("k") == b"w"


async def test_cache_capacity_evicts_least_recently_used(store: StoreHarness) -> None:
    if store.cache_capacity is None:
        pytest.skip("this backend's eviction is not under test")
    s = store.store
    for i in range(store.cache_capacity):
        await s.set(f"k{i}", b"v", ttl=None)
    assert await s.get("k0") == b"v"  # k0 is now the most recently used
    await s.set("new", b"v", ttl=None)
    assert await s.get("k1") is None
    assert await s.get("k0") == b"v"
    assert await s.get("new") == b"v"


async def test_lock_is_exclusive_until_released(store: StoreHarness) -> None:
    s = store.store
    token = await s.acquire_lock("k", ttl=10)
    assert token
    assert await s.acquire_lock("k", ttl=10) is None
    assert await s.acquire_lock("other", ttl=10)  # other keys are free
    assert await s.release_lock("k", token)
    assert not await s.release_lock("k", token)  # already released
    assert await s.acquire_lock("k", ttl=10) not in (None, token)


async def test_lock_release_with_a_wrong_token_fails(store: StoreHarness) -> None:
    s = store.store
    token = await s.acquire_lock("k", ttl=10)
    assert token
    assert not await s.release_lock("k", "not-the-token")
    assert await s.acquire_lock("k", ttl=10) is None
    assert await s.release_lock("k", token)


async def test_lock_expires(store: StoreHarness) -> None:
    s = store.store
    first = await s.acquire_lock("k", ttl=10)
    assert first
    store.advance(9.5)
    assert await s.acquire_lock("k", ttl=10) is None
    store.advance(0.5)
    assert not await s.release_lock("k", first)  # expired: releasing it achieves nothing
    second = await s.acquire_lock("k", ttl=10)
    assert second
    assert second != first
    assert not await s.release_lock("k", first)
    assert await s.release_lock("k", second)


async def test_locks_are_apart_from_values(store: StoreHarness) -> None:
    s = store.store
    await s.set("k", b"v", ttl=None)
    token = await s.acquire_lock("k", ttl=10)
    assert token
    assert await s.get("k") == b"v"
    await s.delete("k")
    assert await s.acquire_lock("k", ttl=10) is None
    assert await s.release_lock("k", token)


async def test_concurrent_lock_has_one_winner(store: StoreHarness) -> None:
    s = store.store
    tokens: list[str | None] = []

    async def take() -> None:
        tokens.append(await s.acquire_lock("k", ttl=10))

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(take)
    assert len([t for t in tokens if t is not None]) == 1


# -- SharedState -----------------------------------------------------------------------


async def test_compare_and_set_versions(store: StoreHarness) -> None:
    s = store.store
    assert await s.read("k") is None
    assert not await s.compare_and_set("k", 1, b"x", ttl=None)  # missing is version 0
    assert await s.compare_and_set("k", 0, b"a", ttl=None)
    first = await s.read("k")
    assert first is not None
    assert (first.value, first.version) == (b"a", 1)
    assert not await s.compare_and_set("k", 0, b"b", ttl=None)  # no longer missing
    assert not await s.compare_and_set("k", 2, b"b", ttl=None)
    assert await s.compare_and_set("k", 1, b"b", ttl=None)
    second = await s.read("k")
    assert second is not None
    assert (second.value, second.version) == (b"b", 2)


async def test_compare_and_set_ttl(store: StoreHarness) -> None:
    s = store.store
    assert await s.compare_and_set("k", 0, b"a", ttl=10)
    store.advance(9.5)
    assert await s.read("k") is not None
    store.advance(0.5)
    assert await s.read("k") is None
    assert not await s.compare_and_set("k", 1, b"b", ttl=10)
    assert await s.compare_and_set("k", 0, b"b", ttl=None)  # expired counts as missing
    store.advance(365 * 86400)
    current = await s.read("k")
    assert current is not None
    assert current.value == b"b"


async def test_concurrent_compare_and_set_has_one_winner(store: StoreHarness) -> None:
    s = store.store
    wins: list[bool] = []

    async def write(i: int) -> None:
        wins.append(await s.compare_and_set("k", 0, str(i).encode(), ttl=None))

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(write, i)
    assert wins.count(True) == 1
    current = await s.read("k")
    assert current is not None
    assert current.version == 1


async def test_increment(store: StoreHarness) -> None:
    s = store.store
    assert await s.increment("n", 1, ttl=None) == 1
    assert await s.increment("n", 5, ttl=None) == 6
    assert await s.increment("n", -2, ttl=None) == 4
    assert await s.increment("m", 3, ttl=None) == 3


async def test_increment_ttl_runs_from_the_first_increment(store: StoreHarness) -> None:
    s = store.store
    assert await s.increment("n", 1, ttl=10) == 1
    store.advance(9)
    assert await s.increment("n", 1, ttl=10) == 2
    store.advance(1)
    assert await s.increment("n", 1, ttl=10) == 1  # expired: counting again from 0


async def test_concurrent_increments_all_count(store: StoreHarness) -> None:
    s = store.store
    async with anyio.create_task_group() as tg:
        for _ in range(100):
            tg.start_soon(functools.partial(s.increment, "n", 1, ttl=None))
    assert await s.increment("n", 0, ttl=None) == 100


# -- MemoryStore only ------------------------------------------------------------------


def test_memory_store_is_safe_across_threads_and_loops() -> None:
    store = MemoryStore(clock=FakeClock(START))
    admitted: list[bool] = []
    lock = threading.Lock()

    async def worker(n: int) -> None:
        for i in range(50):
            result = await store.reserve("k", f"{n}-{i}", 1, limit=100, window=HOUR, hold=60)
            with lock:
                admitted.append(result.ok)

    threads = [
        threading.Thread(target=anyio.run, args=(worker, n), kwargs={"backend": backend})
        for n, backend in enumerate(["asyncio", "trio"] * 2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert admitted.count(True) == 100


async def test_memory_store_forgets_idle_state(anyio_backend: str) -> None:
    clock = FakeClock(START)
    store = MemoryStore(clock=clock)
    await store.settle("budget", "a", 5, window=HOUR)
    await store.acquire_lock("lock", ttl=1)
    await store.compare_and_set("value", 0, b"v", ttl=1)
    await store.increment("counter", 1, ttl=1)
    clock.t += 2 * 86400
    for _ in range(SWEEP_EVERY):
        await store.get("x")
    assert repr(store) == (
        "MemoryStore(max_entries=10000, budget_keys=0, cached=0, locks=0, values=0, counters=0)"
    )


async def test_memory_store_rejects_negative_amounts(anyio_backend: str) -> None:
    store = MemoryStore(clock=FakeClock(START))
    with pytest.raises(ValueError, match="negative"):
        await store.reserve("k", "a", -1, limit=100, window=HOUR, hold=60)
    with pytest.raises(ValueError, match="negative"):
        await store.settle("k", "a", -1, window=HOUR)


def test_memory_store_needs_room() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryStore(max_entries=0)


async def test_memory_store_defaults_to_the_wall_clock(anyio_backend: str) -> None:
    store = MemoryStore()
    result = await store.reserve("k", "a", 1, limit=1, window=HOUR, hold=60)
    assert datetime.now(UTC).timestamp() <= result.reset_at <= time.time() + 3600

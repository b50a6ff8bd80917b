"""``RedisStore``'s batched ledger commands beyond the budget suites
(``tests/budget/test_batched_*.py`` compare them with the single commands on every
store): one script call per command, bounded failure, and on Redis Cluster the
per-key fallback when the keys sit in several slots.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import pytest
from _proxy import Proxy
from _redis_servers import delete_prefix, require_redis
from redis.crc import key_slot

import llmguard
from llmguard import (
    Budget,
    FunctionProvider,
    Guard,
    LedgerResult,
    Limit,
    MemoryStore,
    Price,
    Pricing,
    Request,
    Response,
    StoreUnavailable,
    Usage,
    Window,
)
from llmguard._stores._roles import LedgerEntry
from llmguard._stores.redis import RedisStore

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

HOUR = Window.fixed(3600)
DAY = Window.fixed(86400)
MINUTE = Window.sliding(60)
EVER = Window.forever()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def new_prefix() -> str:
    return f"llmguard-test:{uuid.uuid4().hex}:"


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A fresh key prefix on the shared Redis; its keys are deleted afterwards."""
    url = require_redis()
    value = new_prefix()
    yield value
    async with RedisStore.from_url(url, prefix=value) as store:
        await delete_prefix(store._client, value)


def batch(*amounts: int | None, limits: Sequence[int] = (100, 10, 10)) -> list[LedgerEntry]:
    windows = (HOUR, MINUTE, EVER)
    return [
        LedgerEntry(f"k:{index}", windows[index], amount, limit=limits[index])
        for index, amount in enumerate(amounts)
    ]


class Counted:
    """Counts the script calls a store sends."""

    def __init__(self, store: RedisStore) -> None:
        self.calls: list[str] = []
        inner = store._eval

        async def counting(name: str, op: str, keys: list[str], args: list[Any]) -> Any:
            self.calls.append(op)
            return await inner(name, op, keys, args)

        store._eval = counting  # type: ignore[method-assign]


async def held(store: Any, entries: Sequence[LedgerEntry]) -> list[tuple[int, int]]:
    out = []
    for entry in entries:
        result = await store.usage(entry.key, window=entry.window)
        out.append((result.used, result.reserved))
    return out


def figures(results: Sequence[LedgerResult]) -> list[tuple[bool, int, int, int | None]]:
    return [(r.ok, r.used, r.reserved, r.limit) for r in results]


async def same_as_memory(store: RedisStore) -> None:
    """A sequence of batches answers as MemoryStore's (the reference), figures and all."""
    memory = MemoryStore()
    steps: list[tuple[str, str, list[LedgerEntry]]] = [
        ("reserve", "r1", batch(30, 5, 4)),
        ("reserve", "r1", batch(30, 5, 4)),  # a repeat: no-op, the same answer
        ("reserve", "r2", batch(10, 6, 1)),  # the second refuses: nothing of r2 held
        ("reserve", "r2", batch(10, 5, 7)),  # the third refuses (a retry of r2)
        ("reserve", "r3", batch(71, 1, 1)),  # the first refuses
        ("settle", "r1", batch(25, None, 3)),
        ("settle", "r1", batch(99, 99, 99)),  # a repeat
        ("reserve", "r4", batch(75, 10, 7)),  # fits exactly
        ("settle", "r4", batch(1, 2, None)),
    ]
    for command, rid, entries in steps:
        if command == "reserve":
            got = await store.reserve_many(rid, entries, hold=60.0)
            want = await memory.reserve_many(rid, entries, hold=60.0)
        else:
            got = await store.settle_many(rid, entries)
            want = await memory.settle_many(rid, entries)
        assert figures(got) == figures(want), (command, rid)
        assert await held(store, entries) == await held(memory, entries), (command, rid)


async def test_one_script_call_per_batch(prefix: str) -> None:
    async with RedisStore.from_url(require_redis(), prefix=prefix, timeout=5.0) as store:
        counted = Counted(store)
        await same_as_memory(store)
        sent = [op for op in counted.calls if op != "usage"]
        assert sent == ["reserve_many"] * 5 + ["settle_many"] * 2 + ["reserve_many", "settle_many"]


async def test_a_window_the_client_guessed_wrong_is_asked_again(prefix: str) -> None:
    """The script checks every entry's window before writing; a miss is asked again
    with the server's time (as the single commands do)."""
    async with RedisStore.from_url(require_redis(), prefix=prefix, timeout=5.0) as store:
        store._skew = -7200.0  # our guess of the server's clock is two hours behind
        counted = Counted(store)
        results = await store.reserve_many("r", batch(1, 1, 1), hold=60.0)
        assert all(r.ok for r in results)
        assert counted.calls == ["reserve_many", "reserve_many"]
        assert await held(store, batch(0, 0, 0)) == [(0, 1), (0, 1), (0, 1)]


async def test_a_reply_lost_mid_command_is_store_unavailable_and_counts_once(
    prefix: str,
) -> None:
    """Redis runs the batch, then the connection drops before the reply: the store
    sends it once more (idempotent by id), then raises ``StoreUnavailable``; a retry
    by the caller holds nothing twice."""
    async with (
        Proxy(6379) as proxy,
        RedisStore.from_url(proxy.url, prefix=prefix, timeout=5.0) as lossy,
        RedisStore.from_url(require_redis(), prefix=prefix, timeout=5.0) as direct,
    ):
        proxy.drop_replies = True
        with pytest.raises(StoreUnavailable):
            await lossy.reserve_many("r", batch(30, 5, 4), hold=60.0)
        assert proxy.dropped == 2  # sent, lost, sent again on a fresh connection, lost
        with pytest.raises(StoreUnavailable):
            await lossy.settle_many("r", batch(10, 1, None))
        assert await held(direct, batch(0, 0, 0)) == [(10, 0), (1, 0), (0, 0)]
        again = await direct.reserve_many("r", batch(30, 5, 4), hold=60.0)  # closed: ok
        assert all(r.ok for r in again)
        assert await held(direct, batch(0, 0, 0)) == [(10, 0), (1, 0), (0, 0)]
        proxy.drop_replies = False
        assert await lossy.settle_many("r", batch(10, 1, None)) == await direct.settle_many(
            "r", batch(10, 1, None)
        )


async def test_a_redis_that_does_not_answer_is_store_unavailable_in_time(prefix: str) -> None:
    async with (
        Proxy(6379) as proxy,
        RedisStore.from_url(proxy.url, prefix=prefix, timeout=0.2) as slow,
    ):
        proxy.delay = 5.0
        for command in (
            lambda: slow.reserve_many("r", batch(1, 1), hold=60.0),
            lambda: slow.settle_many("r", batch(1, None)),
        ):
            with anyio.fail_after(3), pytest.raises(StoreUnavailable, match="no answer within"):
                await command()


# -- Redis Cluster ------------------------------------------------------------------------


@pytest.fixture
async def cluster(redis_cluster: list[str]) -> AsyncIterator[RedisStore]:
    prefix = new_prefix()
    async with RedisStore.cluster(redis_cluster, prefix=prefix, timeout=5.0) as store:
        try:
            yield store
        finally:
            await delete_prefix(store._client, prefix)


def slots(store: RedisStore, entries: Sequence[LedgerEntry]) -> set[int]:
    return {key_slot(store._keys.ledger(e.key, e.window)[0].encode()) for e in entries}


async def test_the_cluster_falls_back_to_one_call_per_key_across_slots(
    cluster: RedisStore,
) -> None:
    assert len(slots(cluster, batch(0, 0, 0))) == 3  # three keys, three slots
    counted = Counted(cluster)
    await same_as_memory(cluster)  # the same answers, all or none
    reserves = [op for op in counted.calls if op == "reserve_many"]
    drops = [op for op in counted.calls if op == "drop_many"]
    # r1: 3 + 3; r2: 2 + 1 drop, then 3 + 2 drops; r3: 1; r4: 3 (no drop)
    assert len(reserves) == 3 + 3 + 2 + 3 + 1 + 3
    assert len(drops) == 1 + 2


async def test_the_cluster_sends_one_call_for_keys_of_one_slot(cluster: RedisStore) -> None:
    entries = [LedgerEntry("same", HOUR, 5, limit=10), LedgerEntry("same", DAY, 5, limit=10)]
    assert len(slots(cluster, entries)) == 1
    counted = Counted(cluster)
    assert all(r.ok for r in await cluster.reserve_many("r", entries, hold=60.0))
    assert all(r.ok for r in await cluster.settle_many("r", entries))
    assert counted.calls == ["reserve_many", "settle_many"]


async def test_a_cluster_failing_mid_batch_drops_what_it_held(cluster: RedisStore) -> None:
    """The per-key fallback cut by an outage after its first key: that hold is dropped
    before ``StoreUnavailable`` propagates (all or none)."""
    inner = cluster._batch.many
    sent = 0

    async def failing_second(command: str, *args: Any) -> Any:
        nonlocal sent
        sent += 1
        if command == "reserve_many" and sent == 2:
            raise StoreUnavailable("RedisStore", "cut by the test")
        return await inner(command, *args)

    cluster._batch.many = failing_second  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable, match="cut by the test"):
        await cluster.reserve_many("r", batch(30, 5, 4), hold=60.0)
    assert await held(cluster, batch(0, 0, 0)) == [(0, 0), (0, 0), (0, 0)]
    cluster._batch.many = inner  # type: ignore[method-assign]
    assert all(r.ok for r in await cluster.reserve_many("r", batch(30, 5, 4), hold=60.0))
    assert await held(cluster, batch(0, 0, 0)) == [(0, 30), (0, 5), (0, 4)]


async def budget_calls(store: Any) -> list[object]:
    """Calls through a Budget of two limits: the outcomes and the figures after each."""
    pricing = Pricing({"m": Price(input="1000", output="2000")})
    budget = Budget(
        Limit(tokens=1000, per="hour", scope="user", name="tokens"),
        Limit(usd="0.25", per="day", name="usd"),  # one call's worst case, not two
        store=store,
        pricing=pricing,
    )
    assert budget._engine.batch is store  # the budget batches, on a cluster too

    async def answer(request: Request) -> Response:
        return Response(text="Hi!", usage=Usage(input_tokens=6, output_tokens=20), model="m")

    guard = Guard(FunctionProvider(answer), [budget], model="m")
    ask = Request.create(model="m", user="hello there", max_output_tokens=100)
    seen: list[object] = []
    for user in ("alice", "bob", "carol", "dave"):
        with llmguard.context(user=user):
            try:
                seen.append((await guard.complete(ask)).cost_micros)
            except llmguard.BudgetExceeded as exc:
                seen.append(exc.scope)
            status = await budget.status()
        seen.append([(line.used, line.reserved, line.remaining) for line in status])
    return seen


async def test_a_budget_on_the_cluster_acts_as_on_memory(cluster: RedisStore) -> None:
    counted = Counted(cluster)
    seen = await budget_calls(cluster)
    assert seen == await budget_calls(MemoryStore())
    assert seen[0] == 46_000 and seen[2] == "usd:global"  # bob refused by the second limit
    assert seen[3] == [(0, 0, 1000), (46_000, 0, 204_000)]  # his tokens line holds nothing
    assert "reserve_many" in counted.calls and "reserve" not in counted.calls

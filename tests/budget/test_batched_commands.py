"""The batched ledger commands themselves (``reserve_many``, ``settle_many``, and
MemoryStore's plain calls): the same answers and effects as the single-key commands
they stand for, all or none, idempotent; SQLite's read-only first pass answering as
its write would."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from llmguard import LedgerResult, MemoryStore, Window
from llmguard._stores._roles import BatchLedger, LedgerEntry

from .conftest import Harness

pytestmark = pytest.mark.anyio

HOUR = Window.fixed(3600)
DAY = Window.fixed(86400)


# -- the store commands themselves -----------------------------------------------------------


def entries(
    prefix: str, *amounts: int | None, limits: Sequence[int] = (100, 50)
) -> list[LedgerEntry]:
    windows = (HOUR, DAY)
    return [
        LedgerEntry(f"{prefix}:{index}", windows[index], amount, limit=limits[index])
        for index, amount in enumerate(amounts)
    ]


async def singles_reserve(store: Any, rid: str, batch: Sequence[LedgerEntry]) -> list[LedgerResult]:
    """What ``reserve_many`` stands for, with the single commands."""
    results: list[LedgerResult] = []
    for entry in batch:
        assert entry.amount is not None and entry.limit is not None
        result = await store.reserve(
            entry.key, rid, entry.amount, limit=entry.limit, window=entry.window, hold=60.0
        )
        results.append(result)
        if not result.ok:
            for held in batch[: len(results) - 1]:
                await store.release(held.key, rid, window=held.window)
            break
    return results


async def singles_settle(store: Any, rid: str, batch: Sequence[LedgerEntry]) -> list[LedgerResult]:
    results = []
    for entry in batch:
        if entry.amount is None:
            results.append(await store.release(entry.key, rid, window=entry.window))
        else:
            results.append(await store.settle(entry.key, rid, entry.amount, window=entry.window))
    return results


async def state(store: Any, batch: Sequence[LedgerEntry]) -> list[tuple[int, int]]:
    out = []
    for entry in batch:
        result = await store.usage(entry.key, window=entry.window)
        out.append((result.used, result.reserved))
    return out


async def test_reserve_many_and_settle_many_answer_as_the_single_commands(
    harness: Harness,
) -> None:
    store = harness.store
    assert isinstance(store, BatchLedger)

    async def both(
        many: Any, single: Any, rid: str, *amounts: int | None
    ) -> tuple[list[LedgerResult], list[tuple[int, int]]]:
        batched = await many(rid, entries("b", *amounts))
        looped = await single(store, rid, entries("s", *amounts))
        assert batched == looped, (rid, amounts)
        assert await state(store, entries("b", 0, 0)) == await state(store, entries("s", 0, 0))
        return batched, await state(store, entries("b", 0, 0))

    def reserve(rid: str, batch: Sequence[LedgerEntry]) -> Any:
        return store.reserve_many(rid, batch, hold=60.0)

    results, held = await both(reserve, singles_reserve, "r1", 30, 20)
    assert [r.ok for r in results] == [True, True] and held == [(0, 30), (0, 20)]
    results, held = await both(reserve, singles_reserve, "r1", 30, 20)  # a repeat: no-op
    assert [r.ok for r in results] == [True, True] and held == [(0, 30), (0, 20)]
    results, held = await both(reserve, singles_reserve, "r2", 10, 31)  # the second refuses
    assert [r.ok for r in results] == [True, False] and held == [(0, 30), (0, 20)]
    assert (results[1].used, results[1].reserved, results[1].limit) == (0, 20, 50)
    results, held = await both(reserve, singles_reserve, "r3", 71, 1)  # the first refuses
    assert [r.ok for r in results] == [False] and held == [(0, 30), (0, 20)]
    results, held = await both(store.settle_many, singles_settle, "r1", 25, None)
    assert [r.ok for r in results] == [True, True] and held == [(25, 0), (0, 0)]
    results, held = await both(store.settle_many, singles_settle, "r1", 99, 99)  # a repeat
    assert held == [(25, 0), (0, 0)]
    results, held = await both(store.settle_many, singles_settle, "nobody", None, None)
    assert held == [(25, 0), (0, 0)]
    results, held = await both(reserve, singles_reserve, "r4", 75, 50)  # fits exactly
    assert [r.ok for r in results] == [True, True] and held == [(25, 75), (0, 50)]
    results, held = await both(store.settle_many, singles_settle, "r4", 1, 2)  # settle less
    assert held == [(26, 0), (2, 0)]
    assert await store.reserve_many("r5", [], hold=60.0) == []
    assert await store.settle_many("r5", []) == []


async def test_a_bad_entry_changes_nothing(harness: Harness) -> None:
    store = harness.store
    good = entries("k", 5)[0]
    for bad in (
        LedgerEntry("k:1", DAY, None, limit=10),  # no amount
        LedgerEntry("k:1", DAY, 5),  # no limit
        LedgerEntry("k:1", DAY, -1, limit=10),  # negative
    ):
        with pytest.raises(ValueError, match=r"reserve_many needs|never negative"):
            await store.reserve_many("r", [good, bad], hold=60.0)
    with pytest.raises(ValueError, match="never negative"):
        await store.settle_many("r", [good, LedgerEntry("k:1", DAY, -1)])
    assert await state(store, entries("k", 0, 0)) == [(0, 0), (0, 0)]


async def test_the_plain_calls_answer_as_the_batched_commands() -> None:
    """MemoryStore's ``reserve_all`` and ``settle_all_now`` (what budgets use)."""
    plain, batched = MemoryStore(), MemoryStore()
    for rid, amounts in (("a", (30, 20)), ("a", (30, 20)), ("b", (10, 31)), ("c", (71, 1))):
        answer = await batched.reserve_many(rid, entries("k", *amounts), hold=60.0)
        refused = await plain.reserve_all(rid, entries("k", *amounts), hold=60.0)
        if answer[-1].ok:
            assert refused is None
        else:
            assert refused == (len(answer) - 1, answer[-1])
        assert await state(plain, entries("k", 0, 0)) == await state(batched, entries("k", 0, 0))
    settled = await batched.settle_many("a", entries("k", 25, None))
    figures_ = plain.settle_all_now("a", entries("k", 25, None))
    assert [(r.used, r.reserved, r.reset_at) for r in settled] == figures_
    assert await state(plain, entries("k", 0, 0)) == [(25, 0), (0, 0)]
    with pytest.raises(ValueError, match="never negative"):
        plain.settle_all_now("a", [LedgerEntry("k:0", HOUR, -1)])
    assert plain.plain_calls("reserve_many", "settle_many")


# -- SQLite: the read-only answer is the written one ------------------------------------------


@pytest.mark.parametrize(
    "amounts",
    [(30, 20), (10, 31), (71, 1), (30, 20, 5), (1, 1, 11), (0, 0)],
    ids=str,
)
def test_sqlite_reserve_many_answers_read_only_as_it_would_write(
    amounts: tuple[int, ...],
) -> None:
    """``reserve_many(write=False)`` (what SQLiteStore tries first, without the write
    lock) answers exactly what the write would, whenever it answers at all."""
    import sqlite3

    from llmguard._stores import _sqlite_ledger as ledger
    from llmguard._stores._sqlite_schema import migrate

    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        migrate(conn, ":memory:")
        now = 1_000_000.0
        limits = (100, 50, 10)
        windows = (HOUR, DAY, DAY)
        batch = [
            LedgerEntry(f"k:{i}", windows[i], amount, limit=limits[i])
            for i, amount in enumerate(amounts)
        ]
        for key, window in (("k:0", HOUR), ("k:1", DAY)):  # some held and settled already
            ledger.reserve(conn, now, key, "old", 20, limit=100, window=window, hold=60.0)
            ledger.settle(conn, now, key, "done", 5, window=window)
        before = [ledger.usage(conn, now, e.key, window=e.window, limit=None) for e in batch]
        read = ledger.reserve_many(conn, now, "r", batch, hold=60.0, write=False)
        after_read = [ledger.usage(conn, now, e.key, window=e.window, limit=None) for e in batch]
        assert after_read == before  # the read-only pass wrote nothing
        written = ledger.reserve_many(conn, now, "r", batch, hold=60.0, write=True)
        assert written is not None
        if read is not None:
            assert read == written
        fits = all(r.ok for r in written)
        assert read is None or not fits  # it answers alone only a refusal
        after = [ledger.usage(conn, now, e.key, window=e.window, limit=None) for e in batch]
        if not fits:
            assert after == before  # all or none
        # A repeat needs no write: the read-only pass answers it.
        again = ledger.reserve_many(conn, now, "r", batch, hold=60.0, write=False)
        if fits:
            assert again == ledger.reserve_many(conn, now, "r", batch, hold=60.0, write=True)
    finally:
        conn.close()

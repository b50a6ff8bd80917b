"""Shared pieces of the budget tests: a wall clock moved by hand, a flaky store."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from _redis_ping import REDIS_URL, require_redis
from llmguard import LedgerResult, MemoryStore, StoreUnavailable, Window
from llmguard._stores._roles import Versioned

START = datetime(2026, 3, 10, 12, 0, tzinfo=UTC).timestamp()  # the top of an hour


class WallClock:
    """Epoch seconds that move only when told (for ``MemoryStore(clock=...)``)."""

    def __init__(self, t: float = START) -> None:
        self.t = t
        self._turn: tuple[int, float] | None = None

    def __call__(self) -> float:
        if self._turn is not None:
            left, to = self._turn
            if left == 0:
                self.t, self._turn = to, None
            else:
                self._turn = (left - 1, to)
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def jump_after(self, reads: int, to: float) -> None:
        """Move to ``to`` after ``reads`` more reads (between two store commands)."""
        self._turn = (reads, to)


class FlakyStore:
    """A MemoryStore that can be switched off: every command raises StoreUnavailable."""

    def __init__(self, clock: WallClock) -> None:
        self.inner = MemoryStore(clock=clock)
        self.down = False
        self.commands = 0

    def _check(self) -> None:
        self.commands += 1
        if self.down:
            raise StoreUnavailable("FlakyStore", "switched off by the test")

    async def reserve(
        self, key: str, reservation_id: str, amount: int, *, limit: int, window: Window, hold: float
    ) -> LedgerResult:
        self._check()
        return await self.inner.reserve(
            key, reservation_id, amount, limit=limit, window=window, hold=hold
        )

    async def extend(
        self, key: str, reservation_id: str, amount: int, *, limit: int, window: Window, hold: float
    ) -> LedgerResult:
        self._check()
        return await self.inner.extend(
            key, reservation_id, amount, limit=limit, window=window, hold=hold
        )

    async def settle(
        self, key: str, reservation_id: str, amount: int, *, window: Window
    ) -> LedgerResult:
        self._check()
        return await self.inner.settle(key, reservation_id, amount, window=window)

    async def release(self, key: str, reservation_id: str, *, window: Window) -> LedgerResult:
        self._check()
        return await self.inner.release(key, reservation_id, window=window)

    async def usage(self, key: str, *, window: Window, limit: int | None = None) -> LedgerResult:
        self._check()
        return await self.inner.usage(key, window=window, limit=limit)

    async def read(self, key: str) -> Versioned | None:
        self._check()
        return await self.inner.read(key)

    async def compare_and_set(
        self, key: str, version: int, value: bytes, *, ttl: float | None
    ) -> bool:
        self._check()
        return await self.inner.compare_and_set(key, version, value, ttl=ttl)

    async def increment(self, key: str, amount: int, *, ttl: float | None) -> int:
        self._check()
        return await self.inner.increment(key, amount, ttl=ttl)


# -- every store, with its clock in the test's hands ------------------------------------


def need_redis(anyio_backend: str) -> None:
    """Skip on trio (RedisStore is asyncio-only); without a Redis, skip (fail under CI)."""
    if anyio_backend != "asyncio":
        pytest.skip("RedisStore runs on asyncio only")
    require_redis()


async def delete_prefix(client: Any, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await client.delete(*keys)


@dataclass
class Harness:
    """A store whose clock the test moves."""

    kind: str
    store: Any
    clock: WallClock


STORES = ["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """RedisStore runs on asyncio only: its trio variants are not tests at all."""
    here = Path(__file__).parent
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        if here not in item.path.parents:
            kept.append(item)
            continue
        params = getattr(item, "callspec", None)
        params = params.params if params is not None else {}
        trio = str(params.get("anyio_backend", "")).startswith("trio")
        (dropped if trio and params.get("harness") == "redis" else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(params=STORES)
async def harness(request: pytest.FixtureRequest, anyio_backend: str) -> AsyncIterator[Harness]:
    from llmguard import RedisStore, SQLiteStore

    clock = WallClock()
    kind = request.param
    if kind == "memory":
        yield Harness(kind, MemoryStore(clock=clock), clock)
    elif kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="llmguard-budget-") as folder:
            store = SQLiteStore(f"{folder}/budget.db", clock=clock, timeout=5.0)
            try:
                yield Harness(kind, store, clock)
            finally:
                await store.aclose()
    else:
        need_redis(anyio_backend)
        prefix = f"llmguard-test:{uuid.uuid4().hex}:"
        redis = RedisStore.from_url(REDIS_URL, prefix=prefix, timeout=5.0)
        redis._test_clock = clock  # the scripts read this instead of the server's TIME
        try:
            yield Harness(kind, redis, clock)
        finally:
            try:
                await delete_prefix(redis._client, prefix)
            finally:
                await redis.aclose()

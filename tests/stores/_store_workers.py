"""Work for the processes of test_atomicity (spawned children import this module).

Each child keeps one event loop (a blocking portal) and one store per target for all
the runs, as a real worker would; each task waits at a barrier first, so the four
processes send their commands at the same time.
"""

from __future__ import annotations

import random
from contextlib import AbstractContextManager
from dataclasses import dataclass
from threading import Barrier

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from llmguard import RedisStore, SQLiteStore, Window

HOUR = Window.fixed(3600)
LIMIT = 100

_barrier: Barrier | None = None
_portal_cm: AbstractContextManager[BlockingPortal] | None = None
_portal: BlockingPortal | None = None
_stores: dict[tuple[str, str, str], SQLiteStore | RedisStore] = {}


@dataclass(frozen=True)
class Task:
    backend: str  # "sqlite" or "redis"
    target: str  # the file, or the Redis URL
    prefix: str
    key: str
    op: str  # "reserve", "settle" or "usage"
    items: tuple[tuple[str, int], ...] = ()  # (reservation id, amount to settle)
    seed: int = 0


def init(barrier: Barrier) -> None:
    global _barrier, _portal_cm, _portal
    _barrier = barrier
    _portal_cm = start_blocking_portal("asyncio")
    _portal = _portal_cm.__enter__()


def run(task: Task) -> list[str]:
    """Run the task's commands concurrently; the ids whose reserve was admitted."""
    assert _barrier is not None
    assert _portal is not None
    _barrier.wait(timeout=60)
    return _portal.call(_run, task)


def close(_: object) -> None:
    """Close this process's stores and event loop (one call per process: a barrier)."""
    global _portal_cm, _portal
    assert _barrier is not None
    _barrier.wait(timeout=60)
    if _portal is not None and _portal_cm is not None:
        _portal.call(_close_stores)
        _portal_cm.__exit__(None, None, None)
        _portal_cm = _portal = None


async def _close_stores() -> None:
    for store in _stores.values():
        await store.aclose()
    _stores.clear()


async def _store(task: Task) -> SQLiteStore | RedisStore:
    key = (task.backend, task.target, task.prefix)
    store = _stores.get(key)
    if store is None:
        if task.backend == "sqlite":
            store = SQLiteStore(task.target, timeout=30)
        else:
            store = RedisStore.from_url(task.target, prefix=task.prefix, timeout=30)
        await store.connect()
        _stores[key] = store
    return store


async def _run(task: Task) -> list[str]:
    rng = random.Random(task.seed)
    store = await _store(task)
    admitted: list[str] = []

    async def one(rid: str, amount: int, jitter: float) -> None:
        await anyio.sleep(jitter)
        if task.op == "reserve":
            result = await store.reserve(task.key, rid, 1, limit=LIMIT, window=HOUR, hold=600)
            if result.ok:
                admitted.append(rid)
        else:
            await store.settle(task.key, rid, amount, window=HOUR)

    async with anyio.create_task_group() as group:
        for rid, amount in task.items:
            group.start_soon(one, rid, amount, rng.uniform(0, 0.001))
    return admitted


async def _usage(task: Task) -> tuple[int, int]:
    store = await _store(task)
    result = await store.usage(task.key, window=HOUR)
    return result.used, result.reserved


def usage(task: Task) -> tuple[int, int]:
    """``(used, reserved)`` of the task's key (run in a worker: it has the loop)."""
    assert _portal is not None
    return _portal.call(_usage, task)

"""Atomicity across processes, as the ``limits`` project tests it, but harder.

Four OS processes (spawn) send 1,000 concurrent reservations of 1 unit, with 0-1 ms of
random jitter each, against a limit of 100: exactly 100 are admitted, in each of 20
runs. Then the admitted ones are settled with random amounts, again from four
processes at once, and the stored total is the sum of them: no update is lost.
"""

from __future__ import annotations

import multiprocessing
import random
import uuid
from collections.abc import Iterator
from multiprocessing.pool import Pool
from pathlib import Path

import _store_workers as workers
import pytest
import redis
from _redis_servers import require_redis

PROCESSES = 4
RUNS = 20
CALLS = 1000


@pytest.fixture(scope="module")
def pool() -> Iterator[Pool]:
    """Four spawned processes, reused by every run (spawning costs far more than a run)."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    pool = context.Pool(PROCESSES, initializer=workers.init, initargs=(barrier,))
    try:
        yield pool
        pool.map(workers.close, range(PROCESSES), chunksize=1)
    finally:
        pool.close()
        pool.join()


def split(items: list[tuple[str, int]]) -> list[tuple[tuple[str, int], ...]]:
    return [tuple(items[i::PROCESSES]) for i in range(PROCESSES)]


def check_runs(pool: Pool, backend: str, target: str, prefix: str) -> None:
    rng = random.Random(20240115)
    for run in range(RUNS):
        key = f"run-{run}"
        reserves = [(f"{run}-{i}", 0) for i in range(CALLS)]
        tasks = [
            workers.Task(backend, target, prefix, key, "reserve", part, rng.getrandbits(32))
            for part in split(reserves)
        ]
        admitted = [rid for part in pool.map(workers.run, tasks, chunksize=1) for rid in part]
        assert len(admitted) == workers.LIMIT, f"run {run}: admitted {len(admitted)}"
        assert len(set(admitted)) == workers.LIMIT

        amounts = [(rid, rng.randint(1, 10_000)) for rid in admitted]
        tasks = [
            workers.Task(backend, target, prefix, key, "settle", part, rng.getrandbits(32))
            for part in split(amounts)
        ]
        pool.map(workers.run, tasks, chunksize=1)
        used, reserved = pool.apply(
            workers.usage, (workers.Task(backend, target, prefix, key, "usage"),)
        )
        assert (used, reserved) == (sum(a for _, a in amounts), 0), f"run {run}"


def test_sqlite_admits_exactly_the_limit_from_four_processes(pool: Pool, tmp_path: Path) -> None:
    check_runs(pool, "sqlite", str(tmp_path / "shared.db"), "")


@pytest.mark.redis
def test_redis_admits_exactly_the_limit_from_four_processes(pool: Pool) -> None:
    url = require_redis()
    prefix = f"llmguard-test:{uuid.uuid4().hex}:"
    try:
        check_runs(pool, "redis", url, prefix)
    finally:
        with redis.Redis.from_url(url) as client:
            for key in client.scan_iter(match=f"{prefix}*", count=1000):
                client.delete(key)

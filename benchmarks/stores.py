"""The stores, per operation: memory, SQLite and Redis, next to a plain Redis PING.

Run with ``make bench`` (or ``python benchmarks/stores.py --redis redis://...``).
For each store: ``reserve+settle`` (one budgeted call: a reserve, then its settle),
``set`` and ``get`` of a 1 kB cache value, each with 1 task and with 50 concurrent
tasks: the median latency of one operation (µs) and the throughput (ops/s). A plain
Redis ``PING`` (redis-py, same pool settings) is measured in the same run, because the
machines here are shared and noisy: compare ratios, not absolute figures across runs.
Then it counts the round trips one ``reserve+settle`` costs on Redis (target: 2).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio

from llmguard import MemoryStore, RedisStore, SQLiteStore, Window

HOUR = Window.fixed(3600)
VALUE = os.urandom(1024)
Op = Callable[[int], Awaitable[object]]


async def measure(op: Op, total: int, concurrency: int) -> tuple[float, float]:
    """Median µs of one ``op`` and ops/s, with ``concurrency`` tasks sharing ``total``."""
    latencies: list[float] = []

    async def worker(start: int) -> None:
        for i in range(start, total, concurrency):
            began = time.perf_counter()
            await op(i)
            latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    async with anyio.create_task_group() as group:
        for start in range(concurrency):
            group.start_soon(worker, start)
    elapsed = time.perf_counter() - began
    return statistics.median(latencies) * 1e6, total / elapsed


def store_ops(store: Any, tag: str) -> dict[str, Op]:
    async def reserve_settle(i: int) -> None:
        rid = f"{tag}-{i}"
        await store.reserve(f"user:{i % 100}", rid, 500, limit=10**12, window=HOUR, hold=60)
        await store.settle(f"user:{i % 100}", rid, 320, window=HOUR)

    async def set_value(i: int) -> None:
        await store.set(f"answer:{i % 1000}", VALUE, ttl=300)

    async def get_value(i: int) -> None:
        await store.get(f"answer:{i % 1000}")

    return {"reserve+settle": reserve_settle, "set": set_value, "get": get_value}


def row(name: str, op: str, figures: dict[int, tuple[float, float]], ping: float | None) -> str:
    cells = [f"{name:<8} {op:<15}"]
    for concurrency in (1, 50):
        median, rate = figures[concurrency]
        cells.append(f"{median:>9.0f} µs {rate:>9.0f}/s")
    if ping:
        cells.append(f"{figures[1][0] / ping:>6.1f}x PING")
    return "  ".join(cells)


async def count_round_trips(store: RedisStore) -> int:
    """Commands sent for one warm reserve+settle (each is one round trip: no pipelining)."""
    sent: list[object] = []
    client: Any = store._client
    original = client.execute_command

    async def counting(*args: Any, **options: Any) -> Any:
        sent.append(args[0])
        return await original(*args, **options)

    client.execute_command = counting
    try:
        await store.reserve("round-trips", "r", 1, limit=10, window=HOUR, hold=60)
        await store.settle("round-trips", "r", 1, window=HOUR)
    finally:
        client.execute_command = original
    return len(sent)


async def main(redis_url: str | None, total: int) -> None:
    print(f"{total} operations per figure; median latency of one operation, and throughput")
    print(f"{'store':<8} {'operation':<15}  {'1 task':>23}  {'50 tasks':>23}")
    async with AsyncExitStack() as stack:
        folder = stack.enter_context(tempfile.TemporaryDirectory())
        stores: dict[str, Any] = {
            "memory": MemoryStore(max_entries=100_000),
            "sqlite": await stack.enter_async_context(SQLiteStore(f"{folder}/bench.db", timeout=5)),
        }
        ping: float | None = None
        client: Any = None
        if redis_url:
            prefix = f"llmguard-bench:{uuid.uuid4().hex}:"
            try:
                redis_store = RedisStore.from_url(redis_url, prefix=prefix, timeout=5)
                stores["redis"] = await stack.enter_async_context(redis_store)
                client = redis_store._client
            except Exception as exc:  # no Redis: say so, measure the rest
                print(f"!!! no Redis at {redis_url} ({exc}): Redis rows skipped")
        if client is not None:

            async def ping_op(i: int) -> None:
                await client.ping()

            await measure(ping_op, total // 10, 1)  # warm the connections
            pings = {c: await measure(ping_op, total, c) for c in (1, 50)}
            ping = pings[1][0]
            print(row("redis", "PING", pings, None))

        for name, store in stores.items():
            tag = uuid.uuid4().hex
            for op_name, op in store_ops(store, tag).items():
                await measure(op, total // 10, 1)  # warm up
                figures = {c: await measure(op, total, c) for c in (1, 50)}
                print(row(name, op_name, figures, ping if name == "redis" else None))

        if "redis" in stores:
            trips = await count_round_trips(stores["redis"])
            verdict = "ok" if trips <= 2 else "OVER TARGET"
            print(f"redis: one reserve+settle costs {trips} round trips (target ≤ 2: {verdict})")
            keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
            for key in keys:
                await client.delete(key)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--redis",
        default=os.environ.get("LLMGUARD_BENCH_REDIS", "redis://127.0.0.1:6379/0"),
        help="Redis URL ('' to skip Redis)",
    )
    parser.add_argument("--ops", type=int, default=2000, help="operations per figure")
    args = parser.parse_args()
    anyio.run(main, args.redis or None, args.ops)
    sys.exit(0)

"""What a Budget costs per call: reserve + settle on each store, inside a guarded call.

Run with ``make bench`` (or ``python benchmarks/budget.py --redis redis://...``).

Part 1: a ``FunctionProvider`` returning a prebuilt response, so what is measured is
llmguard's own work. Every variant is a Guard (``timeout=None``) on that provider; the
baseline is the same Guard with no layers, and a reference layer that only yields to
the event loop twice shows what the two store round trips cost at the least. Budget
variants: a token limit on ``MemoryStore``, a token and a dollar limit on
``MemoryStore`` (prices from genai-prices), and a token limit on ``SQLiteStore`` and
on ``RedisStore`` (if one answers). Per call a budget reserves the worst case before
and settles the real usage after: two store commands per limit.

Part 2: the raw openai SDK against ``Guard(OpenAIProvider)`` with and without a
Budget on ``MemoryStore``, on one fake transport (``benchmarks/_openai_fake.py``).

Variants run interleaved, round after round; each figure is the median over rounds of
the mean per-call time in a round. The machines here are shared and noisy: compare the
ratios measured in the same run, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import logging
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

sys.path.insert(0, str(Path(__file__).parent))

from llmguard import (
    BaseLayer,
    Budget,
    FunctionProvider,
    Guard,
    Handler,
    Limit,
    MemoryStore,
    RedisStore,
    Request,
    Response,
    SQLiteStore,
    Usage,
)

RESPONSE = Response(text="ok", usage=Usage(input_tokens=10, output_tokens=2), model="gpt-4o-mini")
REQUEST = Request.create(model="gpt-4o-mini", user="hello", max_output_tokens=50)
HUGE = 10**15  # never refuses: what is measured is the accounting, not refusals
Call = Callable[[], Awaitable[Any]]


async def answer(request: Request) -> Response:
    return RESPONSE


class TwoCheckpoints(BaseLayer):
    """A reference, not a budget: yields to the event loop twice a call, as the two
    commands (reserve, settle) of any store do; the floor a budget is measured against."""

    async def complete(self, request: Request, call_next: Handler) -> Response:
        await anyio.lowlevel.checkpoint()
        response = await call_next(request)
        await anyio.lowlevel.checkpoint()
        return response


def redis_answers(url: str) -> bool:
    host, _, port = url.removeprefix("redis://").split("/")[0].partition(":")
    try:
        with socket.create_connection((host, int(port or 6379)), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def tokens_budget(store: Any) -> Budget:
    return Budget(Limit(tokens=HUGE, per="day", name="bench-tokens", alerts=()), store=store)


async def rounds(cases: dict[str, Call], rounds: int, calls: dict[str, int]) -> dict[str, float]:
    """Median over rounds of the mean µs per call, variants interleaved."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for name, call in cases.items():  # warm up (loads prices, opens stores, fills caches)
        for _ in range(min(200, calls[name])):
            await call()
    for _ in range(rounds):
        for name, call in cases.items():
            count = calls[name]
            start = time.perf_counter()
            for _ in range(count):
                await call()
            samples[name].append((time.perf_counter() - start) / count * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


async def measure(args: argparse.Namespace, folder: str) -> dict[str, float]:
    provider = FunctionProvider(answer)
    bare = Guard(provider, timeout=None)
    yields = Guard(provider, [TwoCheckpoints()], timeout=None)
    memory = Guard(provider, [tokens_budget(MemoryStore())], timeout=None)
    both = Guard(
        provider,
        [
            Budget(
                Limit(tokens=HUGE, per="day", name="bench-tokens", alerts=()),
                Limit(usd=HUGE, per="day", name="bench-usd", alerts=()),
                store=MemoryStore(),
            )
        ],
        timeout=None,
    )
    sqlite = SQLiteStore(Path(folder) / "bench.db")
    cases: dict[str, Call] = {
        "provider called directly": lambda: provider.complete(REQUEST),
        "Guard, no layers (the baseline)": lambda: bare.complete(REQUEST),
        "Guard + 2 event-loop checkpoints (reference)": lambda: yields.complete(REQUEST),
        "Guard + Budget, tokens, MemoryStore": lambda: memory.complete(REQUEST),
        "Guard + Budget, tokens + usd, MemoryStore": lambda: both.complete(REQUEST),
    }
    sqlite_guard = Guard(provider, [tokens_budget(sqlite)], timeout=None)
    cases["Guard + Budget, tokens, SQLiteStore"] = lambda: sqlite_guard.complete(REQUEST)
    redis: RedisStore | None = None
    prefix = f"llmguard-bench:{uuid.uuid4().hex}:"
    if args.redis and redis_answers(args.redis):
        redis = RedisStore.from_url(args.redis, prefix=prefix)
        redis_guard = Guard(provider, [tokens_budget(redis)], timeout=None)
        cases["Guard + Budget, tokens, RedisStore"] = lambda: redis_guard.complete(REQUEST)
    else:
        print(f"(no Redis answers at {args.redis}: the RedisStore variant is left out)")
    slow = {"Guard + Budget, tokens, SQLiteStore", "Guard + Budget, tokens, RedisStore"}
    calls = {name: args.store_calls if name in slow else args.calls for name in cases}
    try:
        return await rounds(cases, args.rounds, calls)
    finally:
        await sqlite.aclose()
        if redis is not None:
            keys = [key async for key in redis._client.scan_iter(match=f"{prefix}*")]
            if keys:
                await redis._client.delete(*keys)
            await redis.aclose()


async def measure_openai(args: argparse.Namespace) -> dict[str, float]:
    """The raw openai SDK against Guard(OpenAIProvider), with and without a Budget."""
    from _openai_fake import fake_client

    from llmguard import OpenAIProvider

    client = fake_client()
    messages = [{"role": "user", "content": "hello"}]
    request = Request.create(model="gpt-4o-mini", user="hello", max_output_tokens=50)
    provider = OpenAIProvider(client)
    bare = Guard(provider, timeout=None)
    budgeted = Guard(provider, [tokens_budget(MemoryStore())], timeout=None)
    priced = Guard(
        provider,
        [
            Budget(
                Limit(tokens=HUGE, per="day", name="t", alerts=()),
                Limit(usd=HUGE, per="day", name="u", alerts=()),
                store=MemoryStore(),
            )
        ],
        timeout=None,
    )

    async def raw_call() -> None:
        await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=messages,  # type: ignore[arg-type]
            max_completion_tokens=50,
        )

    cases: dict[str, Call] = {
        "raw openai SDK": raw_call,
        "Guard(OpenAIProvider), no layers": lambda: bare.complete(request),
        "Guard(OpenAIProvider) + Budget, tokens, MemoryStore": lambda: budgeted.complete(request),
        "Guard(OpenAIProvider) + Budget, tokens + usd, MemoryStore": lambda: priced.complete(
            request
        ),
    }
    return await rounds(cases, args.rounds, dict.fromkeys(cases, args.openai_calls))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=1000, help="calls a round, in memory")
    parser.add_argument("--store-calls", type=int, default=200, help="calls a round, SQLite/Redis")
    parser.add_argument("--openai-calls", type=int, default=200)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    logging.getLogger("llmguard").setLevel(logging.ERROR)

    with tempfile.TemporaryDirectory(prefix="llmguard-bench-") as folder:
        results = anyio.run(measure, args, folder)  # asyncio: RedisStore is asyncio-only
    base = results["Guard, no layers (the baseline)"]
    direct = results["provider called directly"]
    print(f"\nBudget per call on asyncio: median of {args.rounds} rounds")
    print(f"{'variant':48} {'µs/call':>9} {'added µs':>9} {'÷ Guard':>8} {'÷ direct':>9}")
    for name, micros in results.items():
        ratios = f"{micros / base:8.2f} {micros / direct:9.2f}"
        print(f"{name:48} {micros:9.2f} {micros - base:9.2f} {ratios}")

    figures = anyio.run(measure_openai, args)
    raw = figures["raw openai SDK"]
    print("\nopenai SDK on a fake transport (asyncio), per call")
    print(f"{'variant':58} {'µs/call':>9} {'÷ raw SDK':>10}")
    for name, micros in figures.items():
        print(f"{name:58} {micros:9.2f} {micros / raw:10.3f}")


if __name__ == "__main__":
    main()

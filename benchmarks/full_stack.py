"""The production stack per call, against the raw openai SDK on one fake transport.

Run with ``make bench`` (or ``python benchmarks/full_stack.py``). The stack is the one
``examples/production_fastapi.py`` builds (``build_stack``): Observe → Cache → Budget
(a per-user token limit and a global dollar limit) → Fallback (a cheaper model, then a
canned answer) → CircuitBreaker (shared through the store) → Retry → Deadlines, inside
the Guard's total deadline, around ``OpenAIProvider``. Nothing fails; every prompt is
new, so every call is a cache miss (a lookup and a write), reserves and settles its
budget, and goes through the SDK.

Three measurements:

1. Time per call, variants interleaved round after round (``benchmarks/overhead.py``'s
   method): the median over rounds of the mean per call, in CPU time of this thread
   (``time.thread_time``: the fake transport is all in-process work, and CPU time
   leaves out what other processes on a shared machine took) and in wall time.
   Between the raw SDK and the full stack, the layers are added one at a time, so the
   table says where the time goes.
2. The same stack on Redis (cache, budget and breaker in one ``RedisStore``): wall time
   is what counts there (round trips to Redis are waiting, not CPU).
3. Instructions per call under ``valgrind --tool=callgrind`` (``benchmarks/instructions.py``'s
   method: n and 0 measured calls after the same warm-up, so start-up cancels out),
   which does not swing with the machine's load. Skipped without valgrind.

OpenTelemetry: the same stack with the ``OpenTelemetry`` layer on the OpenTelemetry
SDK's providers (its target is 1.15x the raw SDK); see ``otel_layer``.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import itertools
import logging
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from instructions import callgrind_count, redis_answers  # noqa: E402

import llmguard  # noqa: E402
from llmguard import (  # noqa: E402
    Budget,
    Cache,
    CircuitBreaker,
    Deadlines,
    Fallback,
    Guard,
    Limit,
    MemoryStore,
    Observe,
    OpenAIProvider,
    Retry,
    StreamTimeouts,
)

MODEL = "gpt-4o-mini"
MAX_OUT = 500
REDIS_URL = "redis://127.0.0.1:6379/0"
WARMUP = 20
Call = Callable[[], Awaitable[Any]]
_prompts = itertools.count()


@functools.cache
def load_example() -> ModuleType:
    path = HERE.parent / "examples" / "production_fastapi.py"
    spec = importlib.util.spec_from_file_location("production_fastapi", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def prompt() -> str:
    """A new prompt for every call: every call is a cache miss."""
    return f"hello, this is question number {next(_prompts)}"


def quiet_observe() -> Observe:
    """Records built and handed to a callback; not written anywhere (that is I/O)."""
    logger = logging.getLogger("llmguard.calls.bench")
    logger.setLevel(logging.CRITICAL)
    return Observe(logger=logger, callback=lambda record: None)


def otel_available() -> bool:
    return importlib.util.find_spec("opentelemetry") is not None and (
        importlib.util.find_spec("opentelemetry.sdk") is not None
    )


def otel_layer() -> Any | None:
    """The OpenTelemetry layer on the OpenTelemetry SDK's providers, set up as in
    production (``benchmarks/overhead.py``'s ``otel_layer``: spans through a
    ``BatchSpanProcessor`` whose exporter drops them, metrics aggregated in memory), or
    None without the ``otel`` extra. With no SDK set up the layer records nothing and
    costs almost nothing, which would understate it."""
    if not otel_available():
        return None
    from overhead import otel_layer as sdk_otel_layer

    return sdk_otel_layer()


def production_guard(client: Any, store: Any, *, otel: bool = False, wire: str = "sdk") -> Guard:
    """``build_stack`` of the example on ``client`` and ``store``, Observe quiet;
    ``wire="lean"``: the same stack on the lean wire path (``OpenAIProvider(client,
    wire="lean")``, sending through the same client's HTTP client and fake transport)."""
    example = load_example()
    settings = example.Settings(
        wire=wire,
        openai_api_key="sk-bench",
        max_output_tokens=MAX_OUT,
        tokens_per_user_hour=10**12,  # never refused: every call is reserved and settled
        usd_per_day="1000000",
    )
    guard: Guard = example.build_stack(settings, client=client, store=store).guard
    layers = list(guard.layers)
    layers[0] = quiet_observe()
    extra = otel_layer() if otel else None
    if extra is not None:
        layers.insert(0, extra)
    return Guard(guard.provider, layers, model=MODEL, timeout=guard.timeout)


STEPS = (
    "Guard(OpenAIProvider), default 30 s deadline",
    "+ Observe",
    "+ Cache (a miss: lookup and write)",
    "+ Budget (tokens per user, dollars per day)",
    "+ Fallback + CircuitBreaker(store) + Retry",
    "+ Deadlines = the production stack, by hand",
)


def layer_by_layer(client: Any) -> dict[str, Guard]:
    """The raw SDK's way to the full stack, one layer more in each variant."""
    provider = OpenAIProvider(client)
    store = MemoryStore()

    async def canned(request: llmguard.Request) -> llmguard.Response:
        return llmguard.Response(text="busy", finish_reason="stop", provider="canned")

    observe = quiet_observe()
    cache = Cache(store, scope="user", ttl=600)
    budget = Budget(
        Limit(tokens=10**12, per="hour", scope="user", name="user-hourly"),
        Limit(usd="1000000", per="day", name="daily-spend"),
        store=store,
        max_output_tokens=MAX_OUT,
    )
    degrade = [
        Fallback(to=["gpt-4.1-nano", canned]),
        CircuitBreaker(consecutive_failures=5, store=store, name="bench"),
        Retry(attempts=3, total=20),
    ]
    deadlines = Deadlines(StreamTimeouts(total=20, first_token=10, idle=10))
    steps: list[list[Any]] = [
        [],
        [observe],
        [observe, cache],
        [observe, cache, budget],
        [observe, cache, budget, *degrade],
        [observe, cache, budget, *degrade, deadlines],
    ]
    pairs = zip(STEPS, steps, strict=True)
    return {name: Guard(provider, layers, model=MODEL) for name, layers in pairs}


def raw_call(client: Any) -> Call:
    async def call() -> None:
        await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": prompt()}],
            max_completion_tokens=MAX_OUT,
        )

    return call


def guarded_call(guard: Guard) -> Call:
    async def call() -> None:
        with llmguard.context(user="bench-user", endpoint="/chat"):
            await guard.complete(user=prompt(), max_output_tokens=MAX_OUT)

    return call


async def measure(
    cases: dict[str, Call], rounds: int, calls: int
) -> dict[str, tuple[float, float]]:
    """Median over rounds of the mean per call: (CPU µs, wall µs)."""
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    wall: dict[str, list[float]] = {name: [] for name in cases}
    for call in cases.values():
        for _ in range(WARMUP):
            await call()
    for _ in range(rounds):
        for name, call in cases.items():
            start_cpu, start_wall = time.thread_time(), time.perf_counter()
            for _ in range(calls):
                await call()
            cpu[name].append((time.thread_time() - start_cpu) / calls * 1e6)
            wall[name].append((time.perf_counter() - start_wall) / calls * 1e6)
    return {name: (statistics.median(cpu[name]), statistics.median(wall[name])) for name in cases}


async def run_memory(rounds: int, calls: int) -> dict[str, tuple[float, float]]:
    from _openai_fake import fake_client

    client = fake_client()
    cases: dict[str, Call] = {"raw openai SDK": raw_call(client)}
    for name, guard in layer_by_layer(client).items():
        cases[name] = guarded_call(guard)
    cases["the production stack (examples/production_fastapi.py)"] = guarded_call(
        production_guard(client, MemoryStore())
    )
    if otel_available():
        cases["the production stack + OpenTelemetry"] = guarded_call(
            production_guard(client, MemoryStore(), otel=True)
        )
    cases[VARIANTS["production-lean"]] = guarded_call(
        production_guard(client, MemoryStore(), wire="lean")
    )
    if otel_available():
        cases[VARIANTS["otel-lean"]] = guarded_call(
            production_guard(client, MemoryStore(), otel=True, wire="lean")
        )
    return await measure(cases, rounds, calls)


async def run_redis(rounds: int, calls: int) -> dict[str, tuple[float, float]]:
    from _openai_fake import fake_client

    from llmguard import RedisStore

    client = fake_client()
    prefix = f"llmguard-bench:{uuid.uuid4().hex}:"
    async with RedisStore.from_url(REDIS_URL, prefix=prefix) as store:
        try:
            cases: dict[str, Call] = {
                "raw openai SDK": raw_call(client),
                "the production stack, MemoryStore": guarded_call(
                    production_guard(client, MemoryStore())
                ),
                "the production stack, RedisStore (local Redis)": guarded_call(
                    production_guard(client, store)
                ),
            }
            return await measure(cases, rounds, calls)
        finally:
            keys = [key async for key in store._client.scan_iter(match=f"{prefix}*")]
            if keys:
                await store._client.delete(*keys)


# -- instruction counts ----------------------------------------------------------------

COUNTED = ("raw", "guard", "production")
VARIANTS = {
    "raw": "raw openai SDK",
    "guard": "Guard(OpenAIProvider), default 30 s deadline",
    "production": "the production stack (examples/production_fastapi.py)",
    "otel": "the production stack + OpenTelemetry",
    "production-lean": "the production stack, wire='lean'",
    "otel-lean": "the production stack + OpenTelemetry, wire='lean'",
}


def worker(variant: str, n: int) -> None:
    """Run in the measured interpreter: ``n`` calls of one variant after the warm-up."""
    from _openai_fake import fake_client

    client = fake_client()
    if variant == "raw":
        call = raw_call(client)
    elif variant == "guard":
        call = guarded_call(Guard(OpenAIProvider(client), model=MODEL))
    elif variant.startswith("layers:"):  # the k-th step of layer_by_layer
        steps = list(layer_by_layer(client).values())
        call = guarded_call(steps[int(variant.partition(":")[2])])
    else:
        call = guarded_call(
            production_guard(
                client,
                MemoryStore(),
                otel=variant.startswith("otel"),
                wire="lean" if variant.endswith("-lean") else "sdk",
            )
        )

    async def main() -> None:
        for _ in range(WARMUP + n):
            await call()

    anyio.run(main)


def instructions(variant: str, n: int) -> int:
    return callgrind_count(__file__, "--worker", variant, str(n))


def print_table(title: str, figures: dict[str, tuple[float, float]], base: str) -> None:
    raw_cpu, raw_wall = figures[base]
    print(f"\n{title}")
    print(f"{'variant':58} {'CPU µs':>9} {'ratio':>6} {'wall µs':>9} {'ratio':>6}")
    for name, (cpu, wall) in figures.items():
        print(f"{name:58} {cpu:9.1f} {cpu / raw_cpu:6.3f} {wall:9.1f} {wall / raw_wall:6.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--redis", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--instructions", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--counted-calls", type=int, default=100)
    parser.add_argument(
        "--by-layer", action="store_true", help="also count each step from Guard to the stack"
    )
    parser.add_argument("--worker", nargs=2, metavar=("VARIANT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]))
        return

    import openai

    where = f"openai {openai.__version__}, asyncio, fake transport"
    figures = anyio.run(run_memory, args.rounds, args.calls)
    print_table(
        f"per call, MemoryStore ({where}; median of {args.rounds} rounds x {args.calls} calls)",
        figures,
        "raw openai SDK",
    )
    if not otel_available():
        print("(opentelemetry-sdk is not installed: no OpenTelemetry variant)")

    if not args.redis:
        pass
    elif not redis_answers():
        print("\n!!! no Redis on 127.0.0.1:6379: the RedisStore variant is skipped !!!")
    else:
        figures = anyio.run(run_redis, args.rounds, args.calls)
        print_table(f"per call, RedisStore ({where})", figures, "raw openai SDK")

    if not args.instructions:
        return
    if shutil.which("valgrind") is None:
        print("\n!!! valgrind is not installed: instruction counts skipped !!!")
        return
    variants = list(COUNTED)
    if args.by_layer:  # the steps between the bare Guard and the full stack
        variants[2:2] = [f"layers:{k}" for k in range(1, 6)]
    if otel_available():
        variants.append("otel")
    variants.append("production-lean")
    if otel_available():
        variants.append("otel-lean")
    n = args.counted_calls
    counts = {v: (instructions(v, n) - instructions(v, 0)) / n for v in variants}
    print(f"\ninstructions per call (callgrind, {n} calls after {WARMUP} warm-up), MemoryStore")
    print(f"{'variant':58} {'instructions':>14} {'ratio':>7} {'added':>10}")
    previous = None
    for variant, count in counts.items():
        name = STEPS[int(variant[7:])] if variant.startswith("layers:") else VARIANTS[variant]
        added = "" if previous is None else f"{count - previous:+10,.0f}"
        print(f"{name:58} {count:14,.0f} {count / counts['raw']:7.4f} {added:>10}")
        previous = count


if __name__ == "__main__":
    main()

"""Happy-path cost of retry + circuit breaker + fallback (+ router), and of tenacity.

Run with ``make bench`` (or ``python benchmarks/fallback.py``). Nothing fails here: the
question is what the degradation guards cost a call that needs none of them.

- On ``FakeProvider`` (asyncio and trio): a Guard with no layers against the same
  Guard with ``Fallback → CircuitBreaker → Retry`` (and each alone, and with a
  ``Router`` and a store-backed breaker).
- Around a plain async function: the bare call, llmguard's ``retry`` decorator, and
  tenacity's own ``AsyncRetrying`` on the same function: what the happy path would
  pay if llmguard ran every call through tenacity.
- Through the real openai SDK on a fake transport (asyncio): the raw SDK call, the
  Guard with no layers, and the Guard with the whole degradation stack.

Variants run interleaved, round after round. For each variant the table gives the
median over rounds of the mean per-call wall time in a round, the best round (the
least disturbed by other work on a shared machine), and the median CPU time of this
process per call (``time.process_time``: what other processes on the machine disturb
least). Ratios are to the first row, each column to its own. Compare ratios from the
same run, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).parent))

from llmguard import (
    BaseLayer,
    CallContext,
    CircuitBreaker,
    Fallback,
    Guard,
    Handler,
    Invocation,
    MemoryStore,
    ProviderError,
    Request,
    Response,
    Retry,
    Route,
    Router,
    Usage,
    around,
    circuit_breaker,
    fallback,
    retry,
)
from llmguard.testing import FakeProvider

REQUEST = Request.create(model="m", user="hello")
RESPONSE = Response(text="ok", usage=Usage(input_tokens=10, output_tokens=2), model="m")
Call = Callable[[], Awaitable[Any]]
Figures = dict[str, tuple[float, float, float]]  # variant -> (median, best, cpu) µs/call


class TenacityRetry(BaseLayer):
    """What a retry layer costs when every call goes through tenacity (for comparison)."""

    def __init__(self) -> None:
        from tenacity import (
            AsyncRetrying,
            retry_if_exception_type,
            stop_after_attempt,
            wait_random_exponential,
        )

        self._retrying = AsyncRetrying(
            stop=stop_after_attempt(3),
            wait=wait_random_exponential(0.5, 8),
            retry=retry_if_exception_type(ProviderError),
            reraise=True,
        )

    async def complete(self, request: Request, call_next: Handler) -> Response:
        async for attempt in self._retrying:
            with attempt:
                return await call_next(request)
        raise AssertionError("unreachable")


async def canned(request: Request) -> Response:
    return RESPONSE


def stack() -> list[Any]:
    return [Fallback(to=["backup", canned]), CircuitBreaker(), Retry()]


def fake_variants() -> dict[str, Call]:
    fake = FakeProvider(default="ok")

    def guard(layers: list[Any]) -> Call:
        built = Guard(fake, layers, timeout=None)

        def call() -> Awaitable[Response]:
            if len(fake.requests) > 10_000:
                fake.requests.clear()
            return built.complete(REQUEST)

        return call

    router = Router([Route(model="small", tags={"classify"})])
    shared = CircuitBreaker(store=MemoryStore())
    passthrough = [BaseLayer(), BaseLayer(), BaseLayer()]
    return {
        "Guard, no layers": guard([]),
        "Guard + 3 pass-through BaseLayers (the floor)": guard(passthrough),
        "Guard + Retry": guard([Retry()]),
        "Guard + a retry layer on tenacity AsyncRetrying": guard([TenacityRetry()]),
        "Guard + CircuitBreaker": guard([CircuitBreaker()]),
        "Guard + Fallback": guard([Fallback(to=["backup", canned])]),
        "Guard + Fallback + CircuitBreaker + Retry": guard(stack()),
        "Guard + Router + Fallback + CircuitBreaker + Retry": guard([router, *stack()]),
        "Guard + CircuitBreaker(store=MemoryStore())": guard([shared]),
    }


def decorator_variants() -> dict[str, Call]:
    from tenacity import AsyncRetrying, stop_after_attempt, wait_random_exponential

    async def search(query: str) -> list[str]:
        return [query]

    async def full_text(query: str) -> list[str]:
        return [query]

    ours = retry(attempts=3)(search)
    stacked = fallback(to=full_text)(circuit_breaker()(retry(attempts=3)(search)))
    tenacity_retrying = AsyncRetrying(
        stop=stop_after_attempt(3), wait=wait_random_exponential(0.5, 8), reraise=True
    )

    async def with_tenacity() -> list[str]:
        async for attempt in tenacity_retrying:
            with attempt:
                return await search("q")
        raise AssertionError("unreachable")

    async def passthrough(call: Invocation[list[str]]) -> list[str]:
        return await call.proceed()

    floor = around(passthrough)(search)
    return {
        "plain async function": lambda: search("q"),
        "@llmguard.around(pass-through) (the floor)": lambda: floor("q"),
        "@llmguard.retry": lambda: ours("q"),
        "@fallback @circuit_breaker @retry": lambda: stacked("q"),
        "tenacity AsyncRetrying (what we avoid)": with_tenacity,
    }


async def measure(cases: dict[str, Call], rounds: int, calls: int) -> Figures:
    samples: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for call in cases.values():  # warm up
        for _ in range(200):
            await call()
    for _ in range(rounds):
        for name, call in cases.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(calls):
                await call()
            cpu[name].append((time.process_time() - start_cpu) / calls * 1e6)
            samples[name].append((time.perf_counter() - start) / calls * 1e6)
    return {
        name: (statistics.median(values), min(values), statistics.median(cpu[name]))
        for name, values in samples.items()
    }


def layer_variants() -> dict[str, Call]:
    """Each layer's own ``complete`` around a handler that answers at once, inside an
    open call state: the layer's cost with nothing else around it."""

    async def answer(request: Request) -> Response:
        return RESPONSE

    layers = {
        "pass-through BaseLayer (the floor)": BaseLayer(),
        "Retry": Retry(),
        "CircuitBreaker": CircuitBreaker(),
        "Fallback": Fallback(to=["backup", canned]),
        "Router (one tag rule)": Router([Route(model="small", tags={"classify"})]),
    }
    return {
        "handler called directly": lambda: answer(REQUEST),
        **{name: partial(layer.complete, REQUEST, answer) for name, layer in layers.items()},
    }


async def measure_local(rounds: int, calls: int) -> tuple[Figures, Figures, Figures]:
    from llmguard._state import _CURRENT_CALL, CallState

    state = CallState(call_id="bench", context=CallContext(), started_at=0.0, provider="fake")
    token = _CURRENT_CALL.set(state)
    try:
        alone = await measure(layer_variants(), rounds, calls)
    finally:
        _CURRENT_CALL.reset(token)
    return (
        await measure(fake_variants(), rounds, calls),
        await measure(decorator_variants(), rounds, calls),
        alone,
    )


async def measure_openai(rounds: int, calls: int) -> Figures:
    from _openai_fake import fake_client, raw_call, raw_stream

    from llmguard import OpenAIProvider

    client = fake_client()
    request = Request.create(model="gpt-4o-mini", user="hello")
    provider = OpenAIProvider(client)
    bare = Guard(provider, timeout=None)
    guarded = Guard(provider, stack(), timeout=None)
    routed = Guard(provider, [Router([Route(model="x", tags={"t"})]), *stack()], timeout=None)

    async def raw() -> None:
        await raw_call(client)

    async def raw_whole_stream() -> None:
        await raw_stream(client)

    def streamed(guard: Guard) -> Call:
        async def run() -> None:
            async with guard.stream(request) as events:
                async for _ in events:
                    pass

        return run

    cases: dict[str, Call] = {
        "raw openai SDK": raw,
        "Guard(OpenAIProvider), no layers": lambda: bare.complete(request),
        "Guard(OpenAIProvider) + Fallback + CircuitBreaker + Retry": lambda: guarded.complete(
            request
        ),
        "... + Router": lambda: routed.complete(request),
    }
    streams: dict[str, Call] = {
        "stream (100 chunks): raw openai SDK": raw_whole_stream,
        "stream: Guard(OpenAIProvider), no layers": streamed(bare),
        "stream: Guard(OpenAIProvider) + Fallback + CircuitBreaker + Retry": streamed(guarded),
    }
    figures = await measure(cases, rounds, calls)
    figures.update(await measure(streams, rounds, max(1, calls // 10)))
    return figures


def table(title: str, figures: Figures, base: str) -> None:
    print(f"\n{title}")
    print(
        f"{'variant':66} {'median µs':>10} {'ratio':>6} {'best µs':>10} {'ratio':>6} "
        f"{'CPU µs':>10} {'ratio':>6}"
    )
    base_median, base_best, base_cpu = figures[base]
    for name, (median, best, cpu) in figures.items():
        print(
            f"{name:66} {median:10.2f} {median / base_median:6.3f} "
            f"{best:10.2f} {best / base_best:6.3f} {cpu:10.2f} {cpu / base_cpu:6.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--openai", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--openai-rounds", type=int, default=15)
    parser.add_argument("--openai-calls", type=int, default=300)
    args = parser.parse_args()

    for backend in ("asyncio", "trio"):
        guards, decorators, alone = anyio.run(
            measure_local, args.rounds, args.calls, backend=backend
        )
        where = f"median of {args.rounds} rounds x {args.calls} calls"
        table(f"each layer alone on {backend} ({where})", alone, "handler called directly")
        table(f"FakeProvider on {backend} ({where})", guards, "Guard, no layers")
        table(f"decorators on {backend} ({where})", decorators, "plain async function")

    if args.openai:
        import openai

        figures = anyio.run(measure_openai, args.openai_rounds, args.openai_calls)
        title = f"openai {openai.__version__} on a fake transport, asyncio"
        calls = {k: v for k, v in figures.items() if not k.startswith("stream")}
        streams = {k: v for k, v in figures.items() if k.startswith("stream")}
        table(f"{title} (median of {args.openai_rounds} rounds)", calls, "raw openai SDK")
        table(f"{title}: whole streams", streams, "stream (100 chunks): raw openai SDK")


if __name__ == "__main__":
    main()

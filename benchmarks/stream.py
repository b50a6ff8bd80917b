"""Per-event cost of streaming: the raw openai SDK, ``Guard.stream`` with
``Deadlines`` on the SDK path and on the lean wire path (``wire="lean"``), and
``sse()`` encoding.

Run with ``make bench``. Every stream is 1,000 events from the same fake transport
(no network). Variants run interleaved, round after round; each figure is the median
over rounds of the per-event time. Compare ratios from the same run.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent))

from llmguard import (
    Deadlines,
    Guard,
    Observe,
    OpenAIProvider,
    Request,
    StreamEvent,
    StreamTimeouts,
    TextDelta,
    sse,
)

EVENTS = 1000


async def measure(rounds: int) -> dict[str, float]:  # noqa: C901 - a flat list of cases
    from _openai_fake import fake_client
    from _openai_fake import raw_stream as sdk_stream

    client = fake_client(EVENTS)
    request = Request.create(model="gpt-4o-mini", user="hello")
    provider = OpenAIProvider(client)
    lean = OpenAIProvider(client, wire="lean")
    timeouts = StreamTimeouts(first_token=30, idle=30, total=600)
    quiet = logging.getLogger("llmguard.calls.bench")
    quiet.setLevel(logging.CRITICAL)
    bare = Guard(provider)
    deadlines = Guard(provider, [Deadlines(timeouts)])
    full = Guard(provider, [Observe(logger=quiet, callback=lambda r: None), Deadlines(timeouts)])
    lean_observed = Guard(lean, [Observe(logger=quiet, callback=lambda r: None)])
    lean_full = Guard(lean, [Observe(logger=quiet, callback=lambda r: None), Deadlines(timeouts)])
    prebuilt: list[StreamEvent] = [TextDelta(text=f"w{i} ") for i in range(EVENTS)]

    async def raw_sdk() -> None:
        await sdk_stream(client)

    def guarded(guard: Guard) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            async with guard.stream(request) as events:
                async for _ in events:
                    pass

        return run

    async def guarded_sse() -> None:
        async with deadlines.stream(request) as events:
            async for _ in sse(events):
                pass

    async def events_source() -> AsyncIterator[StreamEvent]:
        for event in prebuilt:
            yield event

    async def bare_source() -> None:
        async for _ in events_source():
            pass

    async def sse_only() -> None:
        async for _ in sse(events_source()):
            pass

    async def sse_heartbeat() -> None:
        async with sse(events_source(), heartbeat=15) as body:
            async for _ in body:
                pass

    cases: dict[str, Callable[[], Awaitable[None]]] = {
        "raw openai SDK": raw_sdk,
        "Guard.stream, no layers": guarded(bare),
        "Guard.stream + Deadlines": guarded(deadlines),
        "Guard.stream + Observe + Deadlines": guarded(full),
        "lean wire: Guard.stream + Observe": guarded(lean_observed),
        "lean wire: Guard.stream + Observe + Deadlines": guarded(lean_full),
        "Guard.stream + Deadlines + sse()": guarded_sse,
        "sse source alone (async generator)": bare_source,
        "sse() over that source": sse_only,
        "sse(heartbeat=15) over that source": sse_heartbeat,
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for run in cases.values():
        for _ in range(3):
            await run()
    for _ in range(rounds):
        for name, run in cases.items():
            start = time.perf_counter()
            await run()
            samples[name].append((time.perf_counter() - start) / EVENTS * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    import openai

    for backend in ("asyncio", "trio"):
        if backend == "trio" and int(openai.__version__.split(".")[0]) < 3:
            continue  # openai 2.x streams on asyncio only in this fake transport
        figures = anyio.run(measure, args.rounds, backend=backend)
        raw = figures["raw openai SDK"]
        base = figures["sse source alone (async generator)"]
        print(
            f"\nstreams of {EVENTS} events, openai {openai.__version__}, {backend}: "
            f"median of {args.rounds} rounds"
        )
        print(f"{'variant':46} {'µs/event':>9} {'ratio to raw SDK':>17}")
        for name, micros in figures.items():
            if name.startswith("sse"):
                print(f"{name:46} {micros:9.2f} {'':>17}")
            else:
                print(f"{name:46} {micros:9.2f} {micros / raw:17.3f}")
        encode = figures["sse() over that source"] - base
        beat = figures["sse(heartbeat=15) over that source"] - base
        print(f"sse() encoding cost per event: {encode:.2f} µs (target <= 3 µs)")
        print(f"sse(heartbeat=...) cost per event: {beat:.2f} µs")
        ratio = figures["Guard.stream + Deadlines"] / raw
        print(f"Guard.stream + Deadlines vs raw SDK: {ratio:.3f}x (target <= 1.10x)")
        lean_ratio = figures["lean wire: Guard.stream + Observe"] / raw
        print(f"lean wire, Guard.stream + Observe vs raw SDK: {lean_ratio:.3f}x (target <= 0.5x)")


if __name__ == "__main__":
    main()

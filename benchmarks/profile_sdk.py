"""Where the raw openai SDK spends its time per call and per stream chunk, and where
the lean wire path (``OpenAIProvider(client, wire="lean")``) spends it, on the same
fake transport (``_openai_fake.py``: a ``MockTransport`` answering fixed bodies).

Each phase is timed on its own, with the SDK's own functions (read in openai 3.57 and
2.54; they are private and may move), in CPU time of this thread, median of rounds:

- per call: turning the arguments into the request body (``async_maybe_transform``),
  building the HTTP request (``_build_request``: headers, URL, JSON), sending it through
  the HTTP client and the fake transport (``AsyncClient.send``), and reading the answer
  (``json.loads`` and pydantic's ``construct`` of a ``ChatCompletion``);
- per chunk: SSE decoding, ``json.loads`` and the ``ChatCompletionChunk`` of one chunk.

``--cprofile`` also prints cProfile's top functions for the raw SDK (its overhead
inflates small functions: read it for where, and the table for how much).

Run with ``make bench`` (or ``python benchmarks/profile_sdk.py``).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).parent))

CHUNKS = 100


def timed(fn: Callable[[], object], n: int, rounds: int) -> float:
    """Median over rounds of the mean CPU µs per call of ``fn``."""
    for _ in range(max(5, n // 10)):
        fn()
    samples = []
    for _ in range(rounds):
        start = time.thread_time()
        for _ in range(n):
            fn()
        samples.append((time.thread_time() - start) / n * 1e6)
    return statistics.median(samples)


async def atimed(fn: Callable[[], Awaitable[object]], n: int, rounds: int) -> float:
    for _ in range(max(5, n // 10)):
        await fn()
    samples = []
    for _ in range(rounds):
        start = time.thread_time()
        for _ in range(n):
            await fn()
        samples.append((time.thread_time() - start) / n * 1e6)
    return statistics.median(samples)


async def measure_phases(rounds: int) -> dict[str, float]:
    from _openai_fake import COMPLETION, fake_client, stream_body
    from _openai_fake import raw_call as sdk_call
    from _openai_fake import raw_stream as sdk_stream
    from openai._models import FinalRequestOptions, construct_type
    from openai._streaming import SSEDecoder as SDKDecoder
    from openai._utils import async_maybe_transform
    from openai.types.chat import ChatCompletion, ChatCompletionChunk, completion_create_params

    from llmguard import OpenAIProvider, Request
    from llmguard._providers._openai_chat import ChatStreamState
    from llmguard._providers._wire_chat import chunk_events, completion_response, encode_body, loads
    from llmguard._providers._wire_sse import SSEDecoder

    client = fake_client(CHUNKS)
    http = client._client
    messages = [{"role": "user", "content": "hello"}]
    params = {"model": "gpt-4o-mini", "messages": messages}
    request = Request.create(model="gpt-4o-mini", user="hello")
    lean = OpenAIProvider(client, wire="lean")
    calls, n_chunk = 300, 20_000
    out: dict[str, float] = {}

    async def raw_call() -> None:
        await sdk_call(client)

    async def raw_stream() -> None:
        await sdk_stream(client)

    async def lean_call() -> None:
        await lean.complete(request)

    async def lean_stream() -> None:
        async with lean.stream(request) as events:
            async for _ in events:
                pass

    def transform() -> Awaitable[Any]:
        return async_maybe_transform(
            params, completion_create_params.CompletionCreateParamsNonStreaming
        )

    options = FinalRequestOptions.construct(
        method="post", url="/chat/completions", json_data=params
    )
    built = client._build_request(options)

    async def send() -> None:
        await http.send(built)

    data = json.loads(COMPLETION)
    out["call: raw openai SDK, total"] = await atimed(raw_call, calls, rounds)
    out["call: SDK transforms the arguments"] = await atimed(transform, calls, rounds)
    out["call: SDK builds the HTTP request"] = timed(
        lambda: client._build_request(options), calls, rounds
    )
    out["call: HTTP client + fake transport (send)"] = await atimed(send, calls, rounds)
    out["call: json.loads of the answer"] = timed(lambda: json.loads(COMPLETION), calls, rounds)
    out["call: SDK builds the ChatCompletion (construct)"] = timed(
        lambda: construct_type(type_=ChatCompletion, value=data), calls, rounds
    )
    out["call: lean wire, total"] = await atimed(lean_call, calls, rounds)
    out["call: lean encodes the body"] = timed(
        lambda: encode_body(
            request, stream=False, include_usage=False, max_tokens_field="max_completion_tokens"
        ),
        calls,
        rounds,
    )
    bound = lean._lean._bind()  # type: ignore[union-attr]
    out["call: lean builds the HTTP request"] = timed(
        lambda: http.build_request(
            "POST", bound.url, headers=bound.headers, content=b"{}", timeout=bound.timeout
        ),
        calls,
        rounds,
    )
    out["call: lean reads the answer (jiter + Response)"] = timed(
        lambda: completion_response(loads(COMPLETION), provider="openai"), calls, rounds
    )

    body = stream_body(CHUNKS)
    lines = [line for line in body.split(b"\n\n") if line.startswith(b"data: {")]
    one = lines[1][6:]
    chunk = json.loads(one)
    per_stream = CHUNKS + 2  # content chunks, the finish chunk, the usage chunk
    out["chunk: raw openai SDK, total"] = (
        await atimed(raw_stream, max(1, calls // 10), rounds) / per_stream
    )

    def sdk_decode() -> None:
        for _ in SDKDecoder().iter_bytes(iter([body])):
            pass

    out["chunk: SDK decodes the SSE"] = timed(sdk_decode, 100, rounds) / per_stream
    out["chunk: json.loads"] = timed(lambda: json.loads(one.decode()), n_chunk, rounds)
    out["chunk: SDK builds the ChatCompletionChunk"] = timed(
        lambda: construct_type(type_=ChatCompletionChunk, value=chunk), n_chunk, rounds
    )
    out["chunk: lean wire, total"] = await atimed(lean_stream, max(1, calls // 10), rounds) / (
        per_stream
    )

    def lean_decode() -> None:
        SSEDecoder().feed(body)

    out["chunk: lean decodes the SSE"] = timed(lean_decode, 100, rounds) / per_stream
    out["chunk: lean parses (jiter)"] = timed(lambda: loads(one.decode()), n_chunk, rounds)
    state = ChatStreamState()
    out["chunk: lean maps it to events"] = timed(
        lambda: chunk_events(chunk, state), n_chunk, rounds
    )
    return out


def cprofile_raw(kind: str, n: int) -> None:
    from _openai_fake import fake_client

    client = fake_client(CHUNKS)
    messages = [{"role": "user", "content": "hello"}]

    async def run() -> None:
        for _ in range(n):
            if kind == "call":
                await client.chat.completions.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
            else:
                stream = await client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=messages,  # type: ignore[arg-type]
                    stream=True,
                )
                async for _ in stream:
                    pass

    anyio.run(run)  # warm up
    profile = cProfile.Profile()
    profile.enable()
    anyio.run(run)
    profile.disable()
    print(f"\ncProfile, raw SDK {kind}s, top 25 by cumulative time")
    pstats.Stats(profile).sort_stats("cumulative").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args()
    import openai

    figures = anyio.run(measure_phases, args.rounds)
    print(f"\nopenai {openai.__version__}, asyncio, CPU µs (median of {args.rounds} rounds)")
    for kind in ("call", "chunk"):
        total = figures[f"{kind}: raw openai SDK, total"]
        print(f"{'phase':52} {'µs':>9} {'share of the raw SDK':>21}")
        for name, micros in figures.items():
            if name.startswith(kind):
                print(f"{name:52} {micros:9.2f} {micros / total:20.1%}")
        print()
    if args.cprofile:
        cprofile_raw("call", 300)
        cprofile_raw("stream", 30)


if __name__ == "__main__":
    main()

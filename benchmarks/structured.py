"""The cost of ``guard.structured()`` over doing it by hand, on a fake OpenAI transport.

"By hand" is the raw openai SDK call with the same strict ``response_format``, then
pydantic's own ``Model.model_validate_json`` on the answer. Both go through the same
in-process transport that answers with the same JSON, so what differs is llmguard's
work: building the request, the layer stack and call state, reading the answer
(extraction fast path) and validating it. The target is at most 1.15x.

Streaming is measured too: ``structured_stream`` (a partial object per chunk) against
the raw SDK stream followed by one ``model_validate_json``; partials are extra work
the raw path does not do, so that ratio is reported, not targeted.

Variants run interleaved call by call, round after round; each figure is the median
over rounds of the mean per-call time inside a round. Time is this process's CPU time: the transport
is in-process, so a call is all CPU, and CPU time is disturbed less than wall time by
the other processes of a shared machine. Compare ratios from the same run.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import openai
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).parent))

from _openai_fake import http_module

from llmguard import Guard, Observe, OpenAIProvider, Request, output_schema


class LineItem(BaseModel):
    sku: str
    description: str
    quantity: int
    unit_cents: int


class Invoice(BaseModel):
    number: str
    customer: str
    currency: str
    items: list[LineItem]
    notes: str | None = None


ANSWER = Invoice(
    number="INV-2024-0042",
    customer="ACME Corporation, 1 Road Runner Way",
    currency="EUR",
    items=[
        LineItem(sku=f"SKU-{i:04d}", description=f"Widget model {i}", quantity=i, unit_cents=995)
        for i in range(1, 9)
    ],
    notes="Net 30.",
).model_dump_json()


def completion(content: str) -> bytes:
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 120, "completion_tokens": 180, "total_tokens": 300},
    }
    return json.dumps(body).encode()


def stream_body(content: str, chunk: int) -> bytes:
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    lines = [
        {**base, "choices": [{"index": 0, "delta": {"content": content[i : i + chunk]}}]}
        for i in range(0, len(content), chunk)
    ]
    lines.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    usage = {"prompt_tokens": 120, "completion_tokens": 180, "total_tokens": 300}
    lines.append({**base, "choices": [], "usage": usage})
    text = "".join(f"data: {json.dumps(line)}\n\n" for line in lines) + "data: [DONE]\n\n"
    return text.encode()


def fake_client(content: str, chunk: int) -> openai.AsyncOpenAI:
    """A client whose every chat completion answers ``content`` (JSON or SSE)."""
    http = http_module()
    whole, streamed = completion(content), stream_body(content, chunk)

    def handler(request: Any) -> Any:
        if b'"stream":true' in request.content.replace(b" ", b""):
            return http.Response(
                200, headers={"content-type": "text/event-stream"}, content=streamed
            )
        return http.Response(200, headers={"content-type": "application/json"}, content=whole)

    return openai.AsyncOpenAI(
        api_key="sk-bench",
        max_retries=0,
        http_client=http.AsyncClient(transport=http.MockTransport(handler)),
    )


def cases(chunk: int) -> dict[str, Callable[[], Awaitable[Any]]]:
    client = fake_client(ANSWER, chunk)
    fenced = fake_client(f"Here is the invoice:\n```json\n{ANSWER}\n```\n", chunk)
    messages = [{"role": "user", "content": "Extract the invoice."}]
    response_format = dict(output_schema(Invoice).response_format)
    request = Request.create(model="gpt-4o-mini", user="Extract the invoice.")
    quiet = logging.getLogger("llmguard.calls.bench")
    quiet.setLevel(logging.CRITICAL)
    bare = Guard(OpenAIProvider(client))
    observed = Guard(OpenAIProvider(client), [Observe(logger=quiet, callback=lambda r: None)])
    prose = Guard(OpenAIProvider(fenced, structured_output="json"))

    async def raw_call() -> Invoice:
        answer = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=messages,  # type: ignore[arg-type]
            response_format=response_format,  # type: ignore[arg-type]
        )
        return Invoice.model_validate_json(answer.choices[0].message.content or "")

    async def raw_stream() -> Invoice:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=messages,  # type: ignore[arg-type]
            response_format=response_format,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        parts = []
        async for event in stream:
            if event.choices and event.choices[0].delta.content:
                parts.append(event.choices[0].delta.content)
        await stream.close()
        return Invoice.model_validate_json("".join(parts))

    async def guarded_stream() -> Any:
        last = None
        async with bare.structured_stream(Invoice, request) as partials:
            async for partial in partials:
                last = partial
        return last

    return {
        "call: raw SDK + model_validate_json": raw_call,
        "call: guard.structured, no layers": lambda: bare.structured(Invoice, request),
        "call: guard.structured + Observe": lambda: observed.structured(Invoice, request),
        "call: guard.structured, fenced answer (json mode)": lambda: prose.structured(
            Invoice, request
        ),
        "stream: raw SDK + model_validate_json": raw_stream,
        "stream: guard.structured_stream (partials)": guarded_stream,
    }


async def measure(rounds: int, calls: int, chunk: int) -> dict[str, float]:
    variants = cases(chunk)
    for call in variants.values():  # warm up, and check every variant gives the invoice
        for _ in range(20):
            result = await call()
        assert result == Invoice.model_validate_json(ANSWER), result
    samples: dict[str, list[float]] = {name: [] for name in variants}
    clock = time.process_time
    for _ in range(rounds):
        # Interleaved call by call, so every variant sees the same moments of a shared
        # machine's load; streams are ~6x longer, so they run every 4th turn.
        spent = dict.fromkeys(variants, 0.0)
        counts = dict.fromkeys(variants, 0)
        for turn in range(calls):
            for name, call in variants.items():
                if name.startswith("stream") and turn % 4:
                    continue
                start = clock()
                await call()
                spent[name] += clock() - start
                counts[name] += 1
        for name in variants:
            samples[name].append(spent[name] / counts[name] * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=16, help="characters per stream chunk")
    args = parser.parse_args()
    figures = anyio.run(measure, args.rounds, args.calls, args.chunk)
    print(
        f"\nstructured output, openai {openai.__version__} on a fake transport (asyncio); "
        f"answer {len(ANSWER)} characters, {args.chunk} per stream chunk"
    )
    print(f"{'variant':52} {'µs/call':>9} {'ratio':>7}")
    for name, micros in figures.items():
        raw = figures[
            "call: raw SDK + model_validate_json"
            if name.startswith("call")
            else "stream: raw SDK + model_validate_json"
        ]
        print(f"{name:52} {micros:9.1f} {micros / raw:7.3f}")
    ratio = (
        figures["call: guard.structured, no layers"]
        / figures["call: raw SDK + model_validate_json"]
    )
    print(f"\nguard.structured / (raw SDK + model_validate_json) = {ratio:.3f} (target <= 1.15)")


if __name__ == "__main__":
    main()

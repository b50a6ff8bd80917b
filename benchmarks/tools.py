"""Per-step overhead of the tool loop over the raw openai SDK calls it makes.

Run with ``make bench`` (or ``python benchmarks/tools.py``). Both sides make the same
two model calls on one fake transport (the first answers with one or several tool
calls, the second with text) and run the same tool:

- raw: ``client.chat.completions.create``, ``json.loads`` of the arguments, call
  the function, append the tool messages, call again;
- guarded: ``guard.run_tools`` on ``Guard(OpenAIProvider(client))``: allowlist lookup,
  size and depth checks, strict pydantic validation, dispatch (a task group for
  parallel calls), serialisation, one call state.

Both sides send the same two requests, byte for byte once parsed (checked before
measuring): the raw side builds the assistant message as the API returned it (its
``content`` null included, as the SDK's own examples send it) and the tool result as
compact JSON. (Until issue 8 the raw side sent ``model_dump(exclude_none=True)``, which
leaves the null out: a smaller request, whose transform costs the SDK about a million
instructions less a loop, so the figures compared unlike requests.)

Variants run interleaved; each figure is the median over rounds of the mean time per
loop (two model calls). Two ratios, measured in the same run: against the raw SDK
(the whole cost of going through llmguard), and against the same two calls made with
``guard.complete`` and the tool run by hand (the loop's own work: validation,
dispatch, transcript, one call state).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).parent))

from _openai_fake import http_module

from llmguard import Guard, Message, OpenAIProvider, Request, Toolbox, tool


def _completion(message: dict[str, Any], finish: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
        }
    ).encode()


def _tool_calls(count: int) -> bytes:
    calls = [
        {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": "lookup", "arguments": json.dumps({"city": "Paris", "n": i})},
        }
        for i in range(count)
    ]
    return _completion({"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls")


FINAL = _completion({"role": "assistant", "content": "It is sunny.", "refusal": None}, "stop")


def client_for(parallel: int, sent: list[Any] | None = None) -> Any:
    """An SDK client on a fake transport (``sent``: where to keep each request body)."""
    import openai

    http = http_module()
    first = _tool_calls(parallel)

    def handler(request: Any) -> Any:
        # The first request ends with the user's message, the second with tool results.
        body = request.content
        if sent is not None:
            sent.append(json.loads(body))
        content = FINAL if b'"role":"tool"' in body.replace(b" ", b"") else first
        return http.Response(200, headers={"content-type": "application/json"}, content=content)

    return openai.AsyncOpenAI(
        api_key="sk-bench",
        max_retries=0,
        http_client=http.AsyncClient(transport=http.MockTransport(handler)),
    )


async def lookup(city: str, n: int) -> dict[str, Any]:
    return {"city": city, "n": n, "weather": "sunny"}


def variants(
    parallel: int, sent: list[Any] | None = None
) -> dict[str, Callable[[], Awaitable[Any]]]:
    client = client_for(parallel, sent)
    guard = Guard(OpenAIProvider(client), model="gpt-4o-mini")
    box = Toolbox([tool(lookup)])
    user = [Message.user("Weather in Paris?")]
    spec = box.specs[0]
    function: dict[str, Any] = {"name": spec.name, "parameters": dict(spec.parameters)}
    if spec.description:  # an empty description is left out, as llmguard does
        function["description"] = spec.description
    raw_tools = [{"type": "function", "function": function}]

    async def raw() -> str:
        messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris?"}]
        first = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=messages,
            tools=raw_tools,
        )
        message = first.choices[0].message
        calls = message.tool_calls or []
        messages.append(
            {
                "role": "assistant",
                "content": message.content,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {
                            "name": call.function.name,
                            "arguments": call.function.arguments,
                        },
                    }
                    for call in calls
                ],
            }
        )
        for call in calls:
            arguments = json.loads(call.function.arguments)
            value = await lookup(**arguments)
            content = json.dumps(value, separators=(",", ":"))
            messages.append({"role": "tool", "content": content, "tool_call_id": call.id})
        second = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=messages,
            tools=raw_tools,
        )
        return second.choices[0].message.content or ""

    async def guarded() -> str:
        result = await guard.run_tools(messages=user, tools=box)
        return result.text

    first_request = Request.create(model="gpt-4o-mini", messages=user, tools=box.specs)

    async def two_completes() -> str:
        # The same two model calls through guard.complete, the tool run by hand: what
        # the provider adapter costs, without the loop's own work.
        first = await guard.complete(first_request)
        messages = [*user, Message.assistant(None, tool_calls=first.tool_calls)]
        for call in first.tool_calls:
            value = await lookup(**json.loads(call.arguments))
            messages.append(Message.tool(json.dumps(value), tool_call_id=call.id))
        second = await guard.complete(replace(first_request, messages=tuple(messages)))
        return second.text

    return {"raw openai SDK": raw, "2x guard.complete": two_completes, "guard.run_tools": guarded}


async def check_same_requests(parallel: int) -> None:
    """Raise unless the raw loop and ``guard.run_tools`` send the same request bodies."""
    bodies: dict[str, list[Any]] = {}
    for name in ("raw openai SDK", "guard.run_tools"):
        sent: list[Any] = []
        await variants(parallel, sent)[name]()
        bodies[name] = sent
    if bodies["raw openai SDK"] != bodies["guard.run_tools"]:
        raise AssertionError(f"the two sides send different requests: {bodies}")


async def measure(rounds: int, loops: int, parallel: int) -> dict[str, float]:
    await check_same_requests(parallel)
    cases = variants(parallel)
    for call in cases.values():
        assert await call() == "It is sunny."
        for _ in range(20):
            await call()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, call in cases.items():
            start = time.perf_counter()
            for _ in range(loops):
                await call()
            samples[name].append((time.perf_counter() - start) / loops * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--loops", type=int, default=100)
    args = parser.parse_args()
    import openai

    print(f"openai {openai.__version__}, fake transport; one loop = 2 model calls")
    print(
        f"{'calls/step, backend':22} {'variant':18} {'µs/loop':>9} {'µs/step':>9} "
        f"{'vs raw':>7} {'vs 2x complete':>15}"
    )
    for parallel in (1, 4):
        for backend in ("asyncio", "trio"):
            figures = anyio.run(measure, args.rounds, args.loops, parallel, backend=backend)
            raw = figures["raw openai SDK"]
            plain = figures["2x guard.complete"]
            for name, micros in figures.items():
                print(
                    f"{parallel:<4} on {backend:14} {name:18} {micros:9.1f} {micros / 2:9.1f} "
                    f"{micros / raw:7.3f} {micros / plain:15.3f}"
                )


if __name__ == "__main__":
    main()

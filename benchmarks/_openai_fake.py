"""A minimal fake OpenAI transport for benchmarks: fixed bodies, no network."""

from __future__ import annotations

import json
from typing import Any

import openai

from llmguard.testing._openai_body import http_module_for_sdk

COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there!", "refusal": None},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }
).encode()


def stream_body(chunks: int) -> bytes:
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    lines = []
    for i in range(chunks):
        delta = {"content": f"w{i} "}
        lines.append({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    lines.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    usage = {"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks}
    lines.append({**base, "choices": [], "usage": usage})
    text = "".join(f"data: {json.dumps(line)}\n\n" for line in lines) + "data: [DONE]\n\n"
    return text.encode()


# The HTTP library of the installed SDK (httpx2 from openai 3.x on, httpx before).
http_module = http_module_for_sdk


def fake_client(stream_chunks: int = 100) -> openai.AsyncOpenAI:
    http = http_module()
    streamed = stream_body(stream_chunks)

    def handler(request: Any) -> Any:
        if b'"stream":true' in request.content.replace(b" ", b""):
            return http.Response(
                200, headers={"content-type": "text/event-stream"}, content=streamed
            )
        return http.Response(200, headers={"content-type": "application/json"}, content=COMPLETION)

    return openai.AsyncOpenAI(
        api_key="sk-bench",
        max_retries=0,
        http_client=http.AsyncClient(transport=http.MockTransport(handler)),
    )


#: The one-message conversation every "raw SDK" variant sends.
HELLO: list[Any] = [{"role": "user", "content": "hello"}]


async def raw_call(client: openai.AsyncOpenAI) -> None:
    """One chat completion through the raw SDK (the baseline of every per-call ratio)."""
    await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)


async def raw_stream(client: openai.AsyncOpenAI) -> None:
    """One streamed chat completion through the raw SDK, read to the end and closed."""
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for _ in stream:
        pass
    await stream.close()

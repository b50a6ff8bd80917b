"""Helpers for the lean HTTP client's tests: answers a loopback server gives, and a
provider or a ``LeanClient`` pointed at it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from llmguard import OpenAIProvider, Request
from llmguard._providers._lean_http import LeanClient

from ._loopback import Exchange, Server, serve

KEY = "sk-test-PLANTED-h11-0123456789abcdef"
REQUEST = Request.create(model="gpt-4o-mini", user="hi")
JSON = [("content-type", "application/json")]
SSE = [("content-type", "text/event-stream")]


def completion(text: str = "ok") -> bytes:
    choice = {"index": 0, "message": {"role": "assistant", "content": text}}
    return json.dumps(
        {"id": "c1", "model": "m", "choices": [{**choice, "finish_reason": "stop"}]}
    ).encode()


def sse_events(*texts: str) -> list[bytes]:
    events = [
        json.dumps({"id": "c", "choices": [{"index": 0, "delta": {"content": t}}]}) for t in texts
    ]
    stop = json.dumps({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return [f"data: {e}\n\n".encode() for e in [*events, stop]] + [b"data: [DONE]\n\n"]


async def answer_json(exchange: Exchange) -> None:
    await exchange.respond(200, JSON, completion())


async def answer_stream(exchange: Exchange) -> None:
    await exchange.head(200, SSE)  # chunked
    for event in sse_events("Hel", "lo", " there"):
        await exchange.data(event)
    await exchange.end()


async def by_kind(exchange: Exchange) -> None:
    """JSON or SSE as the request asks."""
    if json.loads(exchange.request.body).get("stream"):
        await answer_stream(exchange)
    else:
        await answer_json(exchange)


def provider_for(server: Server, **kw: Any) -> OpenAIProvider:
    return OpenAIProvider(api_key=KEY, base_url=f"{server.url}/v1", wire="lean", **kw)


@asynccontextmanager
async def running(
    app: Callable[[Exchange], Awaitable[None]], **kw: Any
) -> AsyncIterator[tuple[Server, OpenAIProvider]]:
    async with serve(app) as server:
        provider = provider_for(server, **kw)
        try:
            yield server, provider
        finally:
            await provider.aclose()


def lean_client(provider: OpenAIProvider) -> LeanClient:
    assert provider._lean is not None
    client = provider._lean.http_client
    assert isinstance(client, LeanClient)
    return client


async def read_stream(provider: OpenAIProvider) -> str:
    text = ""
    async with provider.stream(REQUEST) as events:
        async for event in events:
            text += getattr(event, "text", "")
    return text


@asynccontextmanager
async def own_client(**kw: Any) -> AsyncIterator[LeanClient]:
    client = LeanClient(**kw)
    try:
        yield client
    finally:
        await client.aclose()

"""Type-checked with ``mypy --strict`` in ``make test``: the API used as the docs use it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import assert_type

import llmguard
from llmguard import Guard, Observe, Request, Response, around, timeout
from llmguard.testing import FakeProvider


@dataclass
class Hit:
    doc: str


@timeout(2.0)
async def search(query: str, k: int) -> list[Hit]:
    return [Hit(doc=query)] * k


async def uses_search() -> None:
    hits = await search("q", 3)
    assert_type(hits, list[Hit])
    # The signature survives the decorator: a wrong argument is an error, and
    # warn_unused_ignores (on under --strict) fails the check if it is not.
    await search(1, "three")  # type: ignore[arg-type]


async def passthrough(call: llmguard.Invocation[int]) -> int:
    return await call.proceed()


async def uses_guard() -> None:
    guard = Guard(FakeProvider(["hi"]), [Observe()], model="m")
    response = await guard.complete(system="You are terse.", user="hello")
    assert_type(response, Response)
    async with guard.stream(user="hi") as events:
        async for event in events:
            assert_type(event, llmguard.StreamEvent)
    assert_type(guard.sync.complete(user="hi"), Response)
    request = Request.create(model="m", system="Literal instructions.", user="user text")
    assert_type(request, Request)


async def handler(request: Request) -> Response:
    return Response(text=request.last_user_text)


observed = Observe()(handler)
assert_type(observed, llmguard.Handler)
_ = around


async def full_text_fallback(call: llmguard.Invocation[list[Hit]]) -> list[Hit]:
    try:
        return await call.proceed()
    except llmguard.LLMGuardError:
        return [Hit(doc="from full-text search")]


@around(full_text_fallback)
async def semantic_search(query: str, k: int) -> list[Hit]:
    return [Hit(doc=query)] * k


def runs_in_asyncio_run() -> None:
    import asyncio

    hits = asyncio.run(semantic_search("q", 2))
    assert_type(hits, list[Hit])

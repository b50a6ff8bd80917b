"""A refusal that streams (``delta.refusal`` on Chat Completions,
``response.refusal.delta`` on the Responses API) arrives as ``RefusalDelta`` events and
in ``Response.refusal``, on both wire paths: structured output raises ``Refusal`` at
once instead of re-asking an "empty" answer, the cache does not keep it, and ``sse()``
carries it to a browser."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from llmguard import (
    Cache,
    Guard,
    OpenAIProvider,
    Refusal,
    RefusalDelta,
    TextDelta,
    parse_sse,
    sse,
)
from llmguard.testing import FakeOpenAIEndpoint, FakeProvider, FakeReply

pytestmark = pytest.mark.anyio

NO = "I can't help with that request."


class City(pydantic.BaseModel):
    name: str


def provider(endpoint: FakeOpenAIEndpoint, wire: str, api: str = "chat") -> OpenAIProvider:
    return OpenAIProvider(endpoint.async_client(), wire=wire, api=api)  # type: ignore[arg-type]


async def collect(guard: Guard) -> tuple[list[Any], Any]:
    async with guard.stream(user="Tell me a secret.") as events:
        got = [event async for event in events]
    return got, events.response


@pytest.mark.parametrize("wire", ["sdk", "lean"])
async def test_a_streamed_refusal_is_events_and_the_responses_refusal(wire: str) -> None:
    endpoint = FakeOpenAIEndpoint([FakeReply.refused(NO)], chunk_size=5)
    got, response = await collect(Guard(provider(endpoint, wire), model="gpt-4o-mini"))
    pieces = [event.text for event in got if isinstance(event, RefusalDelta)]
    assert len(pieces) > 1 and "".join(pieces) == NO
    assert not any(isinstance(event, TextDelta) for event in got)
    assert response.refusal == NO and response.text == ""


async def test_a_streamed_refusal_on_the_responses_api() -> None:
    endpoint = FakeOpenAIEndpoint([FakeReply.refused(NO)])
    got, response = await collect(Guard(provider(endpoint, "sdk", "responses"), model="m"))
    assert "".join(e.text for e in got if isinstance(e, RefusalDelta)) == NO
    assert response.refusal == NO


@pytest.mark.parametrize("wire", ["sdk", "lean"])
async def test_structured_stream_raises_refusal_without_re_asking(wire: str) -> None:
    endpoint = FakeOpenAIEndpoint([FakeReply.refused(NO)] * 3)
    guard = Guard(provider(endpoint, wire), model="gpt-4o-mini")
    with pytest.raises(Refusal, match="can't help"):
        async with guard.structured_stream(City, user="A city?", retries=2) as partials:
            async for _ in partials:
                pass
    assert len(endpoint.requests) == 1  # refused once: never re-asked as "empty"


@pytest.mark.parametrize("wire", ["sdk", "lean"])
async def test_the_cache_does_not_keep_a_streamed_refusal(wire: str) -> None:
    endpoint = FakeOpenAIEndpoint([FakeReply.refused(NO), "Paris."])
    guard = Guard(provider(endpoint, wire), [Cache()], model="gpt-4o-mini")
    _, first = await collect(guard)
    again = await guard.complete(user="Tell me a secret.")
    assert first.refusal == NO
    assert (again.text, again.cached, len(endpoint.requests)) == ("Paris.", False, 2)


async def test_sse_carries_a_refusal_to_the_browser_and_back() -> None:
    guard = Guard(FakeProvider([FakeReply.refused(NO)]), model="m")
    async with guard.stream(user="q") as events:
        body = b"".join([frame async for frame in sse(events)])
    assert b'data: {"type":"refusal","text":"I ca"}\n\n' in body
    read = list(parse_sse(body))
    assert "".join(e.text for e in read if isinstance(e, RefusalDelta)) == NO

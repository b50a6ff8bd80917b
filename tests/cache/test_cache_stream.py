"""Streams and the cache: a completed stream is stored and replayed chunked like the
original; a cut, errored or abandoned stream is never stored."""

from __future__ import annotations

import itertools

import anyio
import pytest
from trio.testing import MockClock

import llmguard
from llmguard import (
    AnyioClock,
    Cache,
    Finish,
    Guard,
    Observe,
    ProviderError,
    StreamEvent,
    TextDelta,
    Usage,
    UsageUpdate,
    sse,
)
from llmguard.testing import FakeProvider, FakeReply, capture_records

pytestmark = pytest.mark.anyio

MOCK_TRIO = [("trio", {"clock": MockClock(autojump_threshold=0)})]
USAGE = Usage(input_tokens=12, output_tokens=7)


def text_of(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


async def collect(
    guard: Guard, question: str = "tell me"
) -> tuple[list[StreamEvent], llmguard.Response]:
    async with guard.stream(user=question) as events:
        received = [e async for e in events]
    return received, events.response


async def test_a_stream_hit_replays_the_original_events_at_zero_cost() -> None:
    fake = FakeProvider(
        [FakeReply.of_text("The quick brown fox jumps.", usage=USAGE)], chunk_size=5
    )
    guard = Guard(fake, [Observe(), Cache()], model="m")
    with capture_records() as records:
        original, first = await collect(guard)
        replayed, again = await collect(guard)
    assert len(fake.requests) == 1
    assert replayed == original  # chunked like the original, usage and finish included
    assert [type(e) for e in replayed][-2:] == [UsageUpdate, Finish]
    assert text_of(replayed) == "The quick brown fox jumps."
    assert len([e for e in replayed if isinstance(e, TextDelta)]) == 6
    assert again.text == first.text and again.usage == USAGE
    assert (first.cached, again.cached, again.cost_micros) == (False, True, 0)
    miss, hit = records
    assert (miss.cache, hit.cache, hit.stream, hit.attempts, hit.cost_micros) == (
        "miss",
        "hit",
        True,
        0,
        0,
    )
    assert hit.usage.total_tokens == 0


async def test_a_replay_encodes_to_the_same_sse_bytes_including_done() -> None:
    fake = FakeProvider([FakeReply.of_text("Hello there, world", usage=USAGE)], chunk_size=4)
    guard = Guard(fake, [Cache()], model="m")

    async def wire() -> bytes:
        chunks = []
        async with guard.stream(user="hi") as events:
            async for chunk in sse(events, heartbeat=None):
                chunks.append(chunk)
        return b"".join(chunks)

    original = await wire()
    assert original.endswith(b"data: [DONE]\n\n")
    assert await wire() == original
    assert len(fake.requests) == 1


async def test_streams_and_complete_calls_share_entries() -> None:
    fake = FakeProvider(["streamed answer", "one piece"], chunk_size=3)
    guard = Guard(fake, [Cache()], model="m")
    _original, _ = await collect(guard, "a")
    response = await guard.complete(user="a")
    assert response.cached and response.text == "streamed answer"
    assert (await guard.complete(user="b")).text == "one piece"
    replayed, again = await collect(guard, "b")
    assert again.cached and text_of(replayed) == "one piece"
    assert [type(e) for e in replayed] == [TextDelta, UsageUpdate, Finish]  # one piece, as it came
    assert len(fake.requests) == 2


async def test_a_cut_stream_is_never_stored() -> None:
    fake = FakeProvider(
        [FakeReply.cut("partial answer here", after=2)], default="whole", chunk_size=4
    )
    guard = Guard(fake, [Cache()], model="m")
    with pytest.raises(ProviderError):
        await collect(guard)
    received, response = await collect(guard)
    assert text_of(received) == "whole" and not response.cached
    assert len(fake.requests) == 2


async def test_an_abandoned_stream_is_never_stored() -> None:
    fake = FakeProvider(default="a b c d e f g h", chunk_size=2)
    guard = Guard(fake, [Cache()], model="m")
    async with guard.stream(user="q") as events:
        async for _ in events:
            break
    _, response = await collect(guard, "q")
    assert not response.cached
    _, response = await collect(guard, "q")
    assert response.cached
    assert len(fake.requests) == 2


async def test_a_consumer_error_after_the_end_still_stores_the_stream() -> None:
    fake = FakeProvider(default="whole answer", chunk_size=4)
    guard = Guard(fake, [Cache()], model="m")
    with pytest.raises(ValueError, match="consumer bug"):
        async with guard.stream(user="q") as events:
            async for _ in events:
                pass
            raise ValueError("consumer bug")
    _, response = await collect(guard, "q")
    assert response.cached
    assert len(fake.requests) == 1


async def test_a_truncated_stream_is_not_stored() -> None:
    fake = FakeProvider(
        [FakeReply.of_text("cut sh", finish_reason="length")], default="whole", chunk_size=4
    )
    guard = Guard(fake, [Cache()], model="m")
    await collect(guard)
    received, response = await collect(guard)
    assert not response.cached and text_of(received) == "whole"


async def test_concurrent_streams_make_one_call_and_replay_it() -> None:
    fake = FakeProvider(default="shared streamed answer", chunk_size=5, chunk_delay=0.001)
    guard = Guard(fake, [Cache()], model="m")
    results: list[list[StreamEvent]] = []

    async def one() -> None:
        received, _ = await collect(guard)
        results.append(received)

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(one)
    assert len(fake.requests) == 1
    assert len(results) == 20
    assert all(r == results[0] for r in results)
    assert text_of(results[0]) == "shared streamed answer"


async def test_a_stream_error_is_shared_with_waiting_streams() -> None:
    fake = FakeProvider([FakeReply.cut("abcdefgh", after=1)], chunk_size=2, chunk_delay=0.001)
    guard = Guard(fake, [Cache()], model="m")
    errors: list[BaseException] = []

    async def one() -> None:
        try:
            await collect(guard)
        except ProviderError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(one)
    assert len(errors) == 5
    assert len(fake.requests) == 1


@pytest.mark.parametrize("anyio_backend", MOCK_TRIO)
async def test_a_replay_can_be_paced() -> None:
    fake = FakeProvider(default="one two three", chunk_size=4)
    guard = Guard(fake, [Cache(replay_delay=0.05, clock=AnyioClock())], model="m")
    await collect(guard)
    stamps: list[float] = []
    async with guard.stream(user="tell me") as events:
        async for _ in events:
            stamps.append(anyio.current_time())
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(stamps)]
    assert gaps == [0.05] * (len(stamps) - 1)


async def test_a_stream_of_tool_calls_is_replayed_too() -> None:
    fake = FakeProvider([FakeReply.tool_call("lookup", {"city": "Paris"})], chunk_size=5)
    guard = Guard(fake, [Cache(serializer="msgpack")], model="m")
    original, first = await collect(guard)
    replayed, again = await collect(guard)
    assert replayed == original and again.cached
    assert again.tool_calls == first.tool_calls and again.tool_calls[0].name == "lookup"
    assert len(fake.requests) == 1

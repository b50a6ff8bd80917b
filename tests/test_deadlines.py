from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from trio.testing import MockClock

from llmguard import (
    AnyioClock,
    ConfigurationError,
    DeadlineExceeded,
    Deadlines,
    Guard,
    Observe,
    Request,
    Response,
    StreamTimeout,
    StreamTimeouts,
    TextDelta,
)
from llmguard.testing import FakeProvider, FakeReply, capture_records

MOCK_TRIO = [("trio", {"clock": MockClock(autojump_threshold=0)})]


def guarded(fake: FakeProvider, **timeouts: float) -> Guard:
    layer = Deadlines(StreamTimeouts(**timeouts))
    return Guard(fake, [Observe(), layer], model="m", timeout=None, clock=AnyioClock())


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK_TRIO)
async def test_first_token_deadline_fires_and_closes_the_upstream() -> None:
    fake = FakeProvider(["hello"], first_token_delay=30)
    guard = guarded(fake, first_token=5, idle=60)
    start = anyio.current_time()
    with capture_records() as records, pytest.raises(StreamTimeout) as info:
        async with guard.stream(user="hi") as events:
            try:
                async for _ in events:
                    pytest.fail("no event comes before the deadline")  # pragma: no cover
            finally:
                assert fake.streams[-1].closed  # closed when it fired, not at leaving
    assert info.value.deadline == "first_token"
    assert info.value.seconds == 5
    assert info.value.elapsed == pytest.approx(5)
    assert info.value.events == 0
    assert anyio.current_time() - start == pytest.approx(5)
    assert "first_token deadline of 5 s fired after 5 s" in str(info.value)
    assert isinstance(info.value, DeadlineExceeded)
    assert records[0].error == "StreamTimeout"


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK_TRIO)
async def test_idle_deadline_fires_between_events_and_charges_what_arrived() -> None:
    fake = FakeProvider([FakeReply(text="abcdefgh", chunk_delay=20)], chunk_size=2)
    guard = guarded(fake, idle=5)
    got: list[str] = []
    with capture_records() as records, pytest.raises(StreamTimeout) as info:
        async with guard.stream(user="hi") as events:
            async for event in events:
                assert isinstance(event, TextDelta)
                got.append(event.text)
    assert got == ["ab"]
    assert info.value.deadline == "idle"
    assert info.value.events == 1
    log = fake.streams[-1]
    assert log.closed and not log.completed and log.events_sent == 1
    assert records[0].usage.output_tokens > 0 and records[0].usage.estimated


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK_TRIO)
async def test_total_deadline_fires_on_a_long_stream() -> None:
    fake = FakeProvider(["x" * 100], chunk_size=1, chunk_delay=1)
    guard = guarded(fake, total=10, idle=5)
    count = 0
    with pytest.raises(StreamTimeout) as info:
        async with guard.stream(user="hi") as events:
            async for _ in events:
                count += 1
    assert info.value.deadline == "total"
    assert info.value.elapsed == pytest.approx(10)
    assert 9 <= count <= 11
    assert fake.streams[-1].closed


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK_TRIO)
async def test_total_deadline_that_passed_in_the_consumer_fires_on_the_next_read() -> None:
    fake = FakeProvider(["abcdef"], chunk_size=1)
    guard = guarded(fake, total=10)
    with pytest.raises(StreamTimeout) as info:
        async with guard.stream(user="hi") as events:
            async for _ in events:
                await anyio.sleep(11)  # the consumer's own slow work
    assert info.value.deadline == "total"
    assert fake.streams[-1].events_sent == 1


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK_TRIO)
async def test_a_slow_but_steady_stream_is_never_killed_by_the_idle_deadline() -> None:
    fake = FakeProvider(["y" * 60], chunk_size=1, chunk_delay=4.9, first_token_delay=9)
    guard = guarded(fake, first_token=10, idle=5)
    start = anyio.current_time()
    async with guard.stream(user="hi") as events:
        text = "".join([e.text async for e in events if isinstance(e, TextDelta)])
    assert text == "y" * 60
    assert anyio.current_time() - start > 250  # far longer than any one deadline
    assert fake.streams[-1].completed


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK_TRIO)
async def test_the_idle_deadline_does_not_count_the_consumers_own_time() -> None:
    fake = FakeProvider(["abc"], chunk_size=1)
    guard = guarded(fake, idle=5)
    async with guard.stream(user="hi") as events:
        async for _ in events:
            await anyio.sleep(30)
    assert fake.streams[-1].completed


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK_TRIO)
async def test_opening_is_under_the_first_token_deadline() -> None:
    closed = anyio.Event()

    class HangingOpen:
        name = "hanging"

        async def complete(self, request: Request) -> Response:  # pragma: no cover
            raise NotImplementedError

        @asynccontextmanager
        async def stream(self, request: Request) -> AsyncIterator[AsyncIterator[TextDelta]]:
            try:
                await anyio.sleep_forever()
            finally:
                closed.set()
            yield  # type: ignore[misc]  # pragma: no cover

    provider = HangingOpen()
    guard = Guard(provider, [Deadlines(StreamTimeouts(first_token=3))], model="m", timeout=None)
    with pytest.raises(StreamTimeout) as info:
        async with guard.stream(user="hi"):
            pytest.fail("never opened")  # pragma: no cover
    assert info.value.deadline == "first_token"
    assert closed.is_set()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK_TRIO)
async def test_non_streaming_calls_get_the_total_deadline_only() -> None:
    fake = FakeProvider(["slow", "fast"], latency=20)
    guard = guarded(fake, total=5, first_token=1, idle=1)
    with pytest.raises(DeadlineExceeded) as info:
        await guard.complete(user="hi")
    assert info.value.deadline == "total" and not isinstance(info.value, StreamTimeout)
    fast = Guard(FakeProvider(["ok"], latency=3), [Deadlines(StreamTimeouts(total=5))], model="m")
    assert (await fast.complete(user="hi")).text == "ok"


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK_TRIO)
async def test_layer_decorates_a_handler_and_an_async_iterator() -> None:
    deadlines = Deadlines(StreamTimeouts(total=5, first_token=2, idle=1))

    @deadlines
    async def ask(request: Request) -> Response:
        await anyio.sleep(10)
        return Response(text="late")  # pragma: no cover

    with pytest.raises(DeadlineExceeded):
        await ask(Request.create(model="m", user="hi"))

    finished = []

    @deadlines.iterator
    async def ticks(n: int, gap: float) -> AsyncIterator[int]:
        try:
            for i in range(n):
                await anyio.sleep(gap)
                yield i
        finally:
            finished.append(True)

    assert [i async for i in ticks(3, 0.5)] == [0, 1, 2]
    got = []
    with pytest.raises(StreamTimeout) as info:
        async for i in ticks(5, 1.5):
            got.append(i)
    assert info.value.deadline == "idle" and got == [0]
    assert finished == [True, True]  # the generator was closed when the deadline fired


def test_timeouts_are_checked_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="at least one"):
        StreamTimeouts()
    with pytest.raises(ConfigurationError, match="idle"):
        StreamTimeouts(idle=0)
    with pytest.raises(ConfigurationError, match="StreamTimeouts"):
        Deadlines(5)  # type: ignore[arg-type]
    layer = Deadlines(StreamTimeouts(total=30, first_token=5, idle=10))
    assert repr(layer) == "Deadlines(total=30, first_token=5, idle=10)"
    assert layer.timeouts.idle == 10


# On asyncio each read runs in a scope without a deadline and one timer per stream
# cancels a read that overran. asyncio has no fake clock: these run on real, short
# deadlines and assert which deadline fired, never how long anything took.

ASYNCIO = ["asyncio"]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ASYNCIO)
async def test_asyncio_first_token_deadline_fires_through_the_stream_timer() -> None:
    fake = FakeProvider(["hello"], first_token_delay=3600)
    guard = guarded(fake, first_token=0.05)
    with pytest.raises(StreamTimeout) as info:
        async with guard.stream(user="hi") as events:
            async for _ in events:
                pytest.fail("no event comes before the deadline")  # pragma: no cover
    assert info.value.deadline == "first_token"
    assert fake.streams[-1].closed and not fake.streams[-1].completed


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ASYNCIO)
async def test_asyncio_idle_deadline_fires_after_the_timer_was_armed_for_an_earlier_read() -> None:
    # The first reads return at once; the timer armed for the first read fires while a
    # later read waits, re-arms for that read's deadline, then cancels it.
    fake = FakeProvider([FakeReply(text="abcd", chunk_delay=3600)], chunk_size=2)
    guard = guarded(fake, idle=0.05)
    got: list[str] = []
    with pytest.raises(StreamTimeout) as info:
        async with guard.stream(user="hi") as events:
            async for event in events:
                assert isinstance(event, TextDelta)
                got.append(event.text)
    assert info.value.deadline == "idle"
    assert got == ["ab"]
    assert fake.streams[-1].closed


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ASYNCIO)
async def test_asyncio_consumer_time_is_not_counted_and_the_timer_lets_the_stream_go() -> None:
    fake = FakeProvider(["abc"], chunk_size=1)
    guard = guarded(fake, idle=0.05, total=3600)
    async with guard.stream(user="hi") as events:
        timed = events._events  # the Deadlines layer's reader
        async for _ in events:
            assert timed._timer is not None  # armed by the read
            await anyio.sleep(0.15)  # the consumer's own work, 3 idle periods
    assert fake.streams[-1].completed
    # no timer is left holding the stream until its deadline
    assert timed._timer is None


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ASYNCIO)
async def test_asyncio_decorated_iterator_gets_the_idle_deadline() -> None:
    layer = Deadlines(StreamTimeouts(idle=0.05))

    @layer.iterator
    async def ticks() -> AsyncIterator[int]:
        yield 1
        await anyio.sleep(3600)
        yield 2  # pragma: no cover

    seen: list[int] = []
    with pytest.raises(StreamTimeout) as info:
        async for tick in ticks():
            seen.append(tick)
    assert seen == [1] and info.value.deadline == "idle"

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from trio.testing import MockClock

import llmguard
from llmguard import (
    BaseLayer,
    DeadlineExceeded,
    EventStream,
    Guard,
    Observe,
    Request,
    StreamHandler,
    StreamOpener,
    TextDelta,
)
from llmguard.testing import FakeProvider, FakeReply, capture_records

MOCK_TRIO = [("trio", {"clock": MockClock(autojump_threshold=0)})]


def text_of(events: list[llmguard.StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


@pytest.mark.anyio
async def test_stream_closes_upstream_on_normal_end() -> None:
    fake = FakeProvider(["Hello, streaming world"], chunk_size=5)
    guard = Guard(fake, [Observe()], model="m")
    with capture_records() as records:
        async with guard.stream(user="hi") as events:
            received = [e async for e in events]
    assert text_of(received) == "Hello, streaming world"
    assert events.response.text == "Hello, streaming world"
    assert events.response.finish_reason == "stop"
    log = fake.streams[-1]
    assert log.closed and log.completed
    (record,) = records
    assert record.stream is True
    assert record.usage.output_tokens == 6
    assert record.usage.estimated is False
    assert record.finish_reason == "stop"


@pytest.mark.anyio
async def test_stream_closes_upstream_when_the_consumer_raises() -> None:
    fake = FakeProvider(["one two three four"], chunk_size=3)
    guard = Guard(fake, [Observe()], model="m")
    with capture_records() as records, pytest.raises(ValueError, match="consumer bug"):
        async with guard.stream(user="hi") as events:
            async for _ in events:
                raise ValueError("consumer bug")
    log = fake.streams[-1]
    assert log.closed and not log.completed
    assert log.events_sent == 1
    assert records[0].error == "ValueError"
    assert records[0].usage.estimated is True  # a cut stream is charged an estimate
    assert records[0].usage.output_tokens >= 1


@pytest.mark.anyio
async def test_stream_closes_upstream_when_the_consumer_is_cancelled() -> None:
    clock = llmguard.testing.ManualClock(autojump=True)
    fake = FakeProvider(["a b c d e f g h"], chunk_size=1, chunk_delay=1, sleep=clock.sleep)
    guard = Guard(fake, [Observe()], model="m")
    got: list[llmguard.StreamEvent] = []
    with capture_records() as records:
        async with anyio.create_task_group() as tg:

            async def consume() -> None:
                async with guard.stream(user="hi") as events:
                    async for event in events:
                        got.append(event)
                        if len(got) == 2:
                            tg.cancel_scope.cancel()

            tg.start_soon(consume)
    assert len(got) == 2
    log = fake.streams[-1]
    assert log.closed and not log.completed
    assert records[0].error is not None
    assert records[0].usage.output_tokens > 0


@pytest.mark.anyio
async def test_leaving_early_closes_upstream() -> None:
    fake = FakeProvider(["abcdefghij"], chunk_size=2)
    guard = Guard(fake, model="m")
    async with guard.stream(user="hi") as events:
        async for _ in events:
            break
    assert fake.streams[-1].closed
    assert fake.streams[-1].events_sent == 1


@pytest.mark.anyio
async def test_bare_iteration_is_best_effort_but_closes_at_the_end() -> None:
    fake = FakeProvider(["abcdef"], chunk_size=2)
    guard = Guard(fake, model="m")
    received = [e async for e in guard.stream(user="hi")]
    assert text_of(received) == "abcdef"
    assert fake.streams[-1].closed


@pytest.mark.anyio
async def test_a_refusal_on_enter_sends_nothing() -> None:
    fake = FakeProvider([FakeReply.rate_limited(retry_after=3)])
    guard = Guard(fake, [Observe()], model="m")
    with capture_records() as records, pytest.raises(llmguard.RateLimited) as info:
        async with guard.stream(user="hi"):
            pytest.fail("the body must not run")  # pragma: no cover
    assert info.value.retry_after == 3
    assert fake.streams[-1].events_sent == 0
    assert records[0].error == "RateLimited"


@pytest.mark.anyio
async def test_a_layer_can_refuse_a_stream_before_the_provider_is_called() -> None:
    class Refuse(BaseLayer):
        def stream(self, request: Request, call_next: StreamHandler) -> StreamOpener:
            @asynccontextmanager
            async def refused() -> AsyncIterator[EventStream]:
                raise llmguard.BudgetExceeded(
                    scope="user:u", limit=1, used=1, remaining=0, unit="tokens", reset_at=None
                )
                yield  # pragma: no cover

            return refused()

    fake = FakeProvider(["never"])
    guard = Guard(fake, [Refuse()], model="m")
    with pytest.raises(llmguard.BudgetExceeded):
        async with guard.stream(user="hi"):
            pass  # pragma: no cover
    assert fake.streams == []


@pytest.mark.anyio
async def test_a_cut_stream_raises_and_is_charged_for_what_it_sent() -> None:
    fake = FakeProvider([FakeReply.cut("hello world, how are you", after=3)], chunk_size=4)
    guard = Guard(fake, [Observe()], model="m")
    got: list[llmguard.StreamEvent] = []
    with capture_records() as records, pytest.raises(llmguard.ProviderError):
        async with guard.stream(user="hi") as events:
            async for event in events:
                got.append(event)
    assert text_of(got) == "hello world,"
    assert events.response.usage.estimated is True  # the response agrees with the record
    assert events.response.usage.output_tokens == 3
    assert records[0].usage.output_tokens == 3
    assert records[0].usage.estimated is True
    assert fake.streams[-1].closed


@pytest.mark.parametrize("anyio_backend", MOCK_TRIO)
@pytest.mark.anyio
async def test_total_deadline_fires_while_waiting_for_the_first_event() -> None:
    fake = FakeProvider(["late"], first_token_delay=60)
    guard = Guard(fake, [Observe()], model="m", timeout=5)
    with capture_records() as records, pytest.raises(DeadlineExceeded) as info:
        async with guard.stream(user="hi") as events:
            async for _ in events:
                pass  # pragma: no cover
    assert info.value.deadline == "total"
    assert fake.streams[-1].closed
    assert records[0].error == "DeadlineExceeded"


@pytest.mark.parametrize("anyio_backend", MOCK_TRIO)
@pytest.mark.anyio
async def test_total_deadline_spans_the_whole_stream() -> None:
    fake = FakeProvider(["abcdefghij"], chunk_size=1, chunk_delay=1)
    guard = Guard(fake, model="m", timeout=4.5)
    got: list[llmguard.StreamEvent] = []
    with pytest.raises(DeadlineExceeded):
        async with guard.stream(user="hi") as events:
            async for event in events:
                got.append(event)
    assert len(got) == 5  # events at t=0,1,2,3,4; the next would come at 5
    assert fake.streams[-1].closed


@pytest.mark.anyio
async def test_time_to_first_token_is_recorded() -> None:
    clock = llmguard.testing.ManualClock(autojump=True)
    fake = FakeProvider(
        ["abcd"], chunk_size=2, first_token_delay=2, chunk_delay=1, sleep=clock.sleep
    )
    guard = Guard(fake, [Observe()], model="m", clock=clock)
    with capture_records() as records:
        async with guard.stream(user="hi") as events:
            async for _ in events:
                pass
    assert records[0].time_to_first_token_s == pytest.approx(2)
    assert records[0].latency_s == pytest.approx(5)  # 2 + 1 s for each of 3 later events


@pytest.mark.anyio
async def test_a_stream_can_be_entered_only_once() -> None:
    guard = Guard(FakeProvider(["a", "b"]), model="m")
    opened = guard.stream(user="hi")
    async with opened as events:
        async for _ in events:
            pass
    with pytest.raises(RuntimeError, match="only once"):
        async with opened:
            pass  # pragma: no cover
    assert opened.request.last_user_text == "hi"


@pytest.mark.anyio
async def test_tool_call_deltas_assemble_into_tool_calls() -> None:
    fake = FakeProvider(
        [
            FakeReply.tool_calls_of(
                llmguard.ToolCall(id="c1", name="lookup", arguments='{"q": "x"}'),
                llmguard.ToolCall(id="c2", name="other", arguments="{}"),
            )
        ],
        chunk_size=3,
    )
    guard = Guard(fake, model="m")
    async with guard.stream(user="hi") as events:
        async for _ in events:
            pass
    response = events.response
    assert [c.name for c in response.tool_calls] == ["lookup", "other"]
    assert response.tool_calls[0].arguments == '{"q": "x"}'
    assert response.finish_reason == "tool_calls"


@pytest.mark.parametrize("anyio_backend", MOCK_TRIO)
@pytest.mark.anyio
async def test_total_deadline_covers_the_whole_block() -> None:
    fake = FakeProvider(["abcdef"], chunk_size=2)
    guard = Guard(fake, [Observe()], model="m", timeout=5)
    with capture_records() as records, pytest.raises(DeadlineExceeded):
        async with guard.stream(user="hi") as events:
            async for _ in events:
                await anyio.sleep(10)  # the consumer's own slow work
    assert fake.streams[-1].closed
    assert records[0].error == "DeadlineExceeded"


@pytest.mark.parametrize("anyio_backend", MOCK_TRIO)
@pytest.mark.anyio
async def test_bare_iteration_checks_the_deadline_on_each_read() -> None:
    fake = FakeProvider(["abcdefghij"], chunk_size=1, chunk_delay=1)
    guard = Guard(fake, model="m", timeout=3.5)
    got: list[llmguard.StreamEvent] = []
    with pytest.raises(DeadlineExceeded):
        async for event in guard.stream(user="hi"):
            got.append(event)
    assert len(got) == 4


@pytest.mark.parametrize("anyio_backend", MOCK_TRIO)
@pytest.mark.anyio
async def test_an_outside_cancellation_is_not_a_deadline() -> None:
    fake = FakeProvider(["abcdef"], chunk_size=1, first_token_delay=1000)
    guard = Guard(fake, model="m", timeout=5000)
    with anyio.move_on_after(0.01) as outer:
        async with guard.stream(user="hi") as events:
            async for _ in events:
                pass  # pragma: no cover
    assert outer.cancelled_caught
    assert fake.streams[-1].closed

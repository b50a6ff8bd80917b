"""Every feature of ``llmguard.testing.FakeProvider``, used directly and through a Guard."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import anyio
import pytest
from trio.testing import MockClock

import llmguard
from llmguard import (
    Finish,
    Guard,
    LLMGuardError,
    MalformedResponse,
    Message,
    Observe,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    RefusalDelta,
    Request,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageUpdate,
)
from llmguard.testing import (
    FakeProvider,
    FakeReply,
    FakeRule,
    FakeScriptExhausted,
    FakeStream,
    FakeStreamLog,
    ManualClock,
    capture_records,
)

MOCK_TRIO = [("trio", {"clock": MockClock(autojump_threshold=0)})]


def ask(user: str = "hi", *, model: str = "m") -> Request:
    return Request.create(model=model, user=user)


class RecordingSleep:
    """A fake ``sleep`` that returns at once and remembers every delay it was asked for."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await anyio.lowlevel.checkpoint()


async def drain(fake: FakeProvider, request: Request) -> list[StreamEvent]:
    async with fake.stream(request) as events:
        return [event async for event in events]


async def consume(
    opener: AbstractAsyncContextManager[AsyncIterator[StreamEvent]], into: list[StreamEvent]
) -> None:
    """Enter a stream and collect its events into ``into`` (kept when it raises)."""
    async with opener as events:
        async for event in events:
            into.append(event)


def ceil4(text: str) -> int:
    return math.ceil(len(text) / 4)


# Construction ------------------------------------------------------------------------


def test_defaults_and_repr() -> None:
    fake = FakeProvider(["a", "b"])
    assert fake.name == "fake"
    assert fake.model == "fake-model"
    assert fake.chunk_size == 4
    assert fake.pending == 2
    assert fake.requests == []
    assert fake.streams == []
    assert repr(fake) == "FakeProvider(name='fake', pending=2)"
    assert isinstance(fake, llmguard.Provider)
    assert FakeProvider(name="other").name == "other"


@pytest.mark.parametrize("size", [0, -1])
def test_chunk_size_must_be_positive(size: int) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        FakeProvider(chunk_size=size)


# The script --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_queue_answers_in_order_str_shorthand_and_fake_reply() -> None:
    fake = FakeProvider(["first", FakeReply.of_text("second"), FakeReply(text="third")])
    texts = [(await fake.complete(ask())).text for _ in range(3)]
    assert texts == ["first", "second", "third"]
    assert fake.pending == 0


@pytest.mark.anyio
async def test_add_appends_to_the_script_and_chains() -> None:
    fake = FakeProvider(["one"])
    assert fake.add("two", FakeReply.of_text("three")) is fake
    fake.add("four")
    assert fake.pending == 4
    texts = [(await fake.complete(ask())).text for _ in range(4)]
    assert texts == ["one", "two", "three", "four"]


@pytest.mark.anyio
async def test_guard_answers_from_the_script() -> None:
    fake = FakeProvider(["Hello!", "Again!"])
    guard = Guard(fake, model="gpt-test")
    first = await guard.complete(user="hi")
    second = await guard.complete(user="hi again")
    assert (first.text, second.text) == ("Hello!", "Again!")
    assert first.provider == "fake"
    assert first.model == "gpt-test"
    assert first.finish_reason == "stop"
    assert (first.id, second.id) == ("fake-1", "fake-2")


@pytest.mark.anyio
async def test_script_exhausted_raises_and_says_so() -> None:
    fake = FakeProvider(["only"])
    await fake.complete(ask())
    with pytest.raises(FakeScriptExhausted, match="script is used up") as info:
        await fake.complete(ask())
    assert "request #2" in str(info.value)
    assert "default=" in str(info.value)
    # It fails a test like an assertion and is still an llmguard error.
    assert isinstance(info.value, AssertionError)
    assert isinstance(info.value, LLMGuardError)
    assert len(fake.requests) == 2  # the request that found nothing is logged too


@pytest.mark.anyio
async def test_empty_provider_is_exhausted_at_once_through_a_guard() -> None:
    guard = Guard(FakeProvider(), model="m")
    with pytest.raises(FakeScriptExhausted, match=r"request #1 but its script is used up"):
        await guard.complete(user="hi")


@pytest.mark.anyio
async def test_stream_on_an_exhausted_script_raises_when_opened() -> None:
    fake = FakeProvider()
    with pytest.raises(FakeScriptExhausted):
        async with fake.stream(ask()):
            raise AssertionError("never entered")
    assert fake.streams == []


@pytest.mark.anyio
async def test_default_answers_when_the_queue_is_used_up() -> None:
    fake = FakeProvider(["scripted"], default="fallback")
    texts = [(await fake.complete(ask())).text for _ in range(3)]
    assert texts == ["scripted", "fallback", "fallback"]


@pytest.mark.anyio
async def test_default_may_be_a_fake_reply_error() -> None:
    fake = FakeProvider(default=FakeReply.server_error(503))
    for _ in range(2):
        with pytest.raises(ProviderError) as info:
            await fake.complete(ask())
        assert info.value.status_code == 503


# Rules -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_when_predicate_persistent_reply_answers_every_match() -> None:
    fake = FakeProvider(["queued"])
    rule = fake.when(lambda request: request.model == "special")
    assert isinstance(rule, FakeRule)
    assert rule.reply("special answer") is rule
    for _ in range(3):
        assert (await fake.complete(ask(model="special"))).text == "special answer"
    assert fake.pending == 1
    assert (await fake.complete(ask(model="plain"))).text == "queued"


@pytest.mark.anyio
async def test_when_reply_times_then_falls_through_to_the_queue() -> None:
    fake = FakeProvider(["from the queue"])
    fake.when(lambda request: True).reply("from the rule", times=2)
    texts = [(await fake.complete(ask())).text for _ in range(3)]
    assert texts == ["from the rule", "from the rule", "from the queue"]


@pytest.mark.anyio
async def test_when_reply_times_then_persistent() -> None:
    fake = FakeProvider()
    fake.when("x").reply("once", times=1).reply(FakeReply.of_text("always"))
    texts = [(await fake.complete(ask("x"))).text for _ in range(3)]
    assert texts == ["once", "always", "always"]


@pytest.mark.anyio
async def test_when_substring_matches_the_last_user_text() -> None:
    fake = FakeProvider(default="I don't know.")
    fake.when("weather").reply("Sunny.")
    guard = Guard(fake, model="m")
    assert (await guard.complete(user="What's the weather in Paris?")).text == "Sunny."
    assert (await guard.complete(user="What's the time?")).text == "I don't know."
    # Only the *last user* message counts, not earlier ones or the system prompt.
    history = [Message.user("weather?"), Message.assistant("Sunny."), Message.user("thanks")]
    assert (await guard.complete(system="weather bot", messages=history)).text == "I don't know."


@pytest.mark.anyio
async def test_rules_are_checked_before_the_queue_in_the_order_added() -> None:
    fake = FakeProvider(["queued 1", "queued 2"])
    fake.when("a").reply("rule a")
    fake.when(lambda request: "b" in request.last_user_text).reply("rule ab or b")
    assert (await fake.complete(ask("a b"))).text == "rule a"  # the first rule wins
    assert (await fake.complete(ask("b"))).text == "rule ab or b"
    assert fake.pending == 2
    assert (await fake.complete(ask("c"))).text == "queued 1"
    assert fake.pending == 1


@pytest.mark.anyio
async def test_a_used_up_rule_is_skipped_for_the_next_one() -> None:
    fake = FakeProvider(default="default")
    fake.when("x").reply("first rule", times=1)
    fake.when("x").reply("second rule", times=1)
    texts = [(await fake.complete(ask("x"))).text for _ in range(3)]
    assert texts == ["first rule", "second rule", "default"]


# Reply kinds -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_of_text_with_finish_reason() -> None:
    fake = FakeProvider([FakeReply.of_text("cut short", finish_reason="length")])
    response = await fake.complete(ask())
    assert response.text == "cut short"
    assert response.finish_reason == "length"


@pytest.mark.anyio
async def test_tool_call_with_mapping_arguments() -> None:
    fake = FakeProvider([FakeReply.tool_call("get_weather", {"city": "Paris"})])
    response = await Guard(fake, model="m").complete(user="weather?")
    assert response.text == ""
    assert response.finish_reason == "tool_calls"
    (call,) = response.tool_calls
    assert call == ToolCall(
        id="call_get_weather", name="get_weather", arguments='{"city": "Paris"}'
    )
    assert json.loads(call.arguments) == {"city": "Paris"}


@pytest.mark.anyio
async def test_tool_call_with_raw_arguments_and_id() -> None:
    fake = FakeProvider([FakeReply.tool_call("f", '{"broken', id="c-7"), FakeReply.tool_call("g")])
    first = await fake.complete(ask())
    second = await fake.complete(ask())
    assert first.tool_calls == (ToolCall(id="c-7", name="f", arguments='{"broken'),)
    assert second.tool_calls == (ToolCall(id="call_g", name="g", arguments="{}"),)


@pytest.mark.anyio
async def test_tool_calls_of_makes_parallel_calls() -> None:
    calls = (
        ToolCall(id="c1", name="lookup", arguments='{"q": "a"}'),
        ToolCall(id="c2", name="lookup", arguments='{"q": "b"}'),
    )
    fake = FakeProvider([FakeReply.tool_calls_of(*calls)])
    response = await fake.complete(ask())
    assert response.tool_calls == calls
    assert response.finish_reason == "tool_calls"


@pytest.mark.anyio
async def test_json_reply_is_the_value_serialised() -> None:
    value = {"name": "Ada", "tags": ["x", "y"], "age": 36, "ok": True, "none": None}
    response = await FakeProvider([FakeReply.json(value)]).complete(ask())
    assert response.text == json.dumps(value)
    assert json.loads(response.text) == value


@pytest.mark.anyio
async def test_refused_sets_response_refusal() -> None:
    fake = FakeProvider([FakeReply.refused("I can't help with that.")])
    response = await Guard(fake, model="m").complete(user="something bad")
    assert response.refusal == "I can't help with that."
    assert response.text == ""
    assert response.finish_reason == "stop"


@pytest.mark.anyio
async def test_reply_model_overrides_and_provider_model_fills_an_empty_one() -> None:
    fake = FakeProvider([FakeReply(text="a", model="scripted-model"), "b"], model="fallback")
    assert (await fake.complete(ask(model="asked"))).model == "scripted-model"
    assert (await fake.complete(ask(model=""))).model == "fallback"


# Errors ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_rate_limited_with_retry_after() -> None:
    fake = FakeProvider([FakeReply.rate_limited(retry_after=2.5), FakeReply.rate_limited()])
    guard = Guard(fake, model="m")
    with pytest.raises(RateLimited) as info:
        await guard.complete(user="hi")
    assert info.value.retry_after == 2.5
    assert info.value.retryable is True
    assert info.value.status_code == 429
    assert info.value.provider == "fake"
    with pytest.raises(RateLimited) as again:
        await guard.complete(user="hi")
    assert again.value.retry_after is None


@pytest.mark.anyio
async def test_server_error_5xx_is_retryable() -> None:
    fake = FakeProvider([FakeReply.server_error(500), FakeReply.server_error()])
    for _ in range(2):
        with pytest.raises(ProviderError, match="500") as info:
            await fake.complete(ask())
        assert type(info.value) is ProviderError
        assert info.value.status_code == 500
        assert info.value.retryable is True


@pytest.mark.anyio
async def test_server_error_400_is_not_retryable() -> None:
    fake = FakeProvider([FakeReply.server_error(400)])
    with pytest.raises(ProviderError) as info:
        await fake.complete(ask())
    assert info.value.status_code == 400
    assert info.value.retryable is False


@pytest.mark.anyio
async def test_timeout_raises_provider_timeout() -> None:
    fake = FakeProvider([FakeReply.timeout()])
    with pytest.raises(ProviderTimeout) as info:
        await Guard(fake, model="m").complete(user="hi")
    assert info.value.retryable is True
    assert info.value.provider == "fake"


@pytest.mark.anyio
async def test_malformed_raises_malformed_response() -> None:
    fake = FakeProvider([FakeReply.malformed()])
    with pytest.raises(MalformedResponse, match="malformed") as info:
        await fake.complete(ask())
    assert info.value.retryable is False


@pytest.mark.anyio
async def test_an_error_reply_is_recorded_by_observe() -> None:
    fake = FakeProvider([FakeReply.rate_limited(retry_after=1)])
    guard = Guard(fake, [Observe()], model="m")
    with capture_records() as records, pytest.raises(RateLimited):
        await guard.complete(user="hi")
    (record,) = records
    assert record.error == "RateLimited"
    assert record.attempts == 1


# Usage -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_usage_follows_the_documented_formula() -> None:
    system = "You are terse."
    user = "What is the weather in Paris?"
    answer = "It is sunny, 21 degrees."
    fake = FakeProvider([answer])
    response = await Guard(fake, model="m").complete(system=system, user=user)
    # input: 3 tokens of framing per message plus ceil(len/4); output: ceil(len/4).
    expected_in = (3 + ceil4(system)) + (3 + ceil4(user))
    assert expected_in == (3 + 4) + (3 + 8)
    assert response.usage.input_tokens == expected_in
    assert response.usage.output_tokens == ceil4(answer) == 6
    assert response.usage.total_tokens == 24
    assert response.usage.estimated is False
    assert response.usage.cached_input_tokens == 0
    assert response.usage.reasoning_tokens == 0


@pytest.mark.anyio
async def test_usage_counts_tool_names_and_arguments_and_empty_content() -> None:
    call = ToolCall(id="c1", name="get_weather", arguments='{"city": "Paris"}')
    messages = [
        Message.user("weather?"),
        Message.assistant(tool_calls=[call]),  # content None: framing only
        Message.tool("sunny", tool_call_id="c1"),
    ]
    reply = FakeReply.tool_call("get_weather", {"city": "Paris"})
    fake = FakeProvider([reply])
    response = await fake.complete(Request.create(model="m", messages=messages))
    assert response.usage.input_tokens == (3 + ceil4("weather?")) + 3 + (3 + ceil4("sunny"))
    assert response.usage.input_tokens == 5 + 3 + 5
    produced = "" + "get_weather" + '{"city": "Paris"}'
    assert response.usage.output_tokens == max(1, ceil4(produced)) == 7


@pytest.mark.anyio
async def test_usage_output_is_at_least_one_token() -> None:
    fake = FakeProvider([FakeReply.refused("no"), ""])
    for _ in range(2):
        usage = (await fake.complete(ask(""))).usage
        assert usage.input_tokens == 3
        assert usage.output_tokens == 1


def test_usage_for_is_the_same_formula() -> None:
    request = Request.create(model="m", user="abcde")  # 5 chars: 2 tokens
    usage = FakeProvider.usage_for(request, FakeReply(text="123456789"))  # 9 chars: 3 tokens
    assert usage == Usage(input_tokens=5, output_tokens=3)


@pytest.mark.anyio
async def test_scripted_usage_overrides_the_estimate() -> None:
    scripted = Usage(input_tokens=1000, output_tokens=7, cached_input_tokens=200)
    fake = FakeProvider(
        [FakeReply.of_text("x", usage=scripted), FakeReply(text="y", usage=scripted)]
    )
    guard = Guard(fake, [Observe()], model="m")
    with capture_records() as records:
        assert (await guard.complete(user="hi")).usage == scripted
        assert (await guard.complete(user="hi")).usage == scripted
    assert [r.usage for r in records] == [scripted, scripted]


@pytest.mark.anyio
async def test_observe_records_the_fake_usage() -> None:
    fake = FakeProvider(["Hello there"])
    guard = Guard(fake, [Observe()], model="m")
    with capture_records() as records:
        await guard.complete(user="hi")
    (record,) = records
    assert record.provider == "fake"
    assert record.usage == Usage(input_tokens=3 + 1, output_tokens=3)


# The request log ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_requests_are_logged_in_order() -> None:
    fake = FakeProvider(default="ok")
    guard = Guard(fake, model="m")
    direct = ask("direct", model="other")
    await guard.complete(user="one", temperature=0.5)
    await fake.complete(direct)
    async with guard.stream(user="three") as events:
        async for _ in events:
            pass
    assert [r.last_user_text for r in fake.requests] == ["one", "direct", "three"]
    assert fake.requests[0].model == "m"
    assert fake.requests[0].temperature == 0.5
    assert fake.requests[1] is direct
    assert fake.streams[0].request is fake.requests[2]


# Streaming ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_stream_events_exact_for_text() -> None:
    fake = FakeProvider(["Hello world"], chunk_size=4)
    request = ask("hi")
    stream = fake.stream(request)
    assert isinstance(stream, FakeStream)
    async with stream as events:
        assert events is stream
        got = [event async for event in events]
    usage = Usage(input_tokens=3 + 1, output_tokens=3)
    assert got == [
        TextDelta(text="Hell"),
        TextDelta(text="o wo"),
        TextDelta(text="rld"),
        UsageUpdate(usage=usage),
        Finish(reason="stop"),
    ]


@pytest.mark.anyio
async def test_stream_events_exact_for_text_and_parallel_tool_calls() -> None:
    reply = FakeReply(
        text="Ok",
        tool_calls=(
            ToolCall(id="c1", name="f", arguments='{"a":1}'),
            ToolCall(id="c2", name="g", arguments="{}"),
        ),
    )
    fake = FakeProvider([reply], chunk_size=4)
    got = await drain(fake, ask("go"))
    produced = "Ok" + "f" + '{"a":1}' + "g" + "{}"
    assert got == [
        TextDelta(text="Ok"),
        ToolCallDelta(index=0, id="c1", name="f"),
        ToolCallDelta(index=0, arguments='{"a"'),
        ToolCallDelta(index=0, arguments=":1}"),
        ToolCallDelta(index=1, id="c2", name="g"),
        ToolCallDelta(index=1, arguments="{}"),
        UsageUpdate(usage=Usage(input_tokens=3 + 1, output_tokens=ceil4(produced))),
        Finish(reason="tool_calls"),
    ]


@pytest.mark.anyio
async def test_stream_chunk_size_one_and_scripted_usage() -> None:
    scripted = Usage(input_tokens=9, output_tokens=9)
    fake = FakeProvider([FakeReply.of_text("abc", usage=scripted, finish_reason="length")])
    fake.chunk_size = 1
    got = await drain(fake, ask())
    assert got == [
        TextDelta(text="a"),
        TextDelta(text="b"),
        TextDelta(text="c"),
        UsageUpdate(usage=scripted),
        Finish(reason="length"),
    ]


@pytest.mark.anyio
async def test_events_for_matches_what_the_stream_sends() -> None:
    fake = FakeProvider(["streamed text"], chunk_size=3)
    request = ask()
    expected = fake.events_for(request, FakeReply(text="streamed text"))
    assert await drain(fake, request) == expected


@pytest.mark.anyio
async def test_guard_stream_adds_up_to_the_response() -> None:
    fake = FakeProvider([FakeReply.tool_call("lookup", {"q": "x"})], chunk_size=2)
    guard = Guard(fake, [Observe()], model="m")
    with capture_records() as records:
        async with guard.stream(user="find x") as events:
            async for _ in events:
                pass
    response = events.response
    assert response.tool_calls == (
        ToolCall(id="call_lookup", name="lookup", arguments='{"q": "x"}'),
    )
    assert response.finish_reason == "tool_calls"
    assert records[0].stream is True
    assert records[0].usage == response.usage


@pytest.mark.anyio
async def test_stream_log_of_a_completed_stream() -> None:
    fake = FakeProvider(["abcdefgh"], chunk_size=4)  # 2 text events + usage + finish
    async with fake.stream(ask()) as events:
        log = fake.streams[-1]
        assert isinstance(log, FakeStreamLog)
        assert (log.events_sent, log.completed, log.closed) == (0, False, False)
        await events.__anext__()
        assert log.events_sent == 1
        rest = [event async for event in events]
        assert len(rest) == 3
        assert (log.events_sent, log.completed, log.closed) == (4, True, False)
    assert log.closed is True


@pytest.mark.anyio
async def test_stream_log_of_an_abandoned_stream() -> None:
    fake = FakeProvider(["abcdefghijkl"], chunk_size=4)
    guard = Guard(fake, model="m")
    async with guard.stream(user="hi") as events:
        async for _ in events:
            break
    log = fake.streams[-1]
    assert log.events_sent == 1
    assert log.completed is False
    assert log.closed is True


@pytest.mark.anyio
async def test_a_closed_stream_sends_nothing_more() -> None:
    fake = FakeProvider(["abcdefgh"], chunk_size=4)
    stream = fake.stream(ask())
    async with stream as events:
        await events.__anext__()
        await stream.aclose()
        assert [event async for event in events] == []
    log = fake.streams[-1]
    assert (log.events_sent, log.completed, log.closed) == (1, False, True)


@pytest.mark.anyio
async def test_each_stream_has_its_own_log() -> None:
    fake = FakeProvider(["one", "two"])
    await drain(fake, ask("a"))
    await drain(fake, ask("b"))
    assert [log.request.last_user_text for log in fake.streams] == ["a", "b"]
    assert all(log.completed and log.closed for log in fake.streams)


@pytest.mark.anyio
async def test_cut_raises_after_n_events() -> None:
    fake = FakeProvider([FakeReply.cut("abcdefghijkl", after=2)], chunk_size=4)
    got: list[StreamEvent] = []
    with pytest.raises(ProviderError, match="cut") as info:
        await consume(fake.stream(ask()), got)
    assert got == [TextDelta(text="abcd"), TextDelta(text="efgh")]
    assert info.value.retryable is True
    log = fake.streams[-1]
    assert (log.events_sent, log.completed, log.closed) == (2, False, True)


@pytest.mark.anyio
async def test_cut_with_a_custom_error_through_a_guard() -> None:
    cut = FakeReply.cut("Hello world", after=1, error=llmguard.ProviderConnectionError())
    fake = FakeProvider([cut], chunk_size=5)
    guard = Guard(fake, [Observe()], model="m")
    opener = guard.stream(user="hi")
    got: list[StreamEvent] = []
    with capture_records() as records, pytest.raises(llmguard.ProviderConnectionError):
        await consume(opener, got)
    assert got == [TextDelta(text="Hello")]
    assert fake.streams[-1].events_sent == 1
    assert fake.streams[-1].closed is True
    assert records[0].error == "ProviderConnectionError"


@pytest.mark.anyio
async def test_cut_after_zero_sends_nothing_but_opens() -> None:
    fake = FakeProvider([FakeReply.cut("abc", after=0)])
    async with fake.stream(ask()) as events:
        with pytest.raises(ProviderError):
            await events.__anext__()
    assert fake.streams[-1].events_sent == 0


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (FakeReply.rate_limited(retry_after=3), RateLimited),
        (FakeReply.server_error(502), ProviderError),
        (FakeReply.timeout(), ProviderTimeout),
        (FakeReply.malformed(), MalformedResponse),
    ],
)
@pytest.mark.anyio
async def test_an_error_reply_on_a_stream_raises_on_enter(
    reply: FakeReply, error: type[Exception]
) -> None:
    fake = FakeProvider([reply])
    entered = False
    with pytest.raises(error):
        async with fake.stream(ask()):
            entered = True
    assert entered is False
    log = fake.streams[-1]
    assert (log.events_sent, log.completed, log.closed) == (0, False, True)


@pytest.mark.anyio
async def test_an_error_reply_on_a_guard_stream_raises_on_enter() -> None:
    fake = FakeProvider([FakeReply.rate_limited(retry_after=3)])
    guard = Guard(fake, [Observe()], model="m")
    with capture_records() as records, pytest.raises(RateLimited) as info:
        async with guard.stream(user="hi"):
            raise AssertionError("never entered")
    assert info.value.retry_after == 3
    assert fake.streams[-1].events_sent == 0
    assert records[0].error == "RateLimited"


@pytest.mark.anyio
async def test_refused_streams_its_refusal_in_pieces() -> None:
    fake = FakeProvider([FakeReply.refused("no, I won't")], chunk_size=4)
    got = await drain(fake, ask(""))
    assert got == [
        RefusalDelta(text="no, "),
        RefusalDelta(text="I wo"),
        RefusalDelta(text="n't"),
        UsageUpdate(usage=Usage(input_tokens=3, output_tokens=1)),
        Finish(reason="stop"),
    ]


# Delays through the injected sleep ---------------------------------------------------


@pytest.mark.anyio
async def test_latency_goes_through_the_injected_sleep() -> None:
    sleep = RecordingSleep()
    fake = FakeProvider(["a", FakeReply.server_error()], latency=1.25, sleep=sleep)
    await fake.complete(ask())
    with pytest.raises(ProviderError):
        await fake.complete(ask())  # an error answers after the latency too
    assert sleep.delays == [1.25, 1.25]


@pytest.mark.anyio
async def test_no_latency_means_no_sleep() -> None:
    sleep = RecordingSleep()
    fake = FakeProvider(["a"], sleep=sleep)
    await fake.complete(ask())
    await drain(fake.add("b"), ask())
    assert sleep.delays == []


@pytest.mark.anyio
async def test_stream_delays_go_through_the_injected_sleep() -> None:
    sleep = RecordingSleep()
    fake = FakeProvider(
        ["abcdefgh"], chunk_size=4, first_token_delay=1.5, chunk_delay=0.25, sleep=sleep
    )
    got = await drain(fake, ask())
    assert len(got) == 4  # two text chunks, usage, finish
    assert sleep.delays == [1.5, 0.25, 0.25, 0.25]


@pytest.mark.anyio
async def test_reply_delays_override_the_provider_defaults() -> None:
    sleep = RecordingSleep()
    reply = FakeReply(text="abcd", first_token_delay=9.0, chunk_delay=0.5)
    fake = FakeProvider([reply], first_token_delay=1.0, chunk_delay=2.0, sleep=sleep)
    await drain(fake, ask())
    assert sleep.delays == [9.0, 0.5, 0.5]


@pytest.mark.anyio
async def test_reply_delays_of_zero_switch_the_defaults_off() -> None:
    sleep = RecordingSleep()
    reply = FakeReply(text="abcd", first_token_delay=0.0, chunk_delay=0.0)
    fake = FakeProvider([reply], first_token_delay=1.0, chunk_delay=2.0, sleep=sleep)
    await drain(fake, ask())
    assert sleep.delays == []


@pytest.mark.anyio
async def test_latency_on_a_manual_clock_is_what_observe_records() -> None:
    clock = ManualClock(start=1000.0, autojump=True)
    fake = FakeProvider(["slow answer"], latency=2.5, sleep=clock.sleep)
    guard = Guard(fake, [Observe()], model="m", clock=clock)
    with capture_records() as records:
        await guard.complete(user="hi")
    assert clock.now() == 1002.5
    assert records[0].latency_s == 2.5


@pytest.mark.anyio
async def test_stream_delays_on_a_manual_clock() -> None:
    clock = ManualClock(autojump=True)
    fake = FakeProvider(
        ["abcdefgh"], chunk_size=4, first_token_delay=1.0, chunk_delay=0.5, sleep=clock.sleep
    )
    guard = Guard(fake, [Observe()], model="m", clock=clock)
    with capture_records() as records:
        async with guard.stream(user="hi") as events:
            seen = []
            async for _ in events:
                seen.append(clock.now())
    assert seen == [1.0, 1.5, 2.0, 2.5]
    assert records[0].time_to_first_token_s == 1.0
    assert records[0].latency_s == 2.5


@pytest.mark.anyio
async def test_a_manual_clock_without_autojump_holds_the_answer_back() -> None:
    clock = ManualClock()
    fake = FakeProvider(["late"], latency=10, sleep=clock.sleep)
    answers: list[str] = []

    async def call() -> None:
        answers.append((await fake.complete(ask())).text)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        while clock.sleepers == 0:
            await anyio.lowlevel.checkpoint()
        clock.advance(9)
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        assert answers == []
        clock.advance(1)
    assert answers == ["late"]


# Never answering ---------------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", MOCK_TRIO)
@pytest.mark.anyio
async def test_hanging_never_answers() -> None:
    fake = FakeProvider([FakeReply.hanging()])
    start = anyio.current_time()
    with anyio.move_on_after(3600) as scope:
        await fake.complete(ask())
        raise AssertionError("a hanging reply answered")
    assert scope.cancelled_caught
    assert anyio.current_time() - start == pytest.approx(3600)
    assert len(fake.requests) == 1


@pytest.mark.parametrize("anyio_backend", MOCK_TRIO)
@pytest.mark.anyio
async def test_hanging_ignores_the_injected_sleep() -> None:
    sleep = RecordingSleep()
    fake = FakeProvider([FakeReply.hanging()], latency=1, sleep=sleep)
    with anyio.move_on_after(60) as scope:
        await fake.complete(ask())
    assert scope.cancelled_caught
    assert sleep.delays == []


@pytest.mark.parametrize("anyio_backend", MOCK_TRIO)
@pytest.mark.anyio
async def test_hanging_stream_opens_but_sends_nothing() -> None:
    fake = FakeProvider([FakeReply.hanging()])
    start = anyio.current_time()
    async with fake.stream(ask()) as events:
        with anyio.move_on_after(120) as scope:
            await events.__anext__()
    assert scope.cancelled_caught
    assert anyio.current_time() - start == pytest.approx(120)
    log = fake.streams[-1]
    assert (log.events_sent, log.completed, log.closed) == (0, False, True)


@pytest.mark.parametrize("anyio_backend", MOCK_TRIO)
@pytest.mark.anyio
async def test_hanging_through_a_guard_hits_the_total_deadline() -> None:
    fake = FakeProvider([FakeReply.hanging()])
    guard = Guard(fake, model="m", timeout=5)
    start = anyio.current_time()
    with pytest.raises(llmguard.DeadlineExceeded):
        await consume(guard.stream(user="hi"), [])
    assert anyio.current_time() - start == pytest.approx(5)
    assert fake.streams[-1].closed is True


@pytest.mark.parametrize("anyio_backend", MOCK_TRIO)
@pytest.mark.anyio
async def test_an_infinite_first_token_delay_never_sends() -> None:
    sleep = RecordingSleep()
    fake = FakeProvider(["abc"], first_token_delay=math.inf, sleep=sleep)
    async with fake.stream(ask()) as events:
        with anyio.move_on_after(30) as scope:
            await events.__anext__()
    assert scope.cancelled_caught
    assert sleep.delays == []
    assert fake.streams[-1].events_sent == 0

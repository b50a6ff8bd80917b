"""``Retry`` and ``llmguard.retry``: what is retried, how long it waits, and its bounds."""

from __future__ import annotations

import random
import warnings
from collections.abc import AsyncIterator

import anyio
import pytest
from tenacity import retry_if_exception_type, stop_after_attempt, stop_after_delay, wait_fixed
from trio.testing import MockClock

import llmguard
from llmguard import (
    AnyioClock,
    BudgetExceeded,
    ConfigurationError,
    FunctionProvider,
    Guard,
    Observe,
    OpenAIProvider,
    OutputValidationError,
    ProviderError,
    RateLimited,
    Request,
    Response,
    Retry,
    TextDelta,
)
from llmguard.testing import FakeOpenAIEndpoint, FakeProvider, FakeReply, ManualClock, WireReply
from llmguard.testing import capture_records as records_of

from ._helpers import LoggingClock, settle, until_sleepers

pytestmark = pytest.mark.anyio
MOCK_TRIO = [("trio", {"clock": MockClock(autojump_threshold=0)})]


def guard_with(fake: FakeProvider, clock: ManualClock, **options: object) -> Guard:
    retry = Retry(clock=clock, **options)  # type: ignore[arg-type]
    return Guard(fake, [Observe(), retry], model="m", timeout=None, clock=clock)


async def test_429_then_200_waits_the_advertised_time() -> None:
    clock = ManualClock()
    fake = FakeProvider([FakeReply.rate_limited(retry_after=2), "fine"])
    guard = guard_with(fake, clock)
    answers: list[Response] = []

    async def call() -> None:
        answers.append(await guard.complete(user="hi"))

    with records_of() as records:
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await until_sleepers(clock, 1)
            clock.advance(1.999)
            await settle()
            assert answers == [] and len(fake.requests) == 1  # still waiting
            clock.advance(0.001)
    assert answers[0].text == "fine"
    assert clock.now() == 2.0
    assert records[0].attempts == 2 and records[0].error is None


async def test_500_then_200_succeeds_in_two_attempts() -> None:
    clock = LoggingClock()
    fake = FakeProvider([FakeReply.server_error(500), "fine"])
    with records_of() as records:
        response = await guard_with(fake, clock).complete(user="hi")
    assert response.text == "fine"
    assert len(fake.requests) == 2 and records[0].attempts == 2
    assert len(clock.slept) == 1 and 0 <= clock.slept[0] <= 0.5  # full jitter, first step


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_client_errors_raise_at_once(status: int) -> None:
    clock = LoggingClock()
    fake = FakeProvider([FakeReply.server_error(status), "never"])
    with pytest.raises(ProviderError) as info:
        await guard_with(fake, clock).complete(user="hi")
    assert info.value.status_code == status
    assert len(fake.requests) == 1 and clock.slept == []


@pytest.mark.parametrize(
    "reply",
    [
        FakeReply.server_error(408),
        FakeReply.server_error(409),
        FakeReply.server_error(503),
        FakeReply.timeout(),
        FakeReply(error=llmguard.ProviderConnectionError()),
        FakeReply(error=TimeoutError("socket")),
        FakeReply(error=ConnectionResetError("reset")),
    ],
    ids=["408", "409", "503", "timeout", "connection", "TimeoutError", "ConnectionError"],
)
async def test_retryable_failures_are_retried(reply: FakeReply) -> None:
    fake = FakeProvider([reply, "fine"])
    assert (await guard_with(fake, LoggingClock()).complete(user="hi")).text == "fine"
    assert len(fake.requests) == 2


@pytest.mark.parametrize(
    "error",
    [
        BudgetExceeded(scope="u", limit=1, used=1, remaining=0, unit="tokens", reset_at=None),
        OutputValidationError("bad", attempts=[]),
        FakeReply.malformed().error,
        FakeReply.refused("no").error or llmguard.Refusal("no"),
        ValueError("a bug"),
    ],
    ids=["budget", "validation", "malformed", "refusal", "ValueError"],
)
async def test_what_is_never_retried_by_default(error: Exception) -> None:
    fake = FakeProvider([FakeReply(error=error), "never"])
    with pytest.raises(type(error)):
        await guard_with(fake, LoggingClock()).complete(user="hi")
    assert len(fake.requests) == 1


async def test_budget_and_validation_errors_are_never_retried_even_when_told() -> None:
    refusal = BudgetExceeded(scope="u", limit=1, used=1, remaining=0, unit="tokens", reset_at=None)
    fake = FakeProvider([FakeReply(error=refusal)])
    guard = guard_with(fake, LoggingClock(), retry=retry_if_exception_type(Exception))
    with pytest.raises(BudgetExceeded):
        await guard.complete(user="hi")
    assert len(fake.requests) == 1
    fake.add(FakeReply(error=ValueError("told to retry this")), "fine")
    assert (await guard.complete(user="hi")).text == "fine"  # ... while this one is
    fake.add(FakeReply(error=llmguard.UnknownPrice("mystery-model")))
    with pytest.raises(llmguard.UnknownPrice):
        await guard.complete(user="hi")
    assert len(fake.requests) == 4


async def test_attempts_are_bounded() -> None:
    fake = FakeProvider(default=FakeReply.server_error(503))
    clock = LoggingClock()
    with records_of() as records, pytest.raises(ProviderError):
        await guard_with(fake, clock, attempts=4).complete(user="hi")
    assert len(fake.requests) == 4 and records[0].attempts == 4 and len(clock.slept) == 3


async def test_total_time_is_bounded_on_the_injected_clock() -> None:
    fake = FakeProvider(default=FakeReply.server_error(503), latency=1.0)
    clock = LoggingClock()
    fake._sleep = clock.sleep
    guard = guard_with(fake, clock, attempts=10, total=25.0, wait=wait_fixed(10))
    with pytest.raises(ProviderError):
        await guard.complete(user="hi")
    # attempts start at 0, 11 and 22; the next would start at 33 > 25: stopped, no wait.
    assert len(fake.requests) == 3
    assert clock.now() == 23.0 and clock.slept == [1.0, 10.0, 1.0, 10.0, 1.0]


async def test_tenacity_stops_read_the_injected_clock_too() -> None:
    fake = FakeProvider(default=FakeReply.server_error(503))
    clock = LoggingClock()
    guard = guard_with(
        fake, clock, attempts=10, total=None, wait=wait_fixed(4), stop=stop_after_delay(10)
    )
    with pytest.raises(ProviderError):
        await guard.complete(user="hi")
    assert len(fake.requests) == 4  # failures at 0, 4, 8 and 12 s: stop_after_delay(10) ends it


async def test_tenacity_strategies_compose_with_ours() -> None:
    clock = LoggingClock()
    strategy = llmguard.retry_if_status(503) | retry_if_exception_type(KeyError)
    fake = FakeProvider(
        [FakeReply.server_error(503), FakeReply(error=KeyError("k")), FakeReply.server_error(502)]
    )
    guard = guard_with(fake, clock, attempts=5, retry=strategy, stop=stop_after_attempt(4))
    with pytest.raises(ProviderError) as info:
        await guard.complete(user="hi")
    assert info.value.status_code == 502  # not in the predicate: raised, not retried
    assert len(fake.requests) == 3
    both = llmguard.retry_if_retryable() & llmguard.retry_if_status(429)
    fake.add(FakeReply.server_error(503))
    with pytest.raises(ProviderError):
        await guard_with(fake, clock, retry=both).complete(user="hi")
    assert len(fake.requests) == 4


async def test_backoff_is_exponential_with_full_jitter() -> None:
    draws = random.Random(11)
    expected_draws = random.Random(11)
    wait = llmguard.wait_full_jitter(0.5, 3.0, random=draws.random)
    fake = FakeProvider(default=FakeReply.server_error(500))
    clock = LoggingClock()
    with pytest.raises(ProviderError):
        await guard_with(fake, clock, attempts=6, wait=wait).complete(user="hi")
    ceilings = [0.5, 1.0, 2.0, 3.0, 3.0]
    assert clock.slept == [expected_draws.random() * c for c in ceilings]


async def test_an_advertised_wait_above_the_cap_is_not_retried() -> None:
    fake = FakeProvider([FakeReply.rate_limited(retry_after=121), "never"])
    clock = LoggingClock()
    with pytest.raises(RateLimited):
        await guard_with(fake, clock).complete(user="hi")
    assert len(fake.requests) == 1 and clock.slept == []
    fake = FakeProvider([FakeReply.rate_limited(retry_after=150), "fine"])
    guard = guard_with(fake, clock, max_retry_after=300, total=None)
    assert (await guard.complete(user="hi")).text == "fine"
    assert clock.slept == [150]


@pytest.mark.parametrize("anyio_backend", MOCK_TRIO)
async def test_a_wait_that_would_outlast_the_deadline_is_not_started() -> None:
    fake = FakeProvider([FakeReply.rate_limited(retry_after=20), "fine"])
    guard = Guard(fake, [Retry(clock=AnyioClock())], model="m", timeout=10)
    start = anyio.current_time()
    with pytest.raises(RateLimited):  # the real error at once, not DeadlineExceeded later
        await guard.complete(user="hi")
    assert anyio.current_time() == start and len(fake.requests) == 1


async def test_streams_are_retried_when_they_fail_before_the_first_event() -> None:
    fake = FakeProvider(
        [
            FakeReply.rate_limited(retry_after=1),  # fails on opening
            FakeReply.cut("lost", after=0),  # fails while waiting for the first event
            "whole answer",
        ]
    )
    clock = LoggingClock()
    guard = guard_with(fake, clock)
    with records_of() as records:
        async with guard.stream(user="hi") as events:
            text = "".join([e.text async for e in events if isinstance(e, TextDelta)])
    assert text == "whole answer"
    assert len(fake.requests) == 3 and records[0].attempts == 3
    assert clock.slept[0] == 1 and all(log.closed for log in fake.streams)


async def test_a_stream_cut_after_its_first_event_is_not_retried() -> None:
    fake = FakeProvider([FakeReply.cut("abcdefgh", after=1), "never"])
    guard = guard_with(fake, LoggingClock())
    seen: list[str] = []
    with pytest.raises(ProviderError, match="cut"):
        async with guard.stream(user="hi") as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    seen.append(event.text)
    assert seen == ["abcd"]
    assert len(fake.requests) == 1 and fake.streams[0].closed


async def test_a_stream_gives_up_with_the_last_error() -> None:
    fake = FakeProvider(default=FakeReply.cut("x", after=0))
    with pytest.raises(ProviderError, match="cut"):
        async with guard_with(fake, LoggingClock(), attempts=2).stream(user="hi") as events:
            async for _ in events:
                pass
    assert len(fake.requests) == 2 and all(log.closed for log in fake.streams)


async def test_the_decorator_retries_any_async_function() -> None:
    calls: list[str] = []

    @llmguard.retry(attempts=3, clock=LoggingClock())
    async def search(query: str, k: int = 2) -> list[str]:
        calls.append(query)
        if len(calls) < 3:
            raise ConnectionError("reset")
        return [query] * k

    assert await search("q") == ["q", "q"]
    assert calls == ["q", "q", "q"]

    @llmguard.retry(clock=LoggingClock())
    async def broken() -> None:
        calls.append("broken")
        raise KeyError("a bug is not retried")

    with pytest.raises(KeyError):
        await broken()
    assert calls.count("broken") == 1


async def test_a_layer_decorates_a_handler() -> None:
    failures = [ProviderError("down", status_code=502)]
    attempts: list[int] = []

    @Retry(clock=LoggingClock())
    async def ask(request: Request) -> Response:
        state = llmguard.current_call()
        assert state is not None  # the decorated handler opened a call state
        attempts.append(len(state.attempts))
        if failures:
            raise failures.pop()
        return Response(text="up")

    response = await ask(Request.create(model="m", user="hi"))
    assert response.text == "up"
    assert attempts == [1, 2]  # each try was recorded as an attempt of the one call


def test_configuration_errors() -> None:
    for bad in ({"attempts": 0}, {"attempts": 1.5}, {"total": 0}, {"max_retry_after": -1}):
        with pytest.raises(ConfigurationError):
            Retry(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Retry(wait=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        llmguard.retry_if_status()
    with pytest.raises(ConfigurationError):
        llmguard.stop_after_total(0)
    with pytest.raises(ConfigurationError):
        llmguard.wait_full_jitter(2, 1)
    assert "attempts=3" in repr(Retry())
    assert repr(llmguard.retry_if_status(503, 429)) == "retry_if_status(429, 503)"


# -- through the real openai SDK -------------------------------------------------------


async def test_no_multiplication_with_the_sdk_retries() -> None:
    endpoint = FakeOpenAIEndpoint(default=FakeReply.server_error(503))
    provider = OpenAIProvider(endpoint.async_client())  # max_retries=0
    guard = Guard(provider, [Retry(attempts=3, clock=LoggingClock())], model="gpt-4o-mini")
    with pytest.raises(ProviderError):
        await guard.complete(user="hi")
    assert len(endpoint.requests) == 3  # our 3 attempts, nothing hidden in the SDK
    with pytest.raises(ProviderError):
        async with guard.stream(user="hi") as events:
            async for _ in events:
                pass
    assert len(endpoint.requests) == 6


async def test_a_retrying_client_is_flagged_where_it_would_multiply() -> None:
    endpoint = FakeOpenAIEndpoint(default=FakeReply.server_error(503))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        OpenAIProvider(endpoint.async_client(max_retries=2))
    assert [w.category for w in caught] == [llmguard.RetriesMultiplyWarning]


async def test_the_sdk_429_waits_what_the_server_said() -> None:
    endpoint = FakeOpenAIEndpoint([FakeReply.rate_limited(retry_after=2), "Hello!"])
    clock = LoggingClock()
    guard = Guard(OpenAIProvider(endpoint.async_client()), [Retry(clock=clock)], model="m")
    assert (await guard.complete(user="hi")).text == "Hello!"
    assert clock.slept == [2.0] and len(endpoint.requests) == 2


@pytest.mark.parametrize(("status", "header", "tries"), [(500, "false", 1), (400, "true", 2)])
async def test_x_should_retry_is_obeyed(status: int, header: str, tries: int) -> None:
    failure = WireReply.api_error(status, "said the server", headers={"x-should-retry": header})
    endpoint = FakeOpenAIEndpoint([failure, "Hello!"])
    guard = Guard(OpenAIProvider(endpoint.async_client()), [Retry(clock=LoggingClock())], model="m")
    if tries == 1:
        with pytest.raises(ProviderError):
            await guard.complete(user="hi")
    else:
        assert (await guard.complete(user="hi")).text == "Hello!"
    assert len(endpoint.requests) == tries


async def test_function_provider_failures_count_as_attempts() -> None:
    outcomes: list[Exception | None] = [TimeoutError(), None]

    async def flaky(request: Request) -> Response:
        error = outcomes.pop(0)
        if error is not None:
            raise error
        return Response(text="ok")

    guard = Guard(FunctionProvider(flaky), [Observe(), Retry(clock=LoggingClock())], model="m")
    with records_of() as records:
        assert (await guard.complete(user="hi")).text == "ok"
    assert records[0].attempts == 2


async def test_an_empty_stream_is_an_answer_not_a_failure() -> None:
    async def nothing(request: Request) -> AsyncIterator[llmguard.StreamEvent]:
        return
        yield  # an async generator that ends at once

    async def unused(request: Request) -> Response:
        raise AssertionError

    provider = FunctionProvider(unused, stream=nothing)
    guard = Guard(provider, [Retry(clock=LoggingClock())], model="m")
    async with guard.stream(user="hi") as events:
        assert [e async for e in events] == []


def test_our_predicates_read_tenacity_states() -> None:
    from tenacity import RetryCallState

    state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    assert not llmguard.retry_if_retryable()(state)  # no outcome yet
    state.set_result("fine")
    assert not llmguard.retry_if_retryable()(state)
    assert not llmguard.retry_if_status(503)(state)
    state.set_exception((ProviderError, ProviderError("x", status_code=503), None))
    assert llmguard.retry_if_status(503)(state) and llmguard.retry_if_retryable()(state)
    assert repr(llmguard.stop_after_total(30)) == "stop_after_total(30)"
    assert repr(llmguard.retry_if_retryable()) == "retry_if_retryable()"
    assert repr(llmguard.wait_full_jitter()) == "wait_full_jitter(0.5, 8)"

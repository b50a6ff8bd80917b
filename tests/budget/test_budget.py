"""The Budget layer: reserve the worst case, extend per attempt, settle the real usage."""

from __future__ import annotations

import dataclasses
import logging
from decimal import Decimal

import anyio
import pytest
from trio.testing import MockClock

import llmguard
from llmguard import (
    BaseLayer,
    Budget,
    BudgetExceeded,
    ConfigurationError,
    FunctionProvider,
    Guard,
    Handler,
    Limit,
    MemoryStore,
    Observe,
    Price,
    Pricing,
    Request,
    Response,
    UnknownPrice,
    Usage,
    Window,
)
from llmguard._budget_limits import ledger_key
from llmguard.testing import FakeProvider, FakeReply, capture_records

from .conftest import START, WallClock

pytestmark = pytest.mark.anyio

HOUR = Window.fixed(3600)
ASK = Request.create(model="gpt-4o-mini", user="hello there", max_output_tokens=100)
ASK_INPUT = 3 + 3  # the heuristic: 3 tokens of framing + 11 characters / 4, rounded up
ASK_WORST = ASK_INPUT + 100
USAGE = Usage(input_tokens=6, output_tokens=20)


def tokens_key(name: str, scope: str = "global") -> str:
    return ledger_key(name, "tokens", scope)


async def used(
    store: MemoryStore, name: str, scope: str = "global", window: Window = HOUR
) -> tuple[int, int]:
    result = await store.usage(tokens_key(name, scope), window=window)
    return result.used, result.reserved


def make(
    limit: int, *more: Limit, reply: FakeReply | None = None, **options: object
) -> tuple[Guard, FakeProvider, MemoryStore]:
    store = MemoryStore(clock=WallClock())
    fake = FakeProvider(default=reply or FakeReply.of_text("Hi!", usage=USAGE))
    budget = Budget(Limit(tokens=limit, per="hour", name="t"), *more, store=store, **options)  # type: ignore[arg-type]
    return Guard(fake, [Observe(), budget], model="gpt-4o-mini"), fake, store


async def test_reserves_the_worst_case_then_settles_the_real_usage() -> None:
    store = MemoryStore(clock=WallClock())
    seen: list[tuple[int, int]] = []

    async def answer(request: Request) -> Response:
        seen.append(await used(store, "t"))
        return Response(text="Hi!", usage=USAGE, model=request.model)

    budget = Budget(Limit(tokens=1000, per="hour", name="t"), store=store)
    guard = Guard(FunctionProvider(answer), [Observe(), budget])
    with capture_records() as records:
        response = await guard.complete(ASK)
    assert seen == [(0, ASK_WORST)]  # held while the call ran
    assert await used(store, "t") == (26, 0)  # the real usage, the rest released
    assert response.cost_micros == Pricing().cost_micros("gpt-4o-mini", USAGE) == 13
    assert records[0].cost_micros == 13
    # Budget keeps the CallState's facts: scopes and cost.
    assert budget.store is store and budget.limits[0].name == "t"


async def test_refuses_before_sending_when_the_worst_case_does_not_fit() -> None:
    guard, fake, store = make(ASK_WORST - 1)
    with pytest.raises(BudgetExceeded) as refused, capture_records() as records:
        await guard.complete(ASK)
    error = refused.value
    assert (error.scope, error.limit, error.used, error.remaining, error.unit) == (
        "t:global",
        ASK_WORST - 1,
        0,
        ASK_WORST - 1,
        "tokens",
    )
    assert error.reset_at is not None and error.reset_at.timestamp() == START + 3600
    assert fake.requests == []
    assert records[0].error == "BudgetExceeded" and records[0].attempts == 0
    assert await used(store, "t") == (0, 0)


async def test_a_call_fits_exactly_and_the_next_one_does_not() -> None:
    reply = FakeReply.of_text("x", usage=Usage(input_tokens=ASK_INPUT, output_tokens=100))
    guard, fake, _store = make(2 * ASK_WORST, reply=reply)
    await guard.complete(ASK)
    await guard.complete(ASK)
    with pytest.raises(BudgetExceeded) as refused:
        await guard.complete(ASK)
    assert (refused.value.used, refused.value.remaining) == (2 * ASK_WORST, 0)
    assert len(fake.requests) == 2


async def test_max_output_tokens_is_reserved_and_set_when_the_request_has_none() -> None:
    guard, fake, _store = make(10_000, max_output_tokens=500)
    await guard.complete(user="hello there")
    assert fake.requests[0].max_output_tokens == 500
    await guard.complete(ASK)
    assert fake.requests[1].max_output_tokens == 100  # the caller's own is kept
    small, _, _ = make(ASK_INPUT + 499, max_output_tokens=500)
    with pytest.raises(BudgetExceeded):
        await small.complete(user="hello there")


async def test_a_failed_call_releases_its_reservation() -> None:
    guard, _fake, store = make(1000, reply=FakeReply.server_error(500))
    with pytest.raises(llmguard.ProviderError):
        await guard.complete(ASK)
    assert await used(store, "t") == (0, 0)


async def test_stacked_budgets_reserve_together_or_not_at_all() -> None:
    store = MemoryStore(clock=WallClock())
    fake = FakeProvider(default=FakeReply.of_text("ok", usage=USAGE))
    per_user = Limit(tokens=10_000, per="hour", scope="user", name="per-user")
    global_daily = Limit(tokens=ASK_WORST + 20, per="day", name="global")
    guard = Guard(fake, [Budget(per_user, global_daily, store=store)], model="m")
    day = Window.fixed(86400)
    with llmguard.context(user="alice"):
        await guard.complete(ASK)  # 26 settled on both
        with pytest.raises(BudgetExceeded) as refused:
            await guard.complete(ASK)  # fits per-user, not global
    assert refused.value.scope == "global:global"
    # The per-user line it reserved first was given back.
    assert await used(store, "per-user", "user=alice") == (26, 0)
    assert await used(store, "global", window=day) == (26, 0)
    assert len(fake.requests) == 1


async def test_two_budget_layers_stack_too() -> None:
    store = MemoryStore(clock=WallClock())
    fake = FakeProvider(default=FakeReply.of_text("ok", usage=USAGE))
    outer = Budget(Limit(tokens=10_000, per="hour", name="outer"), store=store)
    inner = Budget(Limit(tokens=ASK_WORST, per="hour", name="inner"), store=store)
    guard = Guard(fake, [outer, inner], model="m")
    await guard.complete(ASK)
    with pytest.raises(BudgetExceeded):
        await guard.complete(ASK)
    assert await used(store, "outer") == (26, 0)
    assert await used(store, "inner") == (26, 0)


class Twice(BaseLayer):
    """Calls inward again after a provider error (a retry)."""

    async def complete(self, request: Request, call_next: Handler) -> Response:
        try:
            return await call_next(request)
        except llmguard.ProviderError:
            return await call_next(request)


class ReAsk(BaseLayer):
    """Calls inward again with the first answer and a correction (a re-ask)."""

    async def complete(self, request: Request, call_next: Handler) -> Response:
        first = await call_next(request)
        again = dataclasses.replace(
            request,
            messages=(
                *request.messages,
                llmguard.Message.assistant(first.text),
                llmguard.Message.user("That was not JSON."),
            ),
        )
        return await call_next(again)


async def test_a_retry_extends_the_reservation_first_and_is_charged() -> None:
    store = MemoryStore(clock=WallClock())
    held: list[int] = []

    calls = 0

    async def flaky(request: Request) -> Response:
        nonlocal calls
        calls += 1
        held.append((await used(store, "t"))[1])
        if calls == 1:
            raise llmguard.ProviderError("boom", status_code=500)
        return Response(text="ok", usage=USAGE)

    budget = Budget(Limit(tokens=1000, per="hour", name="t"), store=store)
    guard = Guard(FunctionProvider(flaky), [budget, Twice()], model="m")
    with capture_records() as records:
        await guard.complete(ASK)
    assert held == [ASK_WORST, 2 * ASK_WORST]  # the second attempt was reserved before it ran
    assert await used(store, "t") == (26, 0)
    assert records == []  # (no Observe here)


async def test_a_retry_that_does_not_fit_is_refused_before_it_starts() -> None:
    fake = FakeProvider([FakeReply.server_error(503)], default="never")
    store = MemoryStore(clock=WallClock())
    budget = Budget(Limit(tokens=ASK_WORST, per="hour", name="t"), store=store)
    guard = Guard(fake, [budget, Twice()], model="m")
    with pytest.raises(BudgetExceeded):
        await guard.complete(ASK)
    assert len(fake.requests) == 1
    assert await used(store, "t") == (0, 0)


async def test_the_real_retry_layer_extends_per_attempt() -> None:
    from llmguard._layers.retry import Retry

    fake = FakeProvider([FakeReply.rate_limited(), FakeReply.of_text("ok", usage=USAGE)])
    store = MemoryStore(clock=WallClock())
    budget = Budget(Limit(tokens=10_000, per="hour", name="t"), store=store)
    guard = Guard(fake, [budget, Retry(attempts=3, wait=lambda state: 0)], model="m")
    await guard.complete(ASK)
    assert len(fake.requests) == 2
    assert await used(store, "t") == (26, 0)


async def test_a_re_ask_charges_every_attempt() -> None:
    first = Usage(input_tokens=6, output_tokens=20)
    second = Usage(input_tokens=40, output_tokens=10)
    fake = FakeProvider(
        [FakeReply.of_text("not json", usage=first), FakeReply.of_text("{}", usage=second)]
    )
    store = MemoryStore(clock=WallClock())
    budget = Budget(Limit(tokens=10_000, per="hour", name="t"), store=store)
    guard = Guard(fake, [Observe(), budget, ReAsk()], model="gpt-4o-mini")
    with capture_records() as records:
        response = await guard.complete(ASK)
    assert await used(store, "t") == (first.total_tokens + second.total_tokens, 0)
    pricing = Pricing()
    expected = pricing.cost("gpt-4o-mini", first + second)
    assert expected is not None
    assert response.cost_micros == records[0].cost_micros
    assert records[0].attempts == 2


async def test_a_fallback_hop_is_charged_at_the_other_models_price() -> None:
    from llmguard._layers.fallback import Fallback

    fake = FakeProvider()
    fake.when(lambda r: r.model == "gpt-4o-mini").reply(FakeReply.server_error(500))
    fake.when(lambda r: r.model == "gpt-4o").reply(FakeReply.of_text("ok", usage=USAGE))
    store = MemoryStore(clock=WallClock())
    budget = Budget(Limit(usd="1.00", per="hour", name="usd"), store=store)
    guard = Guard(fake, [budget, Fallback(to="gpt-4o")], model="gpt-4o-mini")
    response = await guard.complete(ASK)
    expected = Pricing().cost_micros("gpt-4o", USAGE)
    assert response.cost_micros == expected
    result = await store.usage(ledger_key("usd", "usd_micros", "global"), window=HOUR)
    assert (result.used, result.reserved) == (expected, 0)


async def test_a_layer_passed_through_again_reserves_again() -> None:
    """A tool loop sends every step through every layer: each step is its own ticket."""
    fake = FakeProvider(default=FakeReply.of_text("ok", usage=USAGE))
    store = MemoryStore(clock=WallClock())
    budget = Budget(Limit(tokens=10_000, per="hour", name="t"), store=store)
    inner = Guard(fake, [budget], model="m")

    class Loop(BaseLayer):
        async def complete(self, request: Request, call_next: Handler) -> Response:
            await call_next(request)
            return await call_next(request)

    handler = budget(fake.complete)
    assert (await handler(ASK)).text == "ok"
    state_guard = Guard(FunctionProvider(inner.complete), [Loop()], model="m")
    await state_guard.complete(ASK)
    assert await used(store, "t") == (3 * 26, 0)


async def test_a_stream_cut_after_n_events_is_charged_for_n_events() -> None:
    text = "abcdefghijklmnopqrstuvwxyz" * 4  # 104 characters, 4 a chunk
    fake = FakeProvider([FakeReply.cut(text, after=5)], chunk_size=4)
    store = MemoryStore(clock=WallClock())
    guard = Guard(
        fake,
        [Observe(), Budget(Limit(tokens=10_000, per="hour", name="t"), store=store)],
        model="m",
    )
    received = 0
    with pytest.raises(llmguard.ProviderError), capture_records() as records:
        async with guard.stream(ASK) as events:
            async for _ in events:
                received += 1
    assert received == 5
    expected = llmguard.estimate_usage(ASK, 5 * 4)  # 20 characters of output: 5 tokens
    assert expected.output_tokens == 5
    assert await used(store, "t") == (expected.total_tokens, 0)
    assert records[0].usage.estimated


async def test_a_stream_left_early_by_its_reader_is_charged_for_what_it_read() -> None:
    fake = FakeProvider(["a long answer " * 20], chunk_size=4)
    store = MemoryStore(clock=WallClock())
    guard = Guard(
        fake, [Budget(Limit(tokens=10_000, per="hour", name="t"), store=store)], model="m"
    )
    received = 0
    async with guard.stream(ASK) as events:
        async for _ in events:
            received += 1
            if received == 3:
                break  # the client disconnected after 3 events
    assert fake.streams[0].closed
    expected = llmguard.estimate_usage(ASK, 3 * 4)
    assert await used(store, "t") == (expected.total_tokens, 0)
    assert events.response.usage.estimated


async def test_a_stream_with_usage_is_charged_its_usage_and_priced() -> None:
    fake = FakeProvider([FakeReply.of_text("Hello, world!", usage=USAGE)])
    store = MemoryStore(clock=WallClock())
    guard = Guard(
        fake, [Budget(Limit(tokens=10_000, per="hour", name="t"), store=store)], model="gpt-4o-mini"
    )
    async with guard.stream(ASK) as events:
        async for _ in events:
            pass
    assert await used(store, "t") == (26, 0)
    assert events.response.cost_micros == Pricing().cost_micros("gpt-4o-mini", USAGE)


async def test_a_stream_refused_on_entering_sends_nothing() -> None:
    fake = FakeProvider(["never"])
    store = MemoryStore(clock=WallClock())
    guard = Guard(fake, [Budget(Limit(tokens=10, per="hour", name="t"), store=store)], model="m")
    with pytest.raises(BudgetExceeded):
        async with guard.stream(ASK):
            pass
    assert fake.streams == [] and fake.requests == []


@pytest.mark.parametrize("anyio_backend", [("trio", {"clock": MockClock(autojump_threshold=0)})])
async def test_a_stream_cut_by_the_deadline_is_charged_for_what_was_sent() -> None:
    fake = FakeProvider(["word " * 50], chunk_size=5, chunk_delay=1.0)
    store = MemoryStore(clock=WallClock())
    # No worker threads (price database, tiktoken check): MockClock would jump past them.
    budget = Budget(
        Limit(tokens=10_000, per="hour", name="t"),
        store=store,
        pricing=Pricing(database=False),
        input_tokens="heuristic",
    )
    guard = Guard(fake, [budget], model="m", timeout=3.5)
    received = 0
    with pytest.raises(llmguard.DeadlineExceeded):
        async with guard.stream(ASK) as events:
            async for _ in events:
                received += 1
    assert received == 4  # at t=0, 1, 2, 3; the deadline fired at 3.5
    expected = llmguard.estimate_usage(ASK, received * 5)
    assert await used(store, "t") == (expected.total_tokens, 0)


async def test_a_cancelled_call_still_settles_what_it_used() -> None:
    store = MemoryStore(clock=WallClock())
    started = anyio.Event()
    fake = FakeProvider(["chunk " * 10], chunk_size=6, chunk_delay=3600)
    guard = Guard(
        fake,
        [Budget(Limit(tokens=10_000, per="hour", name="t"), store=store)],
        model="m",
        timeout=None,
    )

    async def reader() -> None:
        async with guard.stream(ASK) as events:
            async for _ in events:
                started.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await started.wait()
        tg.cancel_scope.cancel()
    expected = llmguard.estimate_usage(ASK, 6)
    assert await used(store, "t") == (expected.total_tokens, 0)


class AnswerFirst(BaseLayer):
    """Answers without calling inward (a cache hit), placed outside the budget."""

    async def complete(self, request: Request, call_next: Handler) -> Response:
        state = llmguard.current_call()
        assert state is not None
        state.cache = "hit"
        return Response(text="cached", usage=USAGE, cached=True, cost_micros=0)


async def test_a_cache_hit_outside_the_budget_is_not_charged() -> None:
    guard, fake, store = make(1000)
    hit = Guard(fake, [AnswerFirst(), *guard.layers], model="m")
    with capture_records() as records:
        assert (await hit.complete(ASK)).text == "cached"
    assert await used(store, "t") == (0, 0) and fake.requests == []
    assert records == []


async def test_the_cache_layer_charges_the_miss_and_not_the_hit() -> None:
    from llmguard import Cache

    store = MemoryStore(clock=WallClock())
    fake = FakeProvider(default=FakeReply.of_text("Paris.", usage=USAGE))
    budget = Budget(Limit(tokens=1000, per="hour", name="t"), store=store)
    guard = Guard(fake, [Observe(), Cache(MemoryStore()), budget], model="gpt-4o-mini")
    with capture_records() as records:
        first = await guard.complete(ASK)
        second = await guard.complete(ASK)
    assert not first.cached and first.cost_micros == 13
    assert second.cached and second.cost_micros == 0
    assert len(fake.requests) == 1
    assert await used(store, "t") == (26, 0)
    assert [r.cost_micros for r in records] == [13, 0]


# -- prices and the unknown-price policy -----------------------------------------------


async def test_a_dollar_limit_refuses_an_unknown_model_by_default() -> None:
    fake = FakeProvider(["never"])
    budget = Budget(Limit(usd="5.00", per="day"), store=MemoryStore())
    guard = Guard(fake, [budget], model="my-private-model")
    with pytest.raises(UnknownPrice) as refused:
        await guard.complete(ASK.__class__.create(model="my-private-model", user="hi"))
    assert refused.value.model == "my-private-model" and fake.requests == []


async def test_warn_counts_tokens_only_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore(clock=WallClock())
    fake = FakeProvider(default=FakeReply.of_text("ok", usage=USAGE))
    tokens = Limit(tokens=10_000, per="hour", name="t")
    dollars = Limit(usd="0.000001", per="hour", name="usd")  # would refuse anything priced
    budget = Budget(tokens, dollars, store=store, on_unknown_price="warn")
    guard = Guard(fake, [budget], model="my-private-model")
    request = Request.create(model="my-private-model", user="hello there", max_output_tokens=100)
    with caplog.at_level(logging.WARNING, logger="llmguard.budget"):
        first = await guard.complete(request)
        await guard.complete(request)
    warnings = [r for r in caplog.records if "no price is known" in r.getMessage()]
    assert len(warnings) == 1
    assert first.cost_micros is None  # unknown, never 0
    assert await used(store, "t") == (52, 0)
    usd = await store.usage(ledger_key("usd", "usd_micros", "global"), window=HOUR)
    assert (usd.used, usd.reserved) == (0, 0)


async def test_a_default_price_charges_unknown_models() -> None:
    store = MemoryStore(clock=WallClock())
    fake = FakeProvider(default=FakeReply.of_text("ok", usage=USAGE))
    default = Price(input="10", output="10")
    budget = Budget(Limit(usd="1", per="hour", name="usd"), store=store, on_unknown_price=default)
    guard = Guard(fake, [budget], model="my-private-model")
    request = Request.create(model="my-private-model", user="hello there", max_output_tokens=100)
    response = await guard.complete(request)
    assert response.cost_micros == 260  # 26 tokens at $10 a million
    usd = await store.usage(ledger_key("usd", "usd_micros", "global"), window=HOUR)
    assert usd.used == 260


async def test_dollar_limits_reserve_the_priced_worst_case() -> None:
    store = MemoryStore(clock=WallClock())
    price = Price(input="1000", output="2000")  # $0.001 and $0.002 a token
    worst = ASK_INPUT * 1000 + 100 * 2000  # micro-dollars
    budget = Budget(
        Limit(usd=Decimal(worst - 1) / 1_000_000, name="usd"),
        store=store,
        pricing=Pricing({"m": price}),
    )
    guard = Guard(FakeProvider(["never"]), [budget], model="m")
    with pytest.raises(BudgetExceeded) as refused:
        await guard.complete(dataclasses.replace(ASK, model="m"))
    assert (refused.value.unit, refused.value.limit) == ("usd_micros", worst - 1)


async def test_the_worst_case_prices_output_as_the_dearer_of_plain_and_reasoning() -> None:
    store = MemoryStore(clock=WallClock())
    price = Price(input="0", output="1000", reasoning="5000")
    held: list[int] = []

    async def answer(request: Request) -> Response:
        result = await store.usage(ledger_key("usd", "usd_micros", "global"), window=HOUR)
        held.append(result.reserved)
        return Response(
            text="ok", usage=Usage(input_tokens=1, output_tokens=10, reasoning_tokens=10)
        )

    budget = Budget(Limit(usd=10, name="usd"), store=store, pricing=Pricing({"m": price}))
    guard = Guard(FunctionProvider(answer), [budget], model="m")
    response = await guard.complete(dataclasses.replace(ASK, model="m"))
    assert held == [100 * 5000]
    assert response.cost_micros == 10 * 5000


async def test_a_response_without_usage_is_charged_an_estimate() -> None:
    async def no_usage(request: Request) -> Response:
        return Response(text="x" * 40)

    store = MemoryStore(clock=WallClock())
    guard = Guard(
        FunctionProvider(no_usage),
        [Observe(), Budget(Limit(tokens=1000, per="hour", name="t"), store=store)],
        model="m",
    )
    with capture_records() as records:
        await guard.complete(ASK)
    expected = llmguard.estimate_usage(ASK, "x" * 40)
    assert await used(store, "t") == (expected.total_tokens, 0)
    assert records[0].usage.estimated and records[0].usage == expected


# -- construction ----------------------------------------------------------------------


def test_limits_are_checked_when_built() -> None:
    with pytest.raises(ConfigurationError):
        Limit()
    with pytest.raises(ConfigurationError):
        Limit(tokens=-1)
    with pytest.raises(ConfigurationError):
        Limit(tokens=1.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Limit(tokens=1, per="fortnight")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Limit(tokens=1, per=0)
    with pytest.raises(ConfigurationError):
        Limit(tokens=1, per="month", sliding=True)
    with pytest.raises(ConfigurationError):
        Limit(tokens=1, per=Window.fixed(60), tz="Europe/Paris")
    with pytest.raises(ConfigurationError):
        Limit(tokens=1, scope="planet")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Limit(tokens=1, tz="Mars/Olympus")
    with pytest.raises(ConfigurationError):
        Limit(tokens=1, alerts=(0,))
    with pytest.raises(ConfigurationError):
        Limit(tokens=1, name="")
    with pytest.raises(ConfigurationError):
        Budget(Limit(tokens=1, name="a"), Limit(tokens=2, name="a"))
    with pytest.raises(ConfigurationError):
        Budget("tokens")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Budget(store=object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Budget(on_store_error="ajar")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Budget(on_unknown_price="free")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Budget(max_output_tokens=0)
    with pytest.raises(ConfigurationError):
        Budget(hold=0)
    with pytest.raises(ConfigurationError):
        Budget(input_tokens="exact")  # type: ignore[arg-type]


def test_limit_names_windows_and_scopes() -> None:
    assert Limit(tokens=1, per="hour", scope="user").name == "user/hour"
    assert Limit(tokens=1, per=90, scope=("user", "tenant")).name == "tenant+user/90s"
    assert Limit(tokens=1, per="minute", sliding=True).name == "global/sliding-minute"
    assert Limit(tokens=1, per="month", tz="Europe/Paris").window == Window.month(tz="Europe/Paris")
    limit = Limit(tokens=5, usd="0.5", per=Window.forever(), name="all")
    assert [(line.unit, line.amount) for line in limit.lines()] == [
        ("tokens", 5),
        ("usd_micros", 500_000),
    ]
    assert "usd=0.5" in repr(limit)
    ctx = llmguard.CallContext(user="a,b=c", tenant=None)
    assert Limit(tokens=1, scope=("tenant", "user")).key(ctx) == "tenant=(none),user=a%2Cb%3Dc"

    def by_plan(context: llmguard.CallContext) -> str | None:
        return None if context.user is None else f"plan=pro,user={context.user}"

    custom = Limit(tokens=1, scope=by_plan)
    assert custom.name == "by_plan/day" and custom.key(ctx) == "plan=pro,user=a,b=c"


async def test_a_scope_function_returning_none_skips_the_limit() -> None:
    store = MemoryStore(clock=WallClock())
    fake = FakeProvider(default=FakeReply.of_text("ok", usage=USAGE))

    def signed_in(context: llmguard.CallContext) -> str | None:
        return None if context.user is None else f"user={context.user}"

    budget = Budget(Limit(tokens=ASK_WORST, per="hour", scope=signed_in, name="u"), store=store)
    guard = Guard(fake, [budget], model="m")
    for _ in range(3):
        await guard.complete(ASK)  # no user: the limit does not apply
    with llmguard.context(user="bob"):
        await guard.complete(ASK)
        with pytest.raises(BudgetExceeded):
            await guard.complete(ASK)


async def test_status_reports_used_remaining_and_reset_per_scope() -> None:
    clock = WallClock()
    store = MemoryStore(clock=clock)
    fake = FakeProvider(default=FakeReply.of_text("ok", usage=USAGE))
    budget = Budget(
        Limit(tokens=1000, per="hour", scope="user", name="hourly"),
        Limit(usd="1", per="day", name="daily"),
        store=store,
    )
    guard = Guard(fake, [budget], model="gpt-4o-mini")
    with llmguard.context(user="alice"):
        await guard.complete(ASK)
        hourly, daily = await budget.status()
    assert (hourly.name, hourly.scope, hourly.unit, hourly.used, hourly.remaining) == (
        "hourly",
        "user=alice",
        "tokens",
        26,
        974,
    )
    assert hourly.reset_at is not None and hourly.reset_at.timestamp() == START + 3600
    assert (daily.unit, daily.used, daily.limit) == ("usd_micros", 13, 1_000_000)
    bob = await budget.status(llmguard.CallContext(user="bob"))
    assert bob[0].used == 0 and bob[0].scope == "user=bob"
    report = await llmguard.budget_report(store)
    assert [(s.name, s.scope, s.used) for s in report] == [
        ("daily", "global", 13),
        ("hourly", "user=alice", 26),
    ]
    assert [s.name for s in await llmguard.budget_report(store, name="hourly")] == ["hourly"]


async def test_a_budget_decorates_a_request_handler() -> None:
    store = MemoryStore(clock=WallClock())
    budget = Budget(Limit(tokens=ASK_WORST, per="hour", name="t"), store=store)

    @budget
    async def ask(request: Request) -> Response:
        return Response(text="42", usage=USAGE)

    assert (await ask(ASK)).text == "42"
    with pytest.raises(BudgetExceeded):
        await ask(ASK)
    assert "Budget(Limit(tokens=" in repr(budget)


async def test_sync_callers_are_budgeted_too() -> None:
    guard, _fake, store = make(ASK_WORST + 25)

    def blocking() -> None:
        guard.sync.complete(ASK)
        with pytest.raises(BudgetExceeded):
            guard.sync.complete(ASK)

    await anyio.to_thread.run_sync(blocking)
    assert await used(store, "t") == (26, 0)


async def test_a_layer_called_without_a_call_state_still_counts() -> None:
    store = MemoryStore(clock=WallClock())
    budget = Budget(Limit(tokens=ASK_WORST, per="hour", name="t"), store=store)

    async def inner(request: Request) -> Response:
        return Response(text="ok", usage=USAGE)

    assert llmguard.current_call() is None
    response = await budget.complete(ASK, inner)  # composed by hand, outside any Guard
    assert response.text == "ok"
    assert await used(store, "t") == (26, 0)  # no attempts recorded: the response's usage
    assert response.cost_micros == 13
    with pytest.raises(BudgetExceeded):
        await budget.complete(ASK, inner)


async def test_every_tool_loop_step_is_reserved_and_charged() -> None:
    @llmguard.tool
    def weather(city: str) -> str:
        """The weather in a city."""
        return f"Sunny in {city}."

    step1 = Usage(input_tokens=30, output_tokens=10)
    step2 = Usage(input_tokens=50, output_tokens=8)
    fake = FakeProvider(
        [
            dataclasses.replace(FakeReply.tool_call("weather", {"city": "Paris"}), usage=step1),
            FakeReply.of_text("It is sunny.", usage=step2),
        ]
    )
    store = MemoryStore(clock=WallClock())
    budget = Budget(Limit(tokens=10_000, per="hour", name="t"), store=store)
    guard = Guard(fake, [Observe(), budget], model="gpt-4o-mini")
    with capture_records() as records:
        result = await guard.run_tools(
            tools=[weather], user="Weather in Paris?", max_output_tokens=100
        )
    assert result.response.text == "It is sunny."
    assert await used(store, "t") == (step1.total_tokens + step2.total_tokens, 0)
    assert records[0].cost_micros == Pricing().cost_micros("gpt-4o-mini", step1 + step2)
    # A step that does not fit is refused before it is sent.
    tight = Guard(
        FakeProvider(
            [dataclasses.replace(FakeReply.tool_call("weather", {"city": "Rome"}), usage=step1)]
        ),
        [Budget(Limit(tokens=200, per="hour", name="t2"), store=store)],
        model="gpt-4o-mini",
    )
    with pytest.raises(BudgetExceeded):
        await tight.run_tools(tools=[weather], user="Weather in Rome?", max_output_tokens=150)


async def test_structured_output_re_asks_are_each_charged() -> None:
    from pydantic import BaseModel

    class City(BaseModel):
        name: str

    first = Usage(input_tokens=40, output_tokens=12)
    second = Usage(input_tokens=90, output_tokens=9)
    fake = FakeProvider(
        [
            FakeReply.of_text("not json at all", usage=first),
            FakeReply.of_text('{"name": "Paris"}', usage=second),
        ]
    )
    store = MemoryStore(clock=WallClock())
    budget = Budget(Limit(tokens=10_000, per="hour", name="t"), store=store)
    guard = Guard(fake, [Observe(), budget], model="gpt-4o-mini")
    with capture_records() as records:
        city = await guard.structured(City, user="Capital of France?", max_output_tokens=100)
    assert city.name == "Paris"
    assert await used(store, "t") == (first.total_tokens + second.total_tokens, 0)
    assert records[0].cost_micros == Pricing().cost_micros("gpt-4o-mini", first + second)

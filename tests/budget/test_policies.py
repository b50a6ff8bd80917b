"""When the store is down (both policies), and alerts."""

from __future__ import annotations

import logging

import pytest

import llmguard
from llmguard import (
    Budget,
    BudgetAlert,
    BudgetExceeded,
    Guard,
    Limit,
    MemoryStore,
    Request,
    StoreUnavailable,
    Usage,
)
from llmguard._budget_limits import ledger_key
from llmguard.testing import FakeProvider, FakeReply

from .conftest import START, FlakyStore, WallClock

pytestmark = pytest.mark.anyio

ASK = Request.create(model="gpt-4o-mini", user="hello there", max_output_tokens=100)
USAGE = Usage(input_tokens=6, output_tokens=20)
HOUR = llmguard.Window.fixed(3600)


def guard_on(store: object, *limits: Limit, **options: object) -> tuple[Guard, FakeProvider]:
    fake = FakeProvider(default=FakeReply.of_text("ok", usage=USAGE))
    budget = Budget(*limits, store=store, **options)  # type: ignore[arg-type]
    return Guard(fake, [budget], model="gpt-4o-mini"), fake


async def test_closed_refuses_while_the_store_is_down() -> None:
    store = FlakyStore(WallClock())
    guard, fake = guard_on(store, Limit(tokens=1000, per="hour", name="t"))
    store.down = True
    with pytest.raises(StoreUnavailable) as refused:
        await guard.complete(ASK)
    assert "on_store_error='closed'" in str(refused.value)
    assert isinstance(refused.value.__cause__, StoreUnavailable)
    assert fake.requests == []
    store.down = False
    await guard.complete(ASK)  # the next call after the outage goes through
    result = await store.inner.usage(ledger_key("t", "tokens", "global"), window=HOUR)
    assert result.used == 26


async def test_closed_releases_what_it_reserved_when_a_later_line_fails() -> None:
    store = FlakyStore(WallClock())
    guard, _fake = guard_on(
        store, Limit(tokens=1000, per="hour", name="a"), Limit(tokens=1000, per="hour", name="b")
    )
    original = store.reserve

    async def second_fails(key: str, *args: object, **kwargs: object) -> llmguard.LedgerResult:
        if key.startswith("budget:b:"):
            raise StoreUnavailable("FlakyStore", "line b is down")
        return await original(key, *args, **kwargs)  # type: ignore[arg-type]

    store.reserve = second_fails  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        await guard.complete(ASK)
    result = await store.inner.usage(ledger_key("a", "tokens", "global"), window=HOUR)
    assert (result.used, result.reserved) == (0, 0)


async def test_open_lets_calls_through_and_warns_once_per_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyStore(WallClock())
    guard, fake = guard_on(store, Limit(tokens=1000, per="hour", name="t"), on_store_error="open")
    store.down = True
    with caplog.at_level(logging.INFO, logger="llmguard.budget"):
        for _ in range(5):
            assert (await guard.complete(ASK)).text == "ok"
        store.down = False
        await guard.complete(ASK)
        store.down = True
        await guard.complete(ASK)
    messages = [r.getMessage() for r in caplog.records]
    down = [m for m in messages if "unavailable" in m]
    assert len(down) == 2  # one per outage, not one per call
    assert any("answers again" in m for m in messages)
    assert len(fake.requests) == 7
    # While it answered, the call was counted.
    store.down = False
    result = await store.inner.usage(ledger_key("t", "tokens", "global"), window=HOUR)
    assert result.used == 26


async def test_open_still_refuses_what_does_not_fit_while_the_store_answers() -> None:
    store = FlakyStore(WallClock())
    guard, _ = guard_on(store, Limit(tokens=10, per="hour", name="t"), on_store_error="open")
    with pytest.raises(BudgetExceeded):
        await guard.complete(ASK)


async def test_a_store_down_at_settle_time_does_not_fail_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyStore(WallClock())
    fake = FakeProvider()

    async def answer(request: Request) -> llmguard.Response:
        store.down = True  # goes down while the call runs
        return llmguard.Response(text="ok", usage=USAGE)

    budget = Budget(Limit(tokens=1000, per="hour", name="t"), store=store)
    guard = Guard(llmguard.FunctionProvider(answer), [budget], model="gpt-4o-mini")
    with caplog.at_level(logging.WARNING, logger="llmguard.budget"):
        response = await guard.complete(ASK)
    assert response.text == "ok"
    assert any("could not settle 26" in r.getMessage() for r in caplog.records)
    assert fake.requests == []


async def test_closed_refuses_a_retry_when_the_store_went_down() -> None:
    store = FlakyStore(WallClock())
    calls = 0

    async def flaky(request: Request) -> llmguard.Response:
        nonlocal calls
        calls += 1
        store.down = True
        raise llmguard.ProviderError("boom", status_code=500)

    class Twice(llmguard.BaseLayer):
        async def complete(
            self, request: Request, call_next: llmguard.Handler
        ) -> llmguard.Response:
            try:
                return await call_next(request)
            except llmguard.ProviderError:
                return await call_next(request)

    budget = Budget(Limit(tokens=1000, per="hour", name="t"), store=store)
    guard = Guard(llmguard.FunctionProvider(flaky), [budget, Twice()], model="m")
    with pytest.raises(StoreUnavailable):
        await guard.complete(ASK)
    assert calls == 1

    store.down = False
    open_budget = Budget(
        Limit(tokens=1000, per="hour", name="o"), store=store, on_store_error="open"
    )
    calls = 0
    guard = Guard(llmguard.FunctionProvider(flaky), [open_budget, Twice()], model="m")
    with pytest.raises(llmguard.ProviderError):
        await guard.complete(ASK)
    assert calls == 2  # the retry went on without its extension


# -- alerts ----------------------------------------------------------------------------


async def test_alerts_fire_once_per_threshold_and_window(caplog: pytest.LogCaptureFixture) -> None:
    clock = WallClock()
    store = MemoryStore(clock=clock)
    alerts: list[BudgetAlert] = []

    async def on_alert(alert: BudgetAlert) -> None:
        alerts.append(alert)

    limit = Limit(tokens=130, per="hour", name="t", alerts=(0.4, 0.8))  # 26 a call
    guard, _ = guard_on(store, limit, on_alert=on_alert, max_output_tokens=10)
    request = Request.create(model="gpt-4o-mini", user="hello there", max_output_tokens=10)
    with caplog.at_level(logging.WARNING, logger="llmguard.budget"):
        for _ in range(4):
            await guard.complete(request)  # 26, 52 (40 %), 78, 104 (80 %)
    assert [(a.threshold, a.used, a.refused) for a in alerts] == [
        (0.4, 52, False),
        (0.8, 104, False),
    ]
    assert alerts[0].reset_at is not None and alerts[0].reset_at.timestamp() == START + 3600
    assert (alerts[0].name, alerts[0].scope, alerts[0].unit, alerts[0].limit) == (
        "t",
        "global",
        "tokens",
        130,
    )
    assert len([r for r in caplog.records if "reached" in r.getMessage()]) == 2
    clock.advance(3600)  # the next window alerts again
    for _ in range(2):
        await guard.complete(request)
    assert [a.threshold for a in alerts] == [0.4, 0.8, 0.4]


async def test_a_refusal_alerts_as_reaching_the_limit() -> None:
    store = MemoryStore(clock=WallClock())
    alerts: list[BudgetAlert] = []

    async def on_alert(alert: BudgetAlert) -> None:
        alerts.append(alert)

    guard, _ = guard_on(
        store, Limit(tokens=50, per="hour", name="t", alerts=(0.9, 1.0)), on_alert=on_alert
    )
    for _ in range(2):
        with pytest.raises(BudgetExceeded):
            await guard.complete(ASK)
    assert [(a.threshold, a.refused, a.used) for a in alerts] == [(0.9, True, 0), (1.0, True, 0)]


async def test_alerts_are_once_across_workers_sharing_a_store() -> None:
    store = MemoryStore(clock=WallClock())
    alerts: list[BudgetAlert] = []

    async def on_alert(alert: BudgetAlert) -> None:
        alerts.append(alert)

    limit = Limit(tokens=200, per="hour", name="t", alerts=(0.5,))
    workers = [guard_on(store, limit, on_alert=on_alert, max_output_tokens=10)[0] for _ in range(3)]
    request = Request.create(model="gpt-4o-mini", user="hello there", max_output_tokens=10)
    for worker in workers * 2:
        await worker.complete(request)
    assert len(alerts) == 1


async def test_a_failing_or_slow_alert_hook_does_not_fail_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(alert: BudgetAlert) -> None:
        raise RuntimeError("pager is down")

    store = MemoryStore(clock=WallClock())
    guard, _ = guard_on(
        store, Limit(tokens=1000, per="hour", name="t", alerts=(0.01,)), on_alert=broken
    )
    with caplog.at_level(logging.ERROR, logger="llmguard.budget"):
        assert (await guard.complete(ASK)).text == "ok"
    assert any("alert hook raised" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "anyio_backend",
    [("trio", {"clock": __import__("trio.testing").testing.MockClock(autojump_threshold=0)})],
)
async def test_a_slow_alert_hook_is_cut_off(caplog: pytest.LogCaptureFixture) -> None:
    import anyio

    async def slow(alert: BudgetAlert) -> None:
        await anyio.sleep(60)

    store = MemoryStore(clock=WallClock())
    budget = Budget(
        Limit(tokens=1000, per="hour", name="t", alerts=(0.01,)),
        store=store,
        on_alert=slow,
        pricing=llmguard.Pricing(database=False),
        input_tokens="heuristic",
    )
    guard = Guard(
        FakeProvider(default=FakeReply.of_text("ok", usage=USAGE)),
        [budget],
        model="m",
        timeout=None,
    )
    start = anyio.current_time()
    with caplog.at_level(logging.WARNING, logger="llmguard.budget"):
        await guard.complete(ASK)
    assert anyio.current_time() - start == pytest.approx(5.0)
    assert any("took over 5s" in r.getMessage() for r in caplog.records)


# -- a real Redis client against a Redis that is not there ------------------------------


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # RedisStore runs on asyncio only
async def test_a_redis_that_is_down_under_both_policies(caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("redis")
    from llmguard import RedisStore

    down = RedisStore.from_url("redis://127.0.0.1:1/0", timeout=0.2)  # nothing listens there
    fake = FakeProvider(default=FakeReply.of_text("ok", usage=USAGE))
    closed = Guard(fake, [Budget(Limit(tokens=1000, per="hour"), store=down)], model="gpt-4o-mini")
    with pytest.raises(StoreUnavailable):
        await closed.complete(ASK)
    assert fake.requests == []
    opened = Guard(
        fake,
        [Budget(Limit(tokens=1000, per="hour"), store=down, on_store_error="open")],
        model="gpt-4o-mini",
    )
    with caplog.at_level(logging.WARNING, logger="llmguard.budget"):
        for _ in range(3):
            assert (await opened.complete(ASK)).text == "ok"
    assert len([r for r in caplog.records if r.name == "llmguard.budget"]) == 1
    await down.aclose()


# -- the service tier from a real OpenAI response ---------------------------------------


async def test_the_service_tier_of_an_openai_response_prices_the_call() -> None:
    import json

    from llmguard import OpenAIProvider, Pricing
    from llmguard.testing import FakeOpenAIEndpoint, WireReply

    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-5-2025-08-07",
        "service_tier": "flex",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Paris."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500},
    }
    endpoint = FakeOpenAIEndpoint(
        [WireReply.raw(200, headers={"content-type": "application/json"}, body=json.dumps(body))]
    )
    provider = OpenAIProvider(endpoint.async_client())
    guard = Guard(provider, [Budget(Limit(usd="1", per="day"), store=MemoryStore())], model="gpt-5")
    response = await guard.complete(Request.create(model="gpt-5", user="Capital of France?"))
    usage = Usage(input_tokens=1000, output_tokens=500)
    flex = Pricing().cost_micros("gpt-5", usage, provider="openai", service_tier="flex")
    standard = Pricing().cost_micros("gpt-5", usage, provider="openai")
    assert response.cost_micros == flex
    assert flex is not None and standard is not None and flex < standard


# -- the index the report reads ---------------------------------------------------------


async def test_concurrent_new_scopes_from_several_workers_are_all_listed() -> None:
    import anyio

    store = MemoryStore(clock=WallClock())
    limit = Limit(tokens=10_000, per="hour", scope="user", name="per-user")
    workers = [guard_on(store, limit)[0] for _ in range(3)]

    async def call(index: int) -> None:
        with llmguard.context(user=f"user{index:02d}"):
            await workers[index % 3].complete(ASK)

    async with anyio.create_task_group() as tg:
        for index in range(30):
            tg.start_soon(call, index)
    report = await llmguard.budget_report(store)
    assert [s.scope for s in report] == [f"user=user{i:02d}" for i in range(30)]
    assert all(s.used == 26 for s in report)


async def test_the_index_keeps_the_latest_scopes(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmguard import _budget_index

    monkeypatch.setattr(_budget_index, "MAX_SCOPES", 3)
    store = MemoryStore(clock=WallClock())
    guard, _ = guard_on(store, Limit(tokens=10_000, per="hour", scope="user", name="u"))
    for name in ("a", "b", "c", "d"):
        with llmguard.context(user=name):
            await guard.complete(ASK)
    assert [s.scope for s in await llmguard.budget_report(store)] == ["user=b", "user=c", "user=d"]
    assert await llmguard.budget_report(llmguard.MemoryStore()) == []


@pytest.mark.parametrize(
    "anyio_backend",
    [("trio", {"clock": __import__("trio.testing").testing.MockClock(autojump_threshold=0)})],
)
async def test_a_settle_that_hangs_is_abandoned_after_its_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import anyio

    class HangingSettle(FlakyStore):
        async def settle(self, *args: object, **kwargs: object) -> llmguard.LedgerResult:
            await anyio.sleep(3600)
            raise AssertionError("never")

    store = HangingSettle(WallClock())
    budget = Budget(
        Limit(tokens=1000, per="hour", name="t"),
        store=store,
        pricing=llmguard.Pricing(database=False),
        input_tokens="heuristic",
    )
    guard = Guard(
        FakeProvider(default=FakeReply.of_text("ok", usage=USAGE)),
        [budget],
        model="m",
        timeout=None,
    )
    start = anyio.current_time()
    with caplog.at_level(logging.WARNING, logger="llmguard.budget"):
        assert (await guard.complete(ASK)).text == "ok"
    assert anyio.current_time() - start == pytest.approx(10.0)
    assert any("was abandoned" in r.getMessage() for r in caplog.records)


async def test_an_index_writer_cancelled_mid_write_leaves_the_entries_to_a_later_call() -> None:
    """The writer of the budget index is cancelled while its compare-and-set waits: the
    entry it carried, and one another call queued for it meanwhile, are not forgotten as
    already seen: the next writer (any new scope, or their own next call) writes them."""
    import anyio

    from llmguard._budget_index import IndexKeeper
    from llmguard._budget_limits import Line

    class SlowStore(MemoryStore):
        def __init__(self) -> None:
            super().__init__(clock=WallClock())
            self.hold = True
            self.waiting = anyio.Event()

        async def compare_and_set(self, *args: object, **kwargs: object) -> bool:
            if self.hold:
                self.waiting.set()
                await anyio.sleep_forever()
            return await super().compare_and_set(*args, **kwargs)  # type: ignore[arg-type]

    store = SlowStore()
    keeper = IndexKeeper(store)
    line = Line(Limit(tokens=100, per="hour", scope="user", name="u"), "tokens", 100)
    async with anyio.create_task_group() as tg:
        tg.start_soon(keeper.remember, line, "user=a")
        await store.waiting.wait()
        await keeper.remember(line, "user=b")  # queued for the writer, which returns
        assert keeper.knows(line, "user=b")
        tg.cancel_scope.cancel()
    assert not keeper.knows(line, "user=a") and not keeper.knows(line, "user=b")
    store.hold = False
    await keeper.remember(line, "user=c")  # a new scope's writer takes them along
    assert [s.scope for s in await llmguard.budget_report(store)] == ["user=a", "user=b", "user=c"]
    assert keeper.knows(line, "user=a") and keeper.knows(line, "user=b")

"""The ``Cache`` layer: hits, misses, what is stored, TTLs, per-call options, records."""

from __future__ import annotations

import logging
import random
from typing import Any

import anyio
import pytest

import llmguard
from llmguard import (
    Cache,
    ConfigurationError,
    Finish,
    FunctionProvider,
    Guard,
    MemoryStore,
    Observe,
    RefusalDelta,
    Request,
    Response,
    StoreUnavailable,
    TextDelta,
    Usage,
    UsageUpdate,
    cache_options,
)
from llmguard._cache_codec import CachedAnswer, decode_answer, encode_answer
from llmguard.testing import FakeProvider, FakeReply, capture_records

pytestmark = pytest.mark.anyio


class Clock:
    """A wall clock for ``MemoryStore`` that moves only when told."""

    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def guarded(fake: FakeProvider, cache: Cache | None = None) -> Guard:
    return Guard(fake, [Observe(), cache or Cache()], model="m")


async def test_a_repeated_request_is_a_hit_that_costs_nothing() -> None:
    fake = FakeProvider(
        default=FakeReply.of_text("Paris.", usage=Usage(input_tokens=9, output_tokens=2))
    )
    guard = guarded(fake)
    with capture_records() as records:
        first = await guard.complete(user="Capital of France?")
        second = await guard.complete(user="Capital of France?")
    assert len(fake.requests) == 1
    assert (first.cached, second.cached) == (False, True)
    assert second.text == first.text == "Paris."
    assert second.cost_micros == 0
    assert second.usage == first.usage  # the original call's usage, for reference
    miss, hit = records
    assert (miss.cache, miss.attempts, miss.usage.total_tokens) == ("miss", 1, 11)
    assert (hit.cache, hit.attempts, hit.usage.total_tokens, hit.cost_micros) == ("hit", 0, 0, 0)


async def test_different_requests_do_not_share_answers() -> None:
    fake = FakeProvider()
    fake.when("France").reply("Paris.")
    fake.when("Spain").reply("Madrid.")
    guard = guarded(fake)
    assert (await guard.complete(user="France?")).text == "Paris."
    assert (await guard.complete(user="Spain?")).text == "Madrid."
    assert (await guard.complete(user="France?")).text == "Paris."
    assert (await guard.complete(user="France?", temperature=0)).cached is False
    assert len(fake.requests) == 3


async def test_answers_expire_after_the_ttl_and_per_call_ttl_wins() -> None:
    clock = Clock()
    fake = FakeProvider(default="answer")
    guard = guarded(fake, Cache(MemoryStore(clock=clock), ttl=60))
    await guard.complete(user="q")
    clock.t += 59
    assert (await guard.complete(user="q")).cached
    clock.t += 2
    assert not (await guard.complete(user="q")).cached
    with cache_options(ttl=5):
        await guard.complete(user="other")
    clock.t += 6
    assert not (await guard.complete(user="other")).cached
    with cache_options(ttl=None):
        await guard.complete(user="forever")
    clock.t += 10**6
    assert (await guard.complete(user="forever")).cached
    assert len(fake.requests) == 5


async def test_cache_options_bypass_and_refresh() -> None:
    fake = FakeProvider(["one", "two", "three", "four"])
    guard = guarded(fake)
    with capture_records() as records:
        assert (await guard.complete(user="q")).text == "one"
        with cache_options(enabled=False):
            assert (await guard.complete(user="q")).text == "two"
            with cache_options(refresh=True):  # nested: still disabled
                assert (await guard.complete(user="q")).text == "three"
        assert (await guard.complete(user="q")).text == "one"  # bypass stored nothing
        with cache_options(refresh=True):
            assert (await guard.complete(user="q")).text == "four"
        assert (await guard.complete(user="q")).text == "four"
    assert [r.cache for r in records] == ["miss", "bypass", "bypass", "hit", "refresh", "hit"]


async def test_cache_options_reach_guard_sync_calls() -> None:
    fake = FakeProvider(["one", "two"])
    guard = guarded(fake)

    def blocking() -> list[str]:
        texts = [guard.sync.complete(user="q").text]
        with cache_options(refresh=True):
            texts.append(guard.sync.complete(user="q").text)
        texts.append(guard.sync.complete(user="q").text)
        with cache_options(enabled=False), guard.sync.stream(user="q") as events:
            assert list(events)  # "two" is cached; a bypass goes upstream: script used up
        return texts

    fake.default = FakeReply.of_text("three")
    try:
        texts = await anyio.to_thread.run_sync(blocking)
    finally:
        guard.sync.close()
    assert texts == ["one", "two", "two"]
    assert len(fake.requests) == 3


def test_cache_options_refuse_a_bad_ttl() -> None:
    with pytest.raises(ConfigurationError), cache_options(ttl=0):
        pass


async def test_incomplete_answers_refusals_and_errors_are_not_stored() -> None:
    fake = FakeProvider(
        [
            FakeReply.of_text("cut sh", finish_reason="length"),
            FakeReply.of_text("whole", finish_reason="length"),
            FakeReply.refused("no"),
            FakeReply.server_error(503),
        ],
        default="fine",
    )
    guard = guarded(fake)
    assert not (await guard.complete(user="q")).cached
    assert not (await guard.complete(user="q")).cached
    assert (await guard.complete(user="r")).refusal == "no"
    with pytest.raises(llmguard.ProviderError):
        await guard.complete(user="e")
    assert not (await guard.complete(user="r")).cached
    assert not (await guard.complete(user="e")).cached
    assert len(fake.requests) == 6


async def test_store_if_decides_what_is_stored() -> None:
    fake = FakeProvider([FakeReply.of_text("long", finish_reason="length")], default="x")
    guard = guarded(fake, Cache(store_if=lambda response: True))
    await guard.complete(user="q")
    assert (await guard.complete(user="q")).text == "long"
    assert len(fake.requests) == 1


async def test_sampled_requests_can_be_left_uncached() -> None:
    fake = FakeProvider(default="x")
    guard = guarded(fake, Cache(cache_sampled=False))
    with capture_records() as records:
        for temperature in (0.7, 0.7, None, None, 0, 0):
            await guard.complete(
                user="q", **({} if temperature is None else {"temperature": temperature})
            )
    assert [r.cache for r in records] == ["bypass", "bypass", "bypass", "bypass", "miss", "hit"]


async def test_values_over_the_size_limit_are_not_stored() -> None:
    fake = FakeProvider(["x" * 2000, "y" * 2000, "short"], default="z")
    guard = guarded(fake, Cache(max_value_bytes=1000))
    await guard.complete(user="big")
    assert (await guard.complete(user="big")).text == "y" * 2000
    await guard.complete(user="small")
    assert (await guard.complete(user="small")).cached


async def test_scope_user_keeps_users_apart_and_skips_anonymous_calls() -> None:
    async def answer(request: Request) -> Response:
        ctx = llmguard.current_context()
        return Response(text=f"for {ctx.tenant}/{ctx.user}", finish_reason="stop")

    calls: list[str] = []

    async def counted(request: Request) -> Response:
        calls.append(request.last_user_text)
        return await answer(request)

    guard = Guard(FunctionProvider(counted), [Observe(), Cache(scope="user")], model="m")
    with capture_records() as records:
        for tenant, user in [("a", "u1"), ("b", "u1"), ("a", "u2"), ("a", "u1"), ("b", "u1")]:
            with llmguard.context(tenant=tenant, user=user):
                assert (await guard.complete(user="q")).text == f"for {tenant}/{user}"
        await guard.complete(user="q")  # no user: not cached
        await guard.complete(user="q")
    assert [r.cache for r in records] == ["miss", "miss", "miss", "hit", "hit", "bypass", "bypass"]
    assert len(calls) == 5


async def test_scope_function() -> None:
    fake = FakeProvider(default="x")
    guard = guarded(fake, Cache(scope=lambda ctx: ctx.endpoint))
    for endpoint in ("/a", "/a", "/b", None):
        with llmguard.context(endpoint=endpoint):
            await guard.complete(user="q")
    assert len(fake.requests) == 3


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # keys do not depend on the loop
async def test_ten_thousand_mixed_tenant_requests_never_cross_tenants() -> None:
    async def answer(request: Request) -> Response:
        tenant = llmguard.current_context().tenant
        return Response(text=f"{tenant}|{request.last_user_text}", finish_reason="stop")

    guard = Guard(FunctionProvider(answer), [Cache(scope="tenant")], model="m", timeout=None)
    tenants = [f"tenant-{i}" for i in range(50)]
    prompts = [f"question {i}" for i in range(20)]
    pairs = [(t, p) for t in tenants for p in prompts] * 10
    random.Random(9).shuffle(pairs)  # identical requests also meet in one batch
    cross = hits = 0

    async def ask(n: int) -> None:
        nonlocal cross, hits
        tenant, prompt = pairs[n]
        with llmguard.context(tenant=tenant, user=f"user-{n % 3}"):
            response = await guard.complete(user=prompt)
        if response.text != f"{tenant}|{prompt}":
            cross += 1
        hits += response.cached

    for batch in range(100):
        async with anyio.create_task_group() as tg:
            for n in range(batch * 100, batch * 100 + 100):
                tg.start_soon(ask, n)
    assert cross == 0
    assert hits == 10_000 - 1000  # every (tenant, prompt) pair missed exactly once


async def test_an_old_or_foreign_entry_is_a_miss_never_a_crash() -> None:
    store = MemoryStore()
    cache = Cache(store)
    fake = FakeProvider(default="fresh")
    guard = guarded(fake, cache)
    request = Request.create(model="m", user="q")
    key = cache.key_for(request, provider="fake")
    assert key is not None
    for stale in (
        b"\x00old-format",
        b'J["a","layout","of","an","older","version"]',
        b"Jnot json",
        b"",
    ):
        await store.set(key, stale, ttl=None)
        assert not (await guard.complete(request)).cached
    assert (await guard.complete(request)).cached  # overwritten with a readable entry


async def test_store_errors_fail_open_with_one_warning_and_recover(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Flaky(MemoryStore):
        down = False
        calls = 0

        async def get(self, key: str) -> bytes | None:
            self.calls += 1
            if self.down:
                raise ConnectionError("refused")
            return await super().get(key)

        async def set(self, key: str, value: bytes, *, ttl: float | None) -> None:
            self.calls += 1
            if self.down:
                raise ConnectionError("refused")
            await super().set(key, value, ttl=ttl)

    store = Flaky()
    now = [0.0]

    class Time:
        def now(self) -> float:
            return now[0]

        async def sleep(self, seconds: float) -> None:
            now[0] += seconds

    fake = FakeProvider(default="x")
    guard = guarded(fake, Cache(store, clock=Time(), store_retry=5))
    caplog.set_level(logging.INFO, logger="llmguard")
    await guard.complete(user="q")
    store.down = True
    with capture_records() as records:
        for _ in range(20):
            assert (await guard.complete(user="q")).text == "x"
    assert {r.cache for r in records} == {"bypass"}
    assert store.calls == 2 + 1  # (read, write) + one failed read; then the store rests
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "uncached" in warnings[0].getMessage()
    store.down = False
    now[0] += 5
    assert (await guard.complete(user="q")).cached  # recovered without a restart
    assert any("answers again" in r.getMessage() for r in caplog.records)
    assert len(fake.requests) == 21


async def test_store_unavailable_is_left_for_the_store_to_warn_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Down(MemoryStore):
        async def get(self, key: str) -> bytes | None:
            raise StoreUnavailable("redis", "did not answer")

    guard = guarded(FakeProvider(default="x"), Cache(Down()))
    caplog.set_level(logging.INFO, logger="llmguard")
    await guard.complete(user="q")
    assert [r.levelno for r in caplog.records if r.name == "llmguard.cache"] == [logging.INFO]


async def test_on_store_error_closed_propagates() -> None:
    class Down(MemoryStore):
        async def get(self, key: str) -> bytes | None:
            raise StoreUnavailable("redis", "did not answer")

    guard = guarded(FakeProvider(default="x"), Cache(Down(), on_store_error="closed"))
    with pytest.raises(StoreUnavailable):
        await guard.complete(user="q")


def test_construction_refuses_misuse() -> None:
    bad: list[dict[str, Any]] = [
        {"ttl": 0},
        {"ttl": -1},
        {"scope": "everyone"},
        {"serializer": "pickle"},
        {"max_value_bytes": 0},
        {"replay_delay": -1},
        {"on_store_error": "maybe"},
        {"lock_ttl": 0},
        {"store_retry": -1},
        {"store": object()},
    ]
    for options in bad:
        with pytest.raises(ConfigurationError):
            Cache(**options)


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
async def test_both_serializers_store_and_read_each_other(serializer: str) -> None:
    store = MemoryStore()
    fake = FakeProvider(default=FakeReply.tool_call("lookup", {"q": "x"}))
    writer = guarded(fake, Cache(store, serializer=serializer))  # type: ignore[arg-type]
    reader = guarded(
        fake, Cache(store, serializer="json" if serializer == "msgpack" else "msgpack")
    )
    first = await writer.complete(user="q")
    again = await reader.complete(user="q")
    assert again.cached and again.tool_calls == first.tool_calls
    assert len(fake.requests) == 1


def test_codec_round_trips_and_rejects_garbage() -> None:
    response = Response(
        text="héllo wörld",
        finish_reason="stop",
        usage=Usage(input_tokens=3, output_tokens=4, cached_input_tokens=1, reasoning_tokens=2),
        model="m",
        provider="p",
        id="r1",
    )
    for serializer in ("json", "msgpack"):
        data = encode_answer(CachedAnswer(response), serializer)  # type: ignore[arg-type]
        decoded = decode_answer(data)
        assert decoded is not None
        assert decoded.response == Response(
            text="héllo wörld",
            finish_reason="stop",
            usage=response.usage,
            model="m",
            provider="p",
            id="r1",
            cached=True,
            cost_micros=0,
        )
        assert decode_answer(data[:-3]) is None
    assert decode_answer(b"M\xc1\xc1") is None
    good = encode_answer(CachedAnswer(response), "msgpack")
    assert decode_answer(good + b"\x00") is None  # msgpack's ExtraData
    assert decode_answer(b"J[1,2]") is None
    assert decode_answer(b'J["t",[],null,[1,1,0,0,false],"m","p",null,[5]]') is None  # bad deltas
    assert decode_answer(b'J["",[],null,[1,1,0,0,false],"m","p",null,null,5]') is None
    assert decode_answer(b'J["",[],null,[1,1,0,0,false],"m","p",null,null,"r","x"]') is None


def test_codec_keeps_a_refusal_and_its_stream() -> None:
    refused = Response(text="", finish_reason="stop", refusal="I can't help with that.")
    events = (
        RefusalDelta(text="I can't "),
        RefusalDelta(text="help with that."),
        UsageUpdate(usage=Usage(input_tokens=1, output_tokens=2)),
        Finish(reason="stop"),
    )
    for serializer in ("json", "msgpack"):
        data = encode_answer(CachedAnswer(refused, events), serializer)  # type: ignore[arg-type]
        decoded = decode_answer(data)
        assert decoded is not None
        assert decoded.response.refusal == "I can't help with that."
        assert decoded.events == events
    # an entry written before refusals were kept (8 fields) still reads
    old = b'J["hi",[],"stop",[1,1,0,0,false],"m","p",null,[2]]'
    decoded = decode_answer(old)
    assert decoded is not None and decoded.response.refusal is None
    assert decoded.events == (TextDelta(text="hi"),)


async def test_a_hit_needs_no_budget() -> None:
    """The cache sits outside the budget: once the budget is spent, cached answers
    still come back, and other calls are refused."""
    from llmguard import Budget, BudgetExceeded, Limit

    fake = FakeProvider(
        default=FakeReply.of_text("x", usage=Usage(input_tokens=40, output_tokens=10))
    )
    budget = Budget(Limit(tokens=100, per="hour"), input_tokens="heuristic", max_output_tokens=10)
    guard = Guard(fake, [Observe(), Cache(), budget], model="m")
    await guard.complete(user="cached question")
    await guard.complete(user="another question")  # 100 of 100 tokens used
    with pytest.raises(BudgetExceeded):
        await guard.complete(user="a third question")
    with capture_records() as records:
        again = await guard.complete(user="cached question")
    assert again.cached and again.cost_micros == 0
    assert (records[0].cache, records[0].attempts) == ("hit", 0)
    assert len(fake.requests) == 2

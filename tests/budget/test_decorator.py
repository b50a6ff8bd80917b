"""``llmguard.budget(...)``: the decorator form, on functions that are not LLM calls."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import pytest

import llmguard
from llmguard import BudgetExceeded, ConfigurationError, Limit, MemoryStore, Pricing, Usage, Window
from llmguard._budget_limits import ledger_key

from .conftest import WallClock

pytestmark = pytest.mark.anyio

HOUR = Window.fixed(3600)


@dataclass(frozen=True)
class Hit:
    doc_id: str


async def test_limits_a_search_by_what_it_returns() -> None:
    store = MemoryStore(clock=WallClock())
    calls: list[str] = []

    @llmguard.budget(10, per="hour", scope="user", reserve=5, usage=len, store=store)
    async def search(query: str, k: int) -> list[Hit]:
        calls.append(query)
        return [Hit(doc_id=f"{query}-{i}") for i in range(k)]

    with llmguard.context(user="alice"):
        assert len(await search("cats", k=3)) == 3  # reserved 5, settled 3
        assert len(await search("dogs", k=4)) == 4  # used 7
        with pytest.raises(BudgetExceeded) as refused:
            await search("owls", k=1)  # 7 + 5 > 10
    assert refused.value.scope == "user/hour:user=alice"
    assert (refused.value.used, refused.value.remaining) == (7, 3)
    assert calls == ["cats", "dogs"]
    with llmguard.context(user="bob"):
        await search("owls", k=1)  # another scope
    result = await store.usage(ledger_key("user/hour", "tokens", "user=alice"), window=HOUR)
    assert (result.used, result.reserved) == (7, 0)


async def test_reserve_can_read_the_arguments_and_usage_can_be_a_usage() -> None:
    store = MemoryStore(clock=WallClock())
    held: list[int] = []

    @llmguard.budget(
        Limit(tokens=1000, per="day", name="embed"),
        reserve=lambda texts: Usage(input_tokens=sum(len(t) for t in texts)),
        usage=lambda vectors: Usage(input_tokens=len(vectors) * 2),
        store=store,
    )
    async def embed(texts: list[str]) -> list[list[float]]:
        result = await store.usage(
            ledger_key("embed", "tokens", "global"), window=Window.fixed(86400)
        )
        held.append(result.reserved)
        return [[0.0] for _ in texts]

    await embed(["abc", "defgh"])
    assert held == [8]
    result = await store.usage(ledger_key("embed", "tokens", "global"), window=Window.fixed(86400))
    assert (result.used, result.reserved) == (4, 0)


async def test_a_call_that_raises_releases_its_reservation() -> None:
    store = MemoryStore(clock=WallClock())

    @llmguard.budget(10, reserve=10, usage=lambda r: 1, store=store)
    async def broken() -> int:
        raise ValueError("the index is down")

    for _ in range(3):  # each would hold the whole budget if it leaked
        with pytest.raises(ValueError, match="index"):
            await broken()
    result = await store.usage(
        ledger_key("global/day", "tokens", "global"), window=Window.fixed(86400)
    )
    assert (result.used, result.reserved) == (0, 0)


async def test_dollar_limits_price_the_usage_as_the_model() -> None:
    store = MemoryStore(clock=WallClock())

    @llmguard.budget(
        Limit(usd="0.01", per="day", name="usd"),
        model="text-embedding-3-small",
        reserve=Usage(input_tokens=100_000),
        usage=lambda n: Usage(input_tokens=n),
        store=store,
    )
    async def embed(n: int) -> int:
        return n

    await embed(50_000)
    expected = Pricing().cost_micros("text-embedding-3-small", Usage(input_tokens=50_000))
    assert expected == 1000  # $0.02 a million tokens
    result = await store.usage(
        ledger_key("usd", "usd_micros", "global"), window=Window.fixed(86400)
    )
    assert result.used == expected
    with pytest.raises(ConfigurationError, match="model="):
        llmguard.budget(Limit(usd=1), reserve=1, usage=len)


async def test_concurrent_calls_never_overspend() -> None:
    store = MemoryStore(clock=WallClock())
    admitted = 0

    @llmguard.budget(100, reserve=7, usage=lambda r: 7, store=store)
    async def work() -> None:
        nonlocal admitted
        admitted += 1
        await anyio.sleep(0.01)

    refused = 0

    async def one() -> None:
        nonlocal refused
        try:
            await work()
        except BudgetExceeded:
            refused += 1

    async with anyio.create_task_group() as tg:
        for _ in range(40):
            tg.start_soon(one)
    assert admitted == 14 and refused == 26


def test_misuse_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        llmguard.budget(Limit(tokens=1), per="hour", reserve=1, usage=len)
    with pytest.raises(ConfigurationError):
        llmguard.budget([], reserve=1, usage=len)
    with pytest.raises(ConfigurationError):
        llmguard.budget(1, reserve=1, usage="len")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        llmguard.budget(1, reserve=-1, usage=len)


async def test_an_extractor_returning_nonsense_is_a_type_error() -> None:
    @llmguard.budget(10, reserve=1, usage=lambda r: "three", store=MemoryStore())  # type: ignore[arg-type, return-value]
    async def f() -> int:
        return 3

    with pytest.raises(TypeError, match="usage"):
        await f()

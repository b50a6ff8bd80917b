from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import anyio
import pytest
from trio.testing import MockClock

import llmguard
from llmguard import ConfigurationError, DeadlineExceeded, Invocation, around, timeout

T = TypeVar("T")


@dataclass
class Hit:
    doc: str
    score: float


@pytest.mark.anyio
async def test_around_wraps_a_non_llm_signature() -> None:
    seen: list[str] = []

    async def log_calls(call: Invocation[T]) -> T:
        seen.append(call.name)
        return await call.proceed()

    @around(log_calls)
    async def search(query: str, k: int = 3) -> list[Hit]:
        """Search the index."""
        return [Hit(doc=f"{query}-{i}", score=1 / (i + 1)) for i in range(k)]

    hits = await search("cats", k=2)
    assert [h.doc for h in hits] == ["cats-0", "cats-1"]
    assert search.__name__ == "search"
    assert search.__doc__ == "Search the index."
    assert seen == ["test_around_wraps_a_non_llm_signature.<locals>.search"]


@pytest.mark.anyio
async def test_advice_may_call_again() -> None:
    calls = 0

    async def twice(call: Invocation[int]) -> int:
        await call.proceed()
        return await call.proceed()

    @around(twice)  # type: ignore[arg-type]
    async def count() -> int:
        nonlocal calls
        calls += 1
        return calls

    assert await count() == 2


@pytest.mark.anyio
async def test_timeout_passes_fast_calls_through() -> None:
    @timeout(10)
    async def search(query: str, k: int) -> list[Hit]:
        return [Hit(doc=query, score=1.0)] * k

    assert len(await search("q", 3)) == 3


@pytest.mark.parametrize("anyio_backend", [("trio", {"clock": MockClock(autojump_threshold=0)})])
@pytest.mark.anyio
async def test_timeout_fires_on_virtual_time() -> None:
    @timeout(2.5)
    async def slow(query: str) -> str:
        await anyio.sleep(100)
        return query  # pragma: no cover

    start = anyio.current_time()
    with pytest.raises(DeadlineExceeded) as info:
        await slow("q")
    assert anyio.current_time() - start == pytest.approx(2.5)
    assert info.value.seconds == 2.5


@pytest.mark.anyio
async def test_the_outermost_decorator_opens_and_finishes_a_call_state() -> None:
    states: list[llmguard.CallState | None] = []

    @timeout(5)
    @timeout(10)
    async def work() -> None:
        states.append(llmguard.current_call())

    await work()
    (state,) = states
    assert state is not None
    assert state.ended_at is not None
    assert llmguard.current_call() is None


@pytest.mark.anyio
async def test_errors_pass_through_the_machinery() -> None:
    @timeout(5)
    async def broken() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        await broken()


def test_misuse_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        timeout(0)
    with pytest.raises(ConfigurationError):
        timeout(1)("not a function")  # type: ignore[arg-type]

"""``@llmguard.cache``: the cache for any ``async def``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio
import pytest

import llmguard
from llmguard import ConfigurationError, JSONCodec, MemoryStore, PydanticCodec, cache_options

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Hit:
    doc_id: str
    score: float


async def test_results_are_cached_by_the_key_function() -> None:
    calls: list[tuple[str, int]] = []

    @llmguard.cache(key=lambda query, k: [query.lower(), k], ttl=60)
    async def search(query: str, k: int) -> list[str]:
        calls.append((query, k))
        return [f"{query}-{i}" for i in range(k)]

    assert await search("Cats", 2) == ["Cats-0", "Cats-1"]
    assert await search("cats", 2) == ["Cats-0", "Cats-1"]  # same key: lower-cased
    assert await search("cats", 3) == ["cats-0", "cats-1", "cats-2"]
    assert calls == [("Cats", 2), ("cats", 3)]
    assert search.__name__ == "search"


async def test_the_default_key_is_the_arguments_and_the_state_says_hit_or_miss() -> None:
    seen: list[str | None] = []

    @llmguard.cache()
    async def answer(question: str, *, lang: str = "en") -> dict[str, str]:
        return {"q": question, "lang": lang}

    @llmguard.timeout(5)
    async def outer(question: str, lang: str) -> dict[str, str]:
        result = await answer(question, lang=lang)
        state = llmguard.current_call()
        seen.append(state.cache if state else None)
        return result

    await outer("a", "en")
    await outer("a", "en")
    await outer("a", "fr")
    assert seen == ["miss", "hit", "miss"]


async def test_typed_values_go_through_pydantic_codec() -> None:
    calls = 0

    @llmguard.cache(codec=PydanticCodec(list[Hit]))
    async def search(query: str) -> list[Hit]:
        nonlocal calls
        calls += 1
        return [Hit(doc_id=query, score=0.5)]

    assert await search("q") == [Hit(doc_id="q", score=0.5)]
    again = await search("q")
    assert again == [Hit(doc_id="q", score=0.5)] and isinstance(again[0], Hit)
    assert calls == 1


async def test_a_value_json_cannot_bring_back_is_returned_uncached_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    @llmguard.cache()
    async def pair(n: int) -> tuple[int, int]:
        nonlocal calls
        calls += 1
        return (n, n)

    with caplog.at_level(logging.WARNING, logger="llmguard.cache"):
        for _ in range(3):
            assert await pair(1) == (1, 1)
    assert calls == 3
    assert len([r for r in caplog.records if "not cached" in r.getMessage()]) == 1


async def test_errors_are_shared_by_concurrent_calls_and_never_stored() -> None:
    calls = 0
    gate = anyio.Event()

    @llmguard.cache()
    async def flaky(q: str) -> str:
        nonlocal calls
        calls += 1
        await gate.wait()
        if calls == 1:
            raise ConnectionError("reset")
        return "ok"

    errors: list[BaseException] = []

    async def one() -> None:
        try:
            await flaky("q")
        except ConnectionError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(one)
        await anyio.wait_all_tasks_blocked()
        gate.set()
    assert calls == 1 and len(errors) == 10
    assert await flaky("q") == "ok"
    assert calls == 2


async def test_a_stampede_makes_one_call_and_each_caller_gets_its_own_copy() -> None:
    calls = 0
    gate = anyio.Event()

    @llmguard.cache()
    async def fetch(q: str) -> list[int]:
        nonlocal calls
        calls += 1
        await gate.wait()
        return [1, 2, 3]

    results: list[list[int]] = []

    async def one() -> None:
        results.append(await fetch("q"))

    async with anyio.create_task_group() as tg:
        for _ in range(100):
            tg.start_soon(one)
        await anyio.wait_all_tasks_blocked()
        gate.set()
    assert calls == 1 and len(results) == 100
    results[0].append(4)
    assert all(r == [1, 2, 3] for r in results[1:])


async def test_options_ttl_scope_and_a_shared_store() -> None:
    now = [1000.0]
    store = MemoryStore(clock=lambda: now[0])
    calls: list[str] = []

    @llmguard.cache(store=store, ttl=10, scope="tenant")
    async def lookup(q: str) -> str:
        calls.append(q)
        return f"{llmguard.current_context().tenant}:{q}"

    with llmguard.context(tenant="a"):
        assert await lookup("x") == "a:x"
        assert await lookup("x") == "a:x"
        with cache_options(refresh=True):
            await lookup("x")
        with cache_options(enabled=False):
            await lookup("x")
    with llmguard.context(tenant="b"):
        assert await lookup("x") == "b:x"
    await lookup("x")  # no tenant: not cached
    await lookup("x")
    assert len(calls) == 6
    now[0] += 11
    with llmguard.context(tenant="a"):
        await lookup("x")
    assert len(calls) == 7


async def test_store_if_and_an_unreadable_entry() -> None:
    calls = 0
    store = MemoryStore()

    @llmguard.cache(store=store, store_if=lambda hits: bool(hits))
    async def search(q: str) -> list[str]:
        nonlocal calls
        calls += 1
        return [] if q == "none" else [q]

    await search("none")
    await search("none")
    assert calls == 2  # empty results were not stored
    await search("x")
    await search("x")
    assert calls == 3


async def test_unkeyable_arguments_are_not_cached() -> None:
    calls = 0

    @llmguard.cache()
    async def use(handle: object) -> int:
        nonlocal calls
        calls += 1
        return 1

    thing = object()
    await use(thing)
    await use(thing)
    assert calls == 2


def test_construction_refuses_misuse() -> None:
    with pytest.raises(ConfigurationError):
        llmguard.cache(ttl=0)
    with pytest.raises(ConfigurationError):
        llmguard.cache(key="query")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        llmguard.cache(codec=object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        llmguard.cache()(42)  # type: ignore[arg-type]

    class Opaque:
        def __init__(self, handle: object) -> None:
            self.handle = handle

    with pytest.raises(ConfigurationError):
        PydanticCodec(Opaque)


def test_json_codec_checks_the_round_trip() -> None:
    codec: JSONCodec[object] = JSONCodec()
    assert codec.decode(codec.encode({"a": [1, 2]})) == {"a": [1, 2]}
    with pytest.raises(ValueError, match="PydanticCodec"):
        codec.encode((1, 2))
    with pytest.raises(TypeError):
        codec.encode(Hit("a", 1.0))

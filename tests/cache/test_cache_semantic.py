"""The semantic tier: near-duplicate prompts, never across models, tools, schemas or
scopes; bounded; expiring; numpy and pure Python alike."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

import llmguard
import llmguard._layers.cache as cache_layer
from llmguard import (
    Cache,
    ConfigurationError,
    Embeddings,
    Guard,
    MemoryStore,
    Observe,
    Semantic,
    TextDelta,
    ToolSpec,
    Usage,
)
from llmguard._semantic import SemanticIndex, numpy_or_none
from llmguard.testing import FakeProvider, ManualClock, capture_records

pytestmark = pytest.mark.anyio

ANGLE = {  # each prompt is a unit vector at this angle (degrees) in a plane
    "What is the capital of France?": 0.0,
    "what's the capital of france": 5.0,  # cos 5° = 0.996
    "Which city is France's capital?": 15.0,  # cos 15° = 0.966
    "Is it going to rain today?": 90.0,
}


async def embed(texts: Sequence[str]) -> list[list[float]]:
    return [[math.cos(math.radians(ANGLE[t])), math.sin(math.radians(ANGLE[t]))] for t in texts]


@pytest.fixture(params=["numpy", "python"])
def index_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run the layer with numpy and with the pure-Python index."""
    if request.param == "python":
        monkeypatch.setattr(cache_layer, "numpy_or_none", lambda: None)
    else:
        assert numpy_or_none() is not None, "numpy is a dev dependency"
    return str(request.param)


def semantic_guard(fake: FakeProvider, **options: Any) -> tuple[Guard, Cache]:
    cache = Cache(
        semantic=Semantic(embed=embed, threshold=options.pop("threshold", 0.99)), **options
    )
    return Guard(fake, [Observe(), cache], model="m"), cache


async def test_a_near_duplicate_is_answered_from_the_cache(index_backend: str) -> None:
    fake = FakeProvider(default="Paris.")
    guard, cache = semantic_guard(fake)
    assert cache._index is not None
    assert (cache._index._np is None) == (index_backend == "python")
    with capture_records() as records:
        await guard.complete(user="What is the capital of France?")
        near = await guard.complete(user="what's the capital of france")
        far = await guard.complete(user="Which city is France's capital?")  # 0.966 < 0.99
    assert near.cached and near.text == "Paris." and near.cost_micros == 0
    assert not far.cached
    assert [r.cache for r in records] == ["miss", "hit", "miss"]
    assert len(fake.requests) == 2


async def test_never_across_models_tools_schemas_history_or_scopes(index_backend: str) -> None:
    fake = FakeProvider(default="answer")
    guard, _ = semantic_guard(fake, scope="tenant")
    prompt, near = "What is the capital of France?", "what's the capital of france"
    with llmguard.context(tenant="a"):
        await guard.complete(user=prompt)
        variants: list[dict[str, Any]] = [
            {"model": "other-model"},
            {"tools": [ToolSpec(name="lookup")]},
            {"response_format": {"type": "json_object"}},
            {"system": "Answer in French."},
            {"temperature": 0.0},
        ]
        for variant in variants:
            assert not (await guard.complete(user=near, **variant)).cached, variant
    with llmguard.context(tenant="b"):
        assert not (await guard.complete(user=near)).cached
    with llmguard.context(tenant="a"):
        assert (await guard.complete(user=near)).cached
    assert len(fake.requests) == 1 + len(variants) + 1


async def test_a_stream_is_replayed_for_a_near_duplicate(index_backend: str) -> None:
    fake = FakeProvider(default="Paris, of course.", chunk_size=4)
    guard, _ = semantic_guard(fake)
    async with guard.stream(user="What is the capital of France?") as events:
        original = [e async for e in events]
    async with guard.stream(user="what's the capital of france") as events:
        replayed = [e async for e in events]
    assert replayed == original and events.response.cached
    assert len([e for e in replayed if isinstance(e, TextDelta)]) == 5
    assert len(fake.requests) == 1


async def test_the_embedding_function_may_return_embeddings(index_backend: str) -> None:
    async def provider_like(texts: Sequence[str]) -> Embeddings:
        return Embeddings(vectors=await embed(texts), model="e", usage=Usage(input_tokens=1))

    fake = FakeProvider(default="Paris.")
    cache = Cache(semantic=Semantic(embed=provider_like, threshold=0.99))
    guard = Guard(fake, [cache], model="m")
    await guard.complete(user="What is the capital of France?")
    assert (await guard.complete(user="what's the capital of france")).cached


async def test_an_embedding_failure_fails_open(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(texts: Sequence[str]) -> list[list[float]]:
        raise ConnectionError("embedding service down")

    fake = FakeProvider(default="x")
    guard = Guard(fake, [Cache(semantic=Semantic(embed=broken))], model="m")
    with caplog.at_level(logging.WARNING, logger="llmguard.cache"):
        await guard.complete(user="q")
        assert (await guard.complete(user="q")).cached  # the exact tier still works
        await guard.complete(user="r")
        await guard.complete(user="s")
    assert len([r for r in caplog.records if "semantic" in r.getMessage()]) == 1


async def test_entries_expire_with_the_answer(index_backend: str) -> None:
    clock = ManualClock(start=1000.0)
    store = MemoryStore(clock=clock.now)
    fake = FakeProvider(default="x")
    guard, cache = semantic_guard(fake, store=store, ttl=60, clock=clock)
    await guard.complete(user="What is the capital of France?")
    clock.advance(61)
    assert not (await guard.complete(user="what's the capital of france")).cached
    assert cache._index is not None and len(cache._index) == 1  # the expired one was dropped


async def test_a_gone_entry_is_dropped_from_the_index(index_backend: str) -> None:
    fake = FakeProvider(default="x")
    guard, cache = semantic_guard(fake)
    await guard.complete(user="What is the capital of France?")
    request = guard.build_request(user="What is the capital of France?")
    key = cache.key_for(request, provider="fake")
    assert key is not None
    await cache.store.delete(key)
    assert not (await guard.complete(user="what's the capital of france")).cached


@pytest.mark.parametrize("use_numpy", [True, False])
def test_the_index_is_bounded_and_ranks_by_similarity(use_numpy: bool) -> None:
    index = SemanticIndex(3, numpy=numpy_or_none() if use_numpy else None)

    def unit(degrees: float) -> list[float]:
        return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]

    for n in range(20):  # grows past the first matrix of 8 rows, and evicts
        index.add("p", f"k{n}", unit(n * 4), expires=math.inf)
    assert len(index) == 3
    assert index.search("p", unit(17 * 4 + 1), 0.9, now=0) == (
        "k17",
        pytest.approx(math.cos(math.radians(1))),
    )
    assert index.search("p", unit(16 * 4), 0.9999, now=0) is None  # evicted
    assert index.search("other", unit(0), 0.1, now=0) is None
    index.add("p", "k19", unit(100), expires=5)  # replaces k19's vector
    assert len(index) == 3
    assert index.search("p", unit(100), 0.99, now=1)[0] == "k19"  # type: ignore[index]
    assert index.search("p", unit(100), 0.99, now=6) is None  # expired
    assert len(index) == 2
    index.remove("p", "k18")
    index.remove("p", "k17")
    index.remove("p", "absent")
    assert len(index) == 0 and not index._partitions


def test_semantic_refuses_misuse() -> None:
    with pytest.raises(ConfigurationError):
        Semantic(embed=embed, threshold=0)
    with pytest.raises(ConfigurationError):
        Semantic(embed=embed, threshold=1.5)
    with pytest.raises(ConfigurationError):
        Semantic(embed=embed, max_entries=0)
    with pytest.raises(ConfigurationError):
        Semantic(embed="not a function")  # type: ignore[arg-type]

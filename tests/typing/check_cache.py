"""Type-checked with ``mypy --strict``: the cache API used as docs/caching.md uses it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import assert_type

import llmguard
from llmguard import Cache, Guard, MemoryStore, PydanticCodec, Response, Semantic, cache_options
from llmguard.testing import FakeProvider


@dataclass(frozen=True)
class Hit:
    doc_id: str


@llmguard.cache(key=lambda query, k: [query, k], ttl=60, codec=PydanticCodec(list[Hit]))
async def search(query: str, k: int) -> list[Hit]:
    return [Hit(doc_id=query)] * k


async def embed(texts: list[str]) -> list[list[float]]:
    return [[1.0, 0.0] for _ in texts]


async def uses_cache() -> None:
    hits = await search("q", 3)
    assert_type(hits, list[Hit])
    # The signature survives the decorator: a wrong argument is an error.
    await search(1, "three")  # type: ignore[arg-type]
    cache = Cache(
        MemoryStore(),
        ttl=600,
        scope="user",
        lock=True,
        semantic=Semantic(embed=embed, threshold=0.97),
        serializer="json",
    )
    guard = Guard(FakeProvider(["hi"]), [cache], model="m")
    with cache_options(refresh=True, ttl=None):
        response = await guard.complete(user="hello")
    assert_type(response, Response)
    key = cache.key_for(guard.build_request(user="hello"), provider="fake")
    assert_type(key, str | None)
    Cache(serializer="pickle")  # type: ignore[arg-type]

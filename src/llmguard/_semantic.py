"""The semantic tier: near-duplicate prompts answered from the cache.

Off unless a ``Cache`` is given ``semantic=Semantic(embed, threshold=...)``. After an
exact miss, the text of the request's last user message is embedded and compared
(cosine similarity) with the prompts of the answers stored earlier *in the same
partition*: everything else about the request (model, every other message, tools,
tool choice, response format, sampling parameters, extras, provider, scope, namespace
and version) must be exactly equal, so an answer never crosses models, tools,
schemas or scopes. The best match at or above ``threshold`` answers, if its entry
is still in the store.

The index lives in the process's memory, bounded by ``max_entries`` (the oldest
entries go first); entries expire with the TTL of the answer they point at. With
numpy installed the comparison is one matrix product per lookup; without it, plain
Python.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ._errors import ConfigurationError

__all__ = ["Semantic", "SemanticIndex", "as_vector", "numpy_or_none"]

Embed = Callable[[list[str]], Awaitable[Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Semantic:
    """How the semantic tier works (see docs/caching.md).

    Args:
        embed: an async function from a list of texts to their vectors, in order: a
            ``list[list[float]]``, or an object with ``.vectors`` such as
            ``OpenAIProvider.embed``'s ``Embeddings``.
        threshold: the cosine similarity at or above which a stored answer is reused
            (0 < threshold <= 1; 0.95 and up for "the same question reworded").
        max_entries: how many prompts the index holds; the oldest go first.
    """

    embed: Embed
    threshold: float = 0.95
    max_entries: int = 10_000

    def __post_init__(self) -> None:
        if not callable(self.embed):
            raise ConfigurationError(f"embed must be an async function, not {self.embed!r}")
        if not 0 < self.threshold <= 1:
            raise ConfigurationError(
                f"threshold must be above 0 and at most 1, not {self.threshold!r}"
            )
        if self.max_entries < 1:
            raise ConfigurationError(f"max_entries must be at least 1, not {self.max_entries!r}")


def numpy_or_none() -> Any:
    """numpy when it is installed, else ``None`` (imported on first use of the tier)."""
    try:
        import numpy
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return numpy


def as_vector(result: Any) -> list[float]:
    """The first vector of what an embed function returned, unit length."""
    vectors = getattr(result, "vectors", result)
    vector = [float(x) for x in vectors[0]]
    norm = math.sqrt(sum(x * x for x in vector))
    if not norm > 0:
        raise ValueError("the embedding is a zero vector")
    return [x / norm for x in vector]


class _Partition:
    """The prompts of one partition: a growing matrix (numpy) or a list of rows."""

    __slots__ = ("expires", "free", "keys", "matrix", "rows", "slot_of")

    def __init__(self) -> None:
        self.keys: list[str | None] = []
        self.expires: list[float] = []
        self.rows: list[list[float]] = []  # pure Python
        self.matrix: Any = None  # numpy
        self.free: list[int] = []
        self.slot_of: dict[str, int] = {}


class SemanticIndex:
    """Unit vectors by partition, each pointing at a cache key; bounded; expiring."""

    __slots__ = ("_np", "_order", "_partitions", "max_entries")

    def __init__(self, max_entries: int, *, numpy: Any = None) -> None:
        self.max_entries = max_entries
        self._np = numpy
        self._partitions: dict[str, _Partition] = {}
        self._order: OrderedDict[tuple[str, str], None] = OrderedDict()  # oldest first

    def __len__(self) -> int:
        return len(self._order)

    def search(
        self, partition: str, vector: list[float], threshold: float, now: float
    ) -> tuple[str, float] | None:
        """The key of the most similar live prompt at or above ``threshold``, and its score."""
        part = self._partitions.get(partition)
        if part is None or not part.slot_of:
            return None
        if self._np is not None:
            scores = part.matrix[: len(part.keys)] @ self._np.asarray(vector, dtype="float32")
            order = self._np.argsort(-scores)
            candidates = ((int(i), float(scores[i])) for i in order)
        else:
            ranked = sorted(
                (
                    (sum(a * b for a, b in zip(row, vector, strict=True)), i)
                    for i, row in enumerate(part.rows)
                ),
                reverse=True,
            )
            candidates = ((i, s) for s, i in ranked)
        for slot, score in candidates:
            if score < threshold:
                return None
            key = part.keys[slot]
            if key is None:
                continue
            if not now < part.expires[slot]:
                self.remove(partition, key)
                continue
            return key, score
        return None

    def add(self, partition: str, key: str, vector: list[float], expires: float) -> None:
        """Index ``vector`` for ``key`` (replacing an earlier one for the same key)."""
        part = self._partitions.get(partition)
        if part is None:
            part = self._partitions[partition] = _Partition()
        if key in part.slot_of:
            self.remove(partition, key)
        slot = part.free.pop() if part.free else len(part.keys)
        if slot == len(part.keys):
            part.keys.append(key)
            part.expires.append(expires)
        else:
            part.keys[slot] = key
            part.expires[slot] = expires
        self._write_row(part, slot, vector)
        part.slot_of[key] = slot
        self._order[(partition, key)] = None
        while len(self._order) > self.max_entries:
            (old_partition, old_key), _ = self._order.popitem(last=False)
            self.remove(old_partition, old_key)

    def _write_row(self, part: _Partition, slot: int, vector: list[float]) -> None:
        np = self._np
        if np is None:
            if slot == len(part.rows):
                part.rows.append(vector)
            else:
                part.rows[slot] = vector
            return
        if part.matrix is None:
            part.matrix = np.zeros((8, len(vector)), dtype="float32")
        elif part.matrix.shape[1] != len(vector):
            raise ValueError("the embedding's length changed")
        if slot >= part.matrix.shape[0]:
            grown = np.zeros((part.matrix.shape[0] * 2, len(vector)), dtype="float32")
            grown[: part.matrix.shape[0]] = part.matrix
            part.matrix = grown
        part.matrix[slot] = vector

    def remove(self, partition: str, key: str) -> None:
        """Forget ``key`` in ``partition`` (no-op when absent)."""
        self._order.pop((partition, key), None)
        part = self._partitions.get(partition)
        if part is None:
            return
        slot = part.slot_of.pop(key, None)
        if slot is None:
            return
        part.keys[slot] = None
        part.free.append(slot)
        if self._np is not None:
            part.matrix[slot] = 0.0
        else:
            part.rows[slot] = [0.0] * len(part.rows[slot])
        if not part.slot_of:
            del self._partitions[partition]

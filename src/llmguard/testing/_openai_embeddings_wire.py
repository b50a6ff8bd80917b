"""Embeddings on the wire: a ``list`` of vectors, as floats or as base64 (little-endian
float32, which the openai SDK asks for by default and decodes itself)."""

from __future__ import annotations

import base64
import hashlib
import math
import random
import struct
from typing import Any

__all__ = ["embeddings_json", "fake_vector"]


def fake_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for ``text``, every value exact in float32
    (so the float and the base64 encodings decode to the same numbers)."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    rng = random.Random(seed)
    raw = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return _as_float32([v / norm for v in raw])


def _as_float32(values: list[float]) -> list[float]:
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))


def embeddings_json(
    vectors: list[list[float]], *, model: str, encoding: str, prompt_tokens: int
) -> dict[str, Any]:
    """A ``list`` of embeddings; ``encoding="base64"`` packs little-endian float32."""
    data = []
    for index, vector in enumerate(vectors):
        embedding: Any = list(vector)
        if encoding == "base64":
            packed = struct.pack(f"<{len(vector)}f", *vector)
            embedding = base64.b64encode(packed).decode("ascii")
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }

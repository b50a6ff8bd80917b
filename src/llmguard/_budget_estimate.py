"""How many input tokens a request will cost, before it is sent.

The budget reserves an attempt's worst case: its input tokens plus the output cap.
Input tokens are counted in one of two ways:

- **tiktoken**, when it is installed *and* the encoding file for the model is
  already in tiktoken's cache (``TIKTOKEN_CACHE_DIR``, else ``DATA_GYM_CACHE_DIR``,
  else ``<tmp>/data-gym-cache``) with the right checksum. llmguard never lets
  tiktoken download a file: a budget must not wait on the network, and many
  production hosts have none. 3 tokens of framing per message are added, as OpenAI
  counts chat messages.
- **the heuristic** otherwise (other models, no tiktoken, no cached file): one token
  per 4 characters of every message's text and tool-call arguments, plus 3 tokens of
  framing per message (``llmguard.estimate_usage``), plus the JSON of the tool specs
  and response format at 4 characters a token.

Whichever is used, the real usage the provider reports is what is charged in the end.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from typing import Any, Literal

import anyio.to_thread

from ._assemble import estimate_tokens
from ._errors import ConfigurationError
from ._types import Request

__all__ = ["InputCounter", "InputEstimator", "tiktoken_cache_path"]

_log = logging.getLogger("llmguard.budget")

InputCounter = Literal["auto", "heuristic"] | Callable[[Request], int]

_BLOBS = "https://openaipublic.blob.core.windows.net/encodings/"
#: encoding -> (the file it loads, that file's sha256), from tiktoken_ext.openai_public.
ENCODING_FILES: dict[str, tuple[str, str]] = {
    "o200k_base": (
        _BLOBS + "o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "o200k_harmony": (
        _BLOBS + "o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "cl100k_base": (
        _BLOBS + "cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "p50k_base": (
        _BLOBS + "p50k_base.tiktoken",
        "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069",
    ),
    "r50k_base": (
        _BLOBS + "r50k_base.tiktoken",
        "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
    ),
}


def tiktoken_cache_path(url: str) -> str | None:
    """Where tiktoken keeps the file downloaded from ``url`` (``None``: caching is off)."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        cache_dir = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        cache_dir = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if cache_dir == "":
        return None
    return os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest())


def _cached_encoder(model: str) -> Any:
    """tiktoken's encoding for ``model`` if it loads without a download, else ``None``."""
    if importlib.util.find_spec("tiktoken") is None:
        return None
    import tiktoken

    try:
        name = tiktoken.encoding_name_for_model(model)
    except KeyError:
        return None
    known = ENCODING_FILES.get(name)
    if known is None:
        return None
    url, sha256 = known
    path = tiktoken_cache_path(url)
    if path is None or not os.path.isfile(path):
        return None
    with open(path, "rb") as file:
        if hashlib.sha256(file.read()).hexdigest() != sha256:
            return None  # tiktoken would delete it and download again
    try:
        return tiktoken.get_encoding(name)
    except Exception:  # pragma: no cover - a tiktoken that changed its cache layout
        _log.warning("llmguard: tiktoken failed to load %s; estimating instead", name)
        return None


def _json_tokens(value: Any) -> int:
    return estimate_tokens(json.dumps(value, default=str, separators=(",", ":")))


def _extra_tokens(request: Request) -> int:
    """The tool specs and response format, at 4 characters a token."""
    extra = 0
    for tool in request.tools:
        extra += estimate_tokens(tool.name) + estimate_tokens(tool.description)
        extra += _json_tokens(dict(tool.parameters))
    if request.response_format is not None:
        extra += _json_tokens(dict(request.response_format))
    return extra


def heuristic_input_tokens(request: Request) -> int:
    """The documented heuristic (see the module docstring)."""
    tokens = 0
    for message in request.messages:
        tokens += 3 + estimate_tokens(message.content or "")
        for call in message.tool_calls:
            tokens += estimate_tokens(call.name) + estimate_tokens(call.arguments)
    return tokens + _extra_tokens(request)


class InputEstimator:
    """Counts a request's input tokens: ``"auto"``, ``"heuristic"`` or your function.

    ``"auto"`` uses tiktoken where it can without a download (see the module), the
    heuristic elsewhere. Which one a model gets is decided once per model, in a worker
    thread (reading the encoding file blocks), by ``await prepare(model)``.
    """

    __slots__ = ("_counter", "_encoders", "_lock")

    def __init__(self, counter: InputCounter = "auto") -> None:
        if counter not in ("auto", "heuristic") and not callable(counter):
            raise ConfigurationError(
                f"input_tokens must be 'auto', 'heuristic' or a function, not {counter!r}"
            )
        self._counter = counter
        self._encoders: dict[str, Any] = {}  # model -> encoding, or None for the heuristic
        self._lock = threading.Lock()

    def ready(self, model: str) -> bool:
        """Whether ``model`` needs no ``prepare`` (already decided, or not ``"auto"``)."""
        return self._counter != "auto" or model in self._encoders

    async def prepare(self, model: str) -> None:
        """Decide, once per model, how its requests are counted."""
        if self._counter != "auto" or model in self._encoders:
            return
        encoder = await anyio.to_thread.run_sync(_cached_encoder, model)
        with self._lock:
            self._encoders[model] = encoder

    def uses_tiktoken(self, model: str) -> bool:
        """Whether requests to ``model`` are counted with tiktoken (after ``prepare``)."""
        return self._encoders.get(model) is not None

    def count(self, request: Request) -> int:
        """The input tokens of ``request``."""
        counter = self._counter
        if callable(counter):
            return max(0, int(counter(request)))
        encoder = self._encoders.get(request.model) if counter == "auto" else None
        if encoder is None:
            return heuristic_input_tokens(request)
        tokens = 0
        for message in request.messages:
            tokens += 3 + len(encoder.encode_ordinary(message.content or ""))
            for call in message.tool_calls:
                tokens += len(encoder.encode_ordinary(call.name + call.arguments))
        return tokens + _extra_tokens(request)

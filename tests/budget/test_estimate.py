"""Input tokens before a call: the heuristic, and tiktoken only when its file is cached."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import socket
from pathlib import Path

import anyio
import pytest

from llmguard import ConfigurationError, Message, Request, ToolCall, ToolSpec, estimate_usage
from llmguard._budget_estimate import (
    ENCODING_FILES,
    InputEstimator,
    heuristic_input_tokens,
    tiktoken_cache_path,
)

pytestmark = pytest.mark.anyio

tiktoken = pytest.importorskip("tiktoken")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("llmguard tried to use the network")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_the_heuristic_is_the_documented_one() -> None:
    request = Request.create(model="m", system="Be brief.", user="What is the capital of France?")
    assert (
        heuristic_input_tokens(request)
        == estimate_usage(request, "").input_tokens
        == (3 + 3) + (3 + 8)
    )
    with_tools = Request(
        model="m",
        messages=(
            Message.assistant(tool_calls=[ToolCall(id="1", name="lookup", arguments='{"q":"x"}')]),
        ),
        tools=(ToolSpec(name="lookup", description="Find a thing", parameters={"type": "object"}),),
        response_format={"type": "json_object"},
    )
    # framing, the call's name and arguments, then tool spec and response format JSON
    assert heuristic_input_tokens(with_tools) == 3 + 2 + 3 + (2 + 3 + 5) + 6


def test_a_counter_function_is_used_as_given() -> None:
    estimator = InputEstimator(lambda request: 42)
    assert estimator.count(Request.create(model="m", user="hi")) == 42
    with pytest.raises(ConfigurationError):
        InputEstimator("exact")  # type: ignore[arg-type]


async def test_not_cached_means_the_heuristic_and_no_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    estimator = InputEstimator("auto")
    await estimator.prepare("gpt-4o")
    assert not estimator.uses_tiktoken("gpt-4o")
    request = Request.create(model="gpt-4o", user="hello there")
    assert estimator.count(request) == heuristic_input_tokens(request)
    assert [p async for p in anyio.Path(tmp_path).iterdir()] == []  # nothing fetched or written


async def test_a_disabled_cache_or_an_unknown_model_means_the_heuristic(
    monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # tiktoken's way to switch its cache off
    estimator = InputEstimator()
    await estimator.prepare("gpt-4o")
    await estimator.prepare("llama-3-70b")
    assert not estimator.uses_tiktoken("gpt-4o") and not estimator.uses_tiktoken("llama-3-70b")


def test_the_cache_path_follows_tiktoken(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url, _ = ENCODING_FILES["o200k_base"]
    key = hashlib.sha1(url.encode()).hexdigest()
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.setenv("DATA_GYM_CACHE_DIR", str(tmp_path))
    assert tiktoken_cache_path(url) == os.path.join(tmp_path, key)
    monkeypatch.delenv("DATA_GYM_CACHE_DIR")
    assert tiktoken_cache_path(url) is not None and tiktoken_cache_path(url).endswith(  # type: ignore[union-attr]
        os.path.join("data-gym-cache", key)
    )
    # Our table of files and checksums is tiktoken's own.
    spec = importlib.util.find_spec("tiktoken_ext.openai_public")
    assert spec is not None and spec.origin is not None
    source = Path(spec.origin).read_text()
    for url, sha256 in ENCODING_FILES.values():
        assert url in source and sha256 in source


def tiny_encoding(ranks: dict[bytes, int]) -> object:
    return tiktoken.Encoding(
        name="o200k_base",
        pat_str=r"\S+|\s+",
        mergeable_ranks=ranks,
        special_tokens={},
    )


async def test_a_cached_file_with_the_right_checksum_means_tiktoken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    """The real file cannot be fetched here, so a tiny one stands in: it sits where
    tiktoken caches o200k_base, our checksum table names its hash, and tiktoken's own
    registry holds the encoding built from it (get_encoding returns that)."""
    ranks = {bytes([b]): b for b in range(256)}
    ranks[b"hello"] = 256
    ranks[b"there"] = 257
    content = b"".join(__import__("base64").b64encode(t) + b" %d\n" % r for t, r in ranks.items())
    url, _ = ENCODING_FILES["o200k_base"]
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    path = tiktoken_cache_path(url)
    assert path is not None
    await anyio.Path(path).write_bytes(content)
    monkeypatch.setitem(ENCODING_FILES, "o200k_base", (url, hashlib.sha256(content).hexdigest()))
    import tiktoken.registry

    monkeypatch.setitem(tiktoken.registry.ENCODINGS, "o200k_base", tiny_encoding(ranks))
    estimator = InputEstimator()
    await estimator.prepare("gpt-4o")
    assert estimator.uses_tiktoken("gpt-4o")
    request = Request.create(model="gpt-4o", user="hello there")
    assert estimator.count(request) == 3 + 3  # framing + "hello", " ", "there"
    assert heuristic_input_tokens(request) == 6
    longer = Request.create(model="gpt-4o", user="hellohellohello there")  # 21 characters
    # No merges in the tiny vocabulary: a word it lacks is one token a byte.
    assert estimator.count(longer) == 3 + 15 + 1 + 1
    assert heuristic_input_tokens(longer) == 3 + 6


async def test_a_cached_file_with_a_wrong_checksum_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    """tiktoken would delete such a file and download it again: llmguard never lets it."""
    url, _ = ENCODING_FILES["cl100k_base"]
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    path = tiktoken_cache_path(url)
    assert path is not None
    await anyio.Path(path).write_bytes(b"not the real file\n")
    estimator = InputEstimator()
    await estimator.prepare("gpt-4")
    assert not estimator.uses_tiktoken("gpt-4")
    assert await anyio.Path(path).read_bytes() == b"not the real file\n"  # left alone

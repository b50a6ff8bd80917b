"""How ``FakeOpenAIEndpoint`` sends a body: a plan (status, headers, chunks, delays,
a failure at the end) and a byte stream that carries it out chunk by chunk and
records how far the client read and whether it closed it early."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

import anyio

from ._openai_log import WireResponse
from ._openai_script import Failure

if TYPE_CHECKING:
    import openai

__all__ = [
    "Plan",
    "Sleep",
    "body_stream_class",
    "cut",
    "http_module_for_sdk",
    "http_module_of",
    "malform",
    "sdk_client",
    "split_sse",
]

Sleep = Callable[[float], Awaitable[object]]


@dataclass(slots=True, kw_only=True)
class Plan:
    """One response to send: status, headers, the body in chunks, and how to send it."""

    status: int
    headers: dict[str, str]
    chunks: list[bytes]
    sse: bool = False
    first_delay: float = 0.0
    chunk_delay: float = 0.0
    hang: bool = False
    failure: Failure | None = None


def split_sse(body: bytes) -> list[bytes]:
    """An SSE body as its events (each with its blank line), rejoining to the same bytes."""
    parts = body.split(b"\n\n")
    chunks = [part + b"\n\n" for part in parts[:-1]]
    if parts[-1]:
        chunks.append(parts[-1])
    return chunks or [body]


def cut(plan: Plan, after: int, *, mid_line: bool) -> None:
    """Keep ``after`` events of a stream (with ``mid_line``, and the first half of the next
    ``data:`` line; a stream with fewer events is cut in its last one); a JSON body is
    cut in half."""
    if not plan.sse:
        body = b"".join(plan.chunks)
        plan.chunks = [body[: len(body) // 2]]
        return
    if mid_line:
        after = max(0, min(after, len(plan.chunks) - 1))
    kept, rest = plan.chunks[:after], plan.chunks[after:]
    if mid_line and rest:
        block = rest[0]
        start = block.find(b"data: ")
        end = block.find(b"\n", start) if start >= 0 else -1
        stop = start + 6 + (end - start - 6) // 2 if end > start >= 0 else len(block) // 2
        kept.append(block[: max(1, stop)])
    plan.chunks = kept


def malform(plan: Plan, after: int) -> None:
    """After ``after`` events, a ``data:`` line that is not JSON (a JSON body: cut short)."""
    if plan.sse:
        plan.chunks = [
            *plan.chunks[:after],
            b'data: {"id": "chatcmpl-fake", "choices": [{"delta": {\n\n',
        ]
    else:
        cut(plan, 0, mid_line=False)


def http_module_of(request: object) -> ModuleType:
    """``httpx2`` or ``httpx``: the library the request object comes from."""
    for klass in type(request).__mro__:
        root = klass.__module__.partition(".")[0]
        if root in ("httpx", "httpx2"):
            return sys.modules[root]
    raise TypeError(
        "FakeOpenAIEndpoint.handler takes an httpx2.Request or an httpx.Request, "
        f"not {type(request)!r}"
    )


def http_module_for_sdk() -> ModuleType:
    """The HTTP library the installed openai SDK is built on: ``httpx2`` from openai
    3.x on, ``httpx`` before."""
    import openai

    major = int(openai.__version__.split(".", 1)[0])
    return importlib.import_module("httpx2" if major >= 3 else "httpx")


def sdk_client(
    transport: Any,
    *,
    api_key: str,
    base_url: str | None,
    max_retries: int = 0,
    timeout: float | None = None,
) -> tuple[openai.AsyncOpenAI, Any]:
    """An ``openai.AsyncOpenAI`` on ``transport``, and the HTTP client under it."""
    import openai

    http = http_module_for_sdk()
    options: dict[str, Any] = {} if timeout is None else {"timeout": http.Timeout(timeout)}
    http_client = http.AsyncClient(transport=transport, **options)
    client = openai.AsyncOpenAI(
        api_key=api_key, base_url=base_url, max_retries=max_retries, http_client=http_client
    )
    return client, http_client


class _Body:
    """A response body sent chunk by chunk, with delays, that records how far the client
    read it and whether it closed it. Mixed into each library's byte-stream bases."""

    def __init__(
        self, plan: Plan, log: WireResponse, sleep: Sleep, http: ModuleType, request: Any
    ) -> None:
        self._plan = plan
        self._log = log
        self._sleep = sleep
        self._http = http
        self._request = request
        self._position = 0

    def _failure(self) -> BaseException | None:
        kind = self._plan.failure
        error: BaseException | None = None
        if kind == "timeout":
            error = self._http.ReadTimeout(
                "fake endpoint: the read timed out", request=self._request
            )
        elif kind == "disconnect":
            message = "peer closed connection without sending complete message body"
            error = self._http.RemoteProtocolError(message, request=self._request)
        return error

    def _next_chunk(self) -> bytes | None:
        """The next chunk, or ``None`` at the end (raising a scripted failure there)."""
        log, chunks = self._log, self._plan.chunks
        if log.closed:
            return None
        if self._position >= len(chunks):
            failure = self._failure()
            if failure is not None:
                raise failure
            return None
        chunk = chunks[self._position]
        self._position += 1
        log.chunks_sent = self._position
        # Handed over in full (the openai 2.x SDK stops reading at [DONE], before EOF).
        log.completed = self._position == len(chunks) and self._plan.failure is None
        return chunk

    def _delay(self) -> float:
        return self._plan.first_delay if self._position == 0 else self._plan.chunk_delay

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        if self._position == 0 and self._plan.hang:
            await anyio.sleep_forever()
        delay = self._delay()
        if delay and self._position < len(self._plan.chunks) and not self._log.closed:
            await self._sleep(delay)
        chunk = self._next_chunk()
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    def __iter__(self) -> Iterator[bytes]:
        if self._plan.hang or self._plan.first_delay or self._plan.chunk_delay:
            raise RuntimeError("FakeOpenAIEndpoint: delays and hangs need an async client")
        while (chunk := self._next_chunk()) is not None:
            yield chunk

    async def aclose(self) -> None:
        self._log.closed = True

    def close(self) -> None:
        self._log.closed = True


_STREAM_CLASSES: dict[str, type[_Body]] = {}


def body_stream_class(http: ModuleType) -> type[_Body]:
    """``_Body`` mixed into ``http``'s ``AsyncByteStream`` and ``SyncByteStream``."""
    name = http.__name__
    if name not in _STREAM_CLASSES:
        bases = (_Body, http.AsyncByteStream, http.SyncByteStream)
        made = type("FakeOpenAIBody", bases, {"__module__": __name__})
        _STREAM_CLASSES[name] = cast(type[_Body], made)
    return _STREAM_CLASSES[name]

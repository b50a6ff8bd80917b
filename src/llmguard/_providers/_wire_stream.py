"""The events of a chat completions stream read straight off the HTTP response.

``LeanEvents`` reads the body piece by piece, decodes its server-sent events
(``_wire_sse``) and maps each chunk to llmguard events (``_wire_chat``), as the SDK
path does: ``[DONE]`` ends the stream (the rest of the body is then read for a short
while so an HTTP/1.1 connection can be reused, as openai 3.x does), an ``error``
payload is an error, and a stream that ends before the model finished is an error.
Every failure becomes the same ``ProviderError`` the SDK path raises.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import anyio
from anyio.lowlevel import checkpoint

from .._errors import LLMGuardError, ProviderConnectionError, ProviderError
from .._types import StreamEvent
from ._openai_chat import ChatStreamState
from ._openai_errors import map_foreign_error, scrub_foreign, stream_error, stream_error_message
from ._wire_chat import chunk_events, loads
from ._wire_sse import SSEDecoder, SSEEvent

__all__ = ["LeanEvents", "close_response"]

_DRAIN_SECONDS = 0.1  # openai 3.x's bound on reading past [DONE]


class LeanEvents:
    """An async iterator of the stream's events; ``aclose`` ends reading."""

    __slots__ = (
        "_bytes",
        "_decoder",
        "_done",
        "_pending",
        "_provider",
        "_response",
        "_secrets",
        "_sse",
        "_state",
        "drained",
    )

    def __init__(self, response: Any, *, provider: str, secrets: tuple[str, ...]) -> None:
        self._response = response
        self._bytes = response.aiter_bytes()
        self._decoder = SSEDecoder()
        self._sse: deque[SSEEvent] = deque()
        self._pending: deque[StreamEvent] = deque()
        self._state = ChatStreamState()
        self._done = False
        self._provider = provider
        self._secrets = secrets
        self.drained = False  # [DONE] was seen: the rest of the body may be read

    def __aiter__(self) -> LeanEvents:
        return self

    async def __anext__(self) -> StreamEvent:
        pending = self._pending
        while not pending:
            if self._done:
                raise StopAsyncIteration
            try:
                sse = self._sse
                if sse:
                    self._take(*sse.popleft())
                elif self._decoder.error is not None:
                    raise self._decoder.error
                else:
                    try:
                        chunk = await self._bytes.__anext__()
                    except StopAsyncIteration:
                        self._decoder.finish()
                        self._end()
                    else:
                        sse.extend(self._decoder.feed(chunk))
            except LLMGuardError:
                self._done = True
                raise
            except Exception as exc:
                self._done = True
                raise self._error(exc) from exc
        return pending.popleft()

    def _take(self, event: str | None, data: str) -> None:
        """One server-sent event, as the SDK's ``AsyncStream`` reads it."""
        if data.startswith("[DONE]"):
            self.drained = True
            self._end()
            return
        payload = loads(data)
        if event is not None and event.startswith("thread."):
            payload = {"data": payload, "event": event}
        elif type(payload) is dict and payload.get("error"):
            error = payload["error"]
            raise stream_error(
                stream_error_message(error), provider=self._provider, secrets=self._secrets
            )
        self._pending.extend(chunk_events(payload, self._state))

    def _end(self) -> None:
        """The stream is over: was the answer whole?"""
        self._done = True
        if not self._state.finished:
            raise ProviderConnectionError("the stream ended before the model finished")

    def _error(self, exc: BaseException) -> ProviderError:
        scrub_foreign(exc, self._secrets)
        return map_foreign_error(
            exc, provider=self._provider, secrets=self._secrets, mid_stream=True
        )

    async def aclose(self) -> None:
        """Stop reading: after ``[DONE]`` (HTTP/1.1), read what is left for a moment so
        the connection can be reused; then close the byte iterator and the response."""
        self._done = True
        await close_response(
            self._response, self._bytes, drain=self.drained and not self._response.is_closed
        )


async def close_response(response: Any, byte_iterator: Any, *, drain: bool) -> None:
    """Close ``response`` and the iterator reading it (shielded from cancellation); with
    ``drain``, first read what is left of an HTTP/1.1 body for at most 0.1 s."""
    try:
        if drain and getattr(response, "http_version", "") == "HTTP/1.1":
            with anyio.move_on_after(_DRAIN_SECONDS):
                async for _ in byte_iterator:
                    await checkpoint()  # the bound holds for a body that is all buffered
    except Exception:  # cleanup never turns a whole answer into an error
        pass
    finally:
        with anyio.CancelScope(shield=True):
            if byte_iterator is not None:
                await byte_iterator.aclose()
            await response.aclose()

"""The ``Layer`` and ``Provider`` protocols and how a stack of layers is composed.

A layer wraps an inner handler. The first layer listed is the outermost. Each layer
has a non-streaming path (``complete``) and a streaming path (``stream``, an async
context manager: entering runs the checks that can refuse, leaving closes the
upstream). Layers await the inner handler directly, so contextvars flow.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from ._types import Request, Response, StreamEvent

__all__ = [
    "BaseLayer",
    "EventStream",
    "Handler",
    "Layer",
    "Provider",
    "StreamHandler",
    "StreamOpener",
]

EventStream = AsyncIterator[StreamEvent]
"""An async iterator of stream events."""

StreamOpener = AbstractAsyncContextManager[EventStream]
"""What a streaming handler returns: ``async with opener as events: ...``."""

Handler = Callable[[Request], Awaitable[Response]]
"""The non-streaming inner call: ``await call_next(request)``."""

StreamHandler = Callable[[Request], StreamOpener]
"""The streaming inner call: ``async with call_next(request) as events``."""


@runtime_checkable
class Provider(Protocol):
    """Turns a ``Request`` into a ``Response`` or into a stream of events.

    ``stream`` returns an async context manager; leaving it must close the upstream
    request, whether the stream ended, the consumer raised, or it was cancelled.
    """

    @property
    def name(self) -> str:
        """A short name for records, e.g. ``"openai"``."""
        ...

    async def complete(self, request: Request) -> Response:
        """Answer the request in one piece."""
        ...

    def stream(self, request: Request) -> StreamOpener:
        """Open a stream of events answering the request."""
        ...


@runtime_checkable
class Layer(Protocol):
    """Wraps a call. May answer itself, call inward (once or again), or elsewhere."""

    async def complete(self, request: Request, call_next: Handler) -> Response:
        """Handle a non-streaming call; ``call_next`` is the next layer inward."""
        ...

    def stream(self, request: Request, call_next: StreamHandler) -> StreamOpener:
        """Handle a streaming call; return an async context manager of events."""
        ...


class BaseLayer:
    """A convenience base: passes both paths through and decorates handlers.

    Subclasses override ``complete`` and/or ``stream``. Any layer (a subclass or
    not) also decorates a plain ``async def (Request) -> Response``::

        @Observe()
        async def ask(request: Request) -> Response: ...
    """

    async def complete(self, request: Request, call_next: Handler) -> Response:
        """Pass the call through unchanged."""
        return await call_next(request)

    def stream(self, request: Request, call_next: StreamHandler) -> StreamOpener:
        """Pass the stream through unchanged."""
        return call_next(request)

    def __call__(self, handler: Handler) -> Handler:
        """Decorate ``handler`` with this layer (and own the call state if none is open)."""
        from ._pipeline import decorate_handler

        return decorate_handler([self], handler)

"""``FunctionProvider``: any ``async def (Request) -> Response`` as a provider."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from .._assemble import events_from_response
from .._errors import ConfigurationError
from .._types import Request, Response, StreamEvent

__all__ = ["FunctionProvider"]

CompleteFunction = Callable[[Request], Awaitable[Response]]
StreamFunction = Callable[[Request], AsyncIterator[StreamEvent]]


class FunctionProvider:
    """Adapts an async function someone already has into a ``Provider``.

    ``complete`` is ``async def (Request) -> Response``. ``stream``, if given, is an
    async generator function ``(Request) -> AsyncIterator[StreamEvent]``; without it,
    a stream call awaits ``complete`` and replays the answer as events.

    >>> async def echo(request: Request) -> Response:
    ...     return Response(text=request.last_user_text)
    >>> provider = FunctionProvider(echo, name="echo")
    """

    __slots__ = ("_complete", "_name", "_stream")

    def __init__(
        self,
        complete: CompleteFunction,
        *,
        stream: StreamFunction | None = None,
        name: str | None = None,
    ) -> None:
        if not callable(complete):
            raise ConfigurationError(
                "FunctionProvider needs an async callable (Request) -> Response"
            )
        self._complete = complete
        self._stream = stream
        self._name = name or getattr(complete, "__name__", None) or "function"

    @property
    def name(self) -> str:
        """The provider's name in records (the function's name unless given)."""
        return self._name

    async def complete(self, request: Request) -> Response:
        """Call the function."""
        return await self._complete(request)

    @asynccontextmanager
    async def stream(self, request: Request) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        """Stream from the stream function, or replay ``complete``'s answer as events."""
        if self._stream is not None:
            generator = self._stream(request)
            try:
                yield generator
            finally:
                aclose = getattr(generator, "aclose", None)
                if aclose is not None:
                    await aclose()
            return
        response = await self._complete(request)
        yield _replay(events_from_response(response))

    def __repr__(self) -> str:
        return f"FunctionProvider({self._name!r})"


async def _replay(events: list[StreamEvent]) -> AsyncIterator[StreamEvent]:
    for event in events:
        yield event

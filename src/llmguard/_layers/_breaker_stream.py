"""The streaming path of ``CircuitBreaker``: admit on entering, count the stream's
outcome (its first event, or its error) when it is left."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from .._layer import EventStream, StreamHandler
from .._types import Request, StreamEvent
from ._circuit import Outcome

if TYPE_CHECKING:
    from .breaker import CircuitBreaker


@asynccontextmanager
async def open_stream(
    breaker: CircuitBreaker, request: Request, call_next: StreamHandler
) -> AsyncIterator[EventStream]:
    """``CircuitBreaker.stream``: refuse on entering while open; count the stream's
    outcome when it is left."""
    ticket = await breaker._admit(breaker._key(request))
    watched: _Watched | None = None
    outcome: Outcome = "neutral"
    try:
        async with call_next(request) as events:
            watched = _Watched(events)
            yield watched
    except BaseException as exc:
        outcome = breaker._outcome(exc)
        raise
    finally:
        if watched is not None and watched.error is not None:
            outcome = breaker._outcome(watched.error)
        elif outcome == "neutral" and watched is not None and watched.seen:
            outcome = "success"
        await breaker._settle(ticket, outcome)


class _Watched:
    """Passes a stream's events through, noting whether one came and any error."""

    __slots__ = ("_events", "error", "seen")

    def __init__(self, events: EventStream) -> None:
        self._events = events
        self.error: BaseException | None = None
        self.seen = False

    def __aiter__(self) -> _Watched:
        return self

    async def __anext__(self) -> StreamEvent:
        try:
            event = await self._events.__anext__()
        except StopAsyncIteration:
            raise
        except BaseException as exc:
            self.error = exc
            raise
        self.seen = True
        return event

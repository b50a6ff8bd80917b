"""A stream whose upstream may be replaced until its first event is delivered.

Retry and Fallback share it: a failure while opening the upstream, or while waiting
for its first event, closes that upstream and asks the layer what to do (wait and
try again, switch to the next target, or give up by raising). Once one event has
been handed to the consumer, the stream is committed: later errors pass through,
because the consumer has already seen part of an answer.
"""

from __future__ import annotations

from collections.abc import Awaitable
from contextlib import suppress
from types import TracebackType

import anyio

from .._layer import EventStream, StreamOpener
from .._types import StreamEvent

__all__ = ["SwitchingStream"]

_CLOSE_GRACE_S = 5.0  # bound on closing an upstream that failed


class SwitchingStream:
    """An async context manager of events that can switch upstream before the first event.

    Subclasses say how to open the current candidate (``_open``) and what to do after a
    failure (``_recover``: prepare the next candidate, or raise to give up).
    """

    __slots__ = ("_events", "_opener", "_started")

    def __init__(self) -> None:
        self._opener: StreamOpener | None = None
        self._events: EventStream | None = None
        self._started = False

    async def _open(self) -> tuple[StreamOpener, EventStream]:
        """Open the current candidate: its opener, entered, and its events."""
        raise NotImplementedError

    async def _recover(self, failure: Exception) -> None:
        """After ``failure`` before the first event: get ready for the next try, or raise."""
        raise NotImplementedError

    async def _read_first(self, events: EventStream) -> StreamEvent:
        """Wait for the first event (a subclass may set a context around it)."""
        return await events.__anext__()

    def _committed(self) -> None:
        """Called once, when the first event is delivered (or the stream ended empty)."""

    async def __aenter__(self) -> SwitchingStream:
        await self._connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        opener, self._opener = self._opener, None
        if opener is None:
            return False
        return bool(await opener.__aexit__(exc_type, exc, tb))

    def __aiter__(self) -> SwitchingStream:
        return self

    def __anext__(self) -> Awaitable[StreamEvent]:
        events = self._events
        assert events is not None, "iterate inside `async with`"
        if self._started:  # committed: hand the upstream's own awaitable over, no frame
            return events.__anext__()
        return self._first(events)

    async def _first(self, events: EventStream) -> StreamEvent:
        while True:
            try:
                event = await self._read_first(events)
            except StopAsyncIteration:
                self._started = True
                self._committed()
                raise
            except Exception as exc:
                failure = exc
            else:
                self._started = True
                self._committed()
                return event
            await self._discard(failure)
            await self._recover(failure)
            await self._connect()
            reopened = self._events
            assert reopened is not None
            events = reopened

    async def _connect(self) -> None:
        while True:
            try:
                self._opener, self._events = await self._open()
                return
            except Exception as exc:
                failure = exc
            await self._recover(failure)

    async def _discard(self, failure: Exception) -> None:
        """Close the upstream that failed before its first event."""
        opener, self._opener = self._opener, None
        self._events = None
        if opener is None:
            return
        # Close it even if this task is cancelled meanwhile, within a bound.
        with anyio.CancelScope(shield=True) as shield, suppress(Exception):
            shield.deadline = anyio.current_time() + _CLOSE_GRACE_S
            await opener.__aexit__(type(failure), failure, failure.__traceback__)

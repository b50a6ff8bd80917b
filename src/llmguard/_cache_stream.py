"""Streams and the cache: record a stream as it passes, replay a stored one."""

from __future__ import annotations

from collections.abc import Sequence

from ._assemble import StreamAssembler, events_from_response
from ._cache_codec import CachedAnswer
from ._clock import Clock
from ._layer import EventStream
from ._types import StreamEvent

__all__ = ["Recording", "Replay", "events_of"]


class Recording:
    """Passes a live stream through, keeping its events; ``complete`` once it ended
    normally (a cut, errored or abandoned stream never is)."""

    __slots__ = ("_events", "complete", "error", "events")

    def __init__(self, events: EventStream) -> None:
        self._events = events
        self.events: list[StreamEvent] = []
        self.complete = False
        self.error: BaseException | None = None

    def __aiter__(self) -> Recording:
        return self

    async def __anext__(self) -> StreamEvent:
        try:
            event = await self._events.__anext__()
        except StopAsyncIteration:
            self.complete = self.error is None
            raise
        except BaseException as exc:
            self.error = exc
            raise
        self.events.append(event)
        return event

    def answer(self, *, model: str, provider: str) -> CachedAnswer:
        """The stream as a stored answer: the response it added up to, and its events."""
        assembler = StreamAssembler(model=model, provider=provider)
        for event in self.events:
            assembler.feed(event)
        return CachedAnswer(assembler.response(), tuple(self.events))


def events_of(answer: CachedAnswer) -> Sequence[StreamEvent]:
    """The events to replay: as the original stream came, or the response in one piece."""
    if answer.events is not None:
        return answer.events
    return events_from_response(answer.response)


class Replay:
    """A stored answer as a stream of events, ``delay`` seconds apart (on ``clock``)."""

    __slots__ = ("_clock", "_delay", "_events", "_next")

    def __init__(self, events: Sequence[StreamEvent], *, clock: Clock, delay: float) -> None:
        self._events = events
        self._clock = clock
        self._delay = delay
        self._next = 0

    def __aiter__(self) -> Replay:
        return self

    async def __anext__(self) -> StreamEvent:
        index = self._next
        if index >= len(self._events):
            raise StopAsyncIteration
        if self._delay and index:
            await self._clock.sleep(self._delay)
        self._next = index + 1
        return self._events[index]

"""``ManualClock``: a clock that a test moves by hand."""

from __future__ import annotations

import heapq
import itertools

import anyio

__all__ = ["ManualClock"]


class ManualClock:
    """A ``Clock`` whose time moves only when told.

    ``sleep(seconds)`` waits until ``advance()`` has moved time past its wake-up
    point. With ``autojump=True`` a sleep moves time forward by itself instead, so
    code that sleeps runs instantly while reading consistent times.

    >>> clock = ManualClock(start=100.0)
    >>> clock.advance(5)
    >>> clock.now()
    105.0
    """

    def __init__(self, start: float = 0.0, *, autojump: bool = False) -> None:
        self._now = float(start)
        self.autojump = autojump
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._counter = itertools.count()

    def now(self) -> float:
        """The current manual time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper that is due."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, event = heapq.heappop(self._sleepers)
            event.set()

    async def sleep(self, seconds: float) -> None:
        """Wait until time has moved ``seconds`` on (``autojump``: move it now)."""
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        if self.autojump:
            self.advance(seconds)
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        entry = (self._now + seconds, next(self._counter), event)
        heapq.heappush(self._sleepers, entry)
        try:
            await event.wait()
        except BaseException:
            if not event.is_set():  # cancelled while waiting: stop counting this sleeper
                self._sleepers.remove(entry)
                heapq.heapify(self._sleepers)
            raise

    @property
    def sleepers(self) -> int:
        """How many tasks are waiting on this clock."""
        return len(self._sleepers)

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now!r}, sleepers={len(self._sleepers)})"

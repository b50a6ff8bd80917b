"""One timer for the bound of every command a ``RedisStore`` has in flight.

A store bounds each command by its ``timeout``, counted from the call. A timer per
command (``anyio.fail_after``, or even ``asyncio.timeout``) costs more than the rest
of a cache hit's own work: it is a scheduled handle, made, pushed on the event loop's
heap and cancelled for every command. Here every command has the same timeout, so
deadlines come in the order commands start: a ``Deadlines`` keeps the commands in
flight in that order and one timer, set for the oldest. When it fires it cancels the
tasks whose deadline passed (their ``leave`` turns that into ``TimeoutError``, as
``asyncio.timeout`` does) and sets itself for the next oldest; a command that ends
first only drops out. So a command costs a dict entry, and the timer fires at most
once per ``timeout`` while commands keep coming.

asyncio only (``RedisStore`` is); one ``Deadlines`` per event loop.
"""

from __future__ import annotations

import asyncio

__all__ = ["Deadline", "Deadlines"]


class Deadline:
    """One command's bound: its task, when it ends, and whether it expired."""

    __slots__ = ("at", "cancelling", "expired", "task")

    def __init__(self, task: asyncio.Task[object], at: float) -> None:
        self.task = task
        self.at = at
        self.cancelling = task.cancelling()  # cancel requests already pending
        self.expired = False


class Deadlines:
    """The bounds of the commands in flight on ``loop``, each ``timeout`` seconds."""

    __slots__ = ("_handle", "_in_flight", "loop", "timeout")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self._in_flight: dict[Deadline, None] = {}  # oldest first: deadlines only grow
        self._handle: asyncio.TimerHandle | None = None

    def enter(self) -> Deadline:
        """Start the bound of the current task's command (call ``leave`` in ``finally``)."""
        task = asyncio.current_task(self.loop)
        if task is None:  # pragma: no cover - RedisStore is always awaited in a task
            raise RuntimeError("a store command must run in an asyncio task")
        deadline = Deadline(task, self.loop.time() + self.timeout)
        self._in_flight[deadline] = None
        if self._handle is None:  # else it fires earlier, for an older command
            self._handle = self.loop.call_at(deadline.at, self._fire)
        return deadline

    def leave(self, deadline: Deadline, error: BaseException | None) -> None:
        """End the bound; raise ``TimeoutError`` if it expired and ``error`` is the
        cancellation it caused (not also someone else's: that one propagates)."""
        self._in_flight.pop(deadline, None)
        if deadline.expired:
            pending = deadline.task.uncancel()  # our own request, as asyncio.timeout does
            if pending <= deadline.cancelling and isinstance(error, asyncio.CancelledError):
                raise TimeoutError from error

    def _fire(self) -> None:
        self._handle = None
        now = self.loop.time()
        in_flight = self._in_flight
        while in_flight:
            deadline = next(iter(in_flight))
            if deadline.at > now:
                self._handle = self.loop.call_at(deadline.at, self._fire)
                return
            del in_flight[deadline]
            deadline.expired = True
            deadline.task.cancel()

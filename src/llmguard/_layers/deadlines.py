"""``Deadlines``: first-token, idle and total deadlines on a stream, per attempt.

Each read of the stream runs in its own cancel scope whose deadline is the nearest
of the deadlines in force: before the first event, the first-token and total ones;
after it, the idle and total ones. When one fires, the upstream request is closed
at once (shielded, bounded) and ``StreamTimeout`` says which deadline fired and
after how long. The idle deadline counts how long one read waits for the next
event, so a stream that produces slowly but steadily is never killed by it, and
time the consumer spends on its own work is never blamed on the upstream.

Deadlines run on the event loop's clock (anyio cancel scopes), so trio's
``MockClock`` drives them in tests. On asyncio a cancel scope with a deadline costs
about twice one without (each arms and disarms a loop timer), so there each read
runs in a scope without a deadline, and one timer per stream, re-armed only when it
fires, cancels the read that overran. Deadlines only move later from read to read,
so that timer fires about once per idle period, not once per event.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, suppress
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, ParamSpec, TypeVar

import anyio

from .._errors import ConfigurationError, DeadlineExceeded, StreamTimeout
from .._layer import BaseLayer, EventStream, Handler, StreamHandler, StreamOpener
from .._timeouts import Bound
from .._types import Request, Response, StreamEvent

__all__ = ["Deadlines", "StreamTimeouts"]

P = ParamSpec("P")
T = TypeVar("T")

_CLOSE_GRACE_S = 5.0  # bound on closing the upstream once a deadline fired


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamTimeouts:
    """The deadlines of one attempt, in seconds; ``None`` switches one off.

    Args:
        total: from opening the stream to its end (for a non-streaming call: the call).
        first_token: from opening the stream to its first event.
        idle: the longest wait for any one event after the first.
    """

    total: float | None = None
    first_token: float | None = None
    idle: float | None = None

    def __post_init__(self) -> None:
        for name in ("total", "first_token", "idle"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and not math.isinf(value)):
                raise ConfigurationError(
                    f"StreamTimeouts.{name} must be a positive number of seconds or None, "
                    f"not {value!r}"
                )
        if self.total is None and self.first_token is None and self.idle is None:
            raise ConfigurationError(
                "StreamTimeouts needs at least one of total=, first_token= or idle="
            )


class Deadlines(BaseLayer):
    """First-token, idle and total deadlines for each attempt; raises ``StreamTimeout``.

    Put it innermost (next to the provider) so each retry or fallback attempt gets
    its own deadlines; the Guard's ``timeout=`` spans the whole call. A
    non-streaming call gets the ``total`` deadline only (``DeadlineExceeded``).

    >>> layer = Deadlines(StreamTimeouts(first_token=10, idle=5, total=120))

    As decorators: ``@layer`` decorates an ``async def (Request) -> Response`` (total
    deadline), and ``@layer.iterator`` any function returning an async iterator
    (all three deadlines; the iterator is closed when one fires).
    """

    __slots__ = ("_bound", "_first", "_idle", "_timeouts", "_total")

    def __init__(self, timeouts: StreamTimeouts) -> None:
        if not isinstance(timeouts, StreamTimeouts):
            raise ConfigurationError(
                f"Deadlines takes a StreamTimeouts(total=, first_token=, idle=), not {timeouts!r}"
            )
        self._timeouts = timeouts
        self._total = timeouts.total
        self._first = timeouts.first_token
        self._idle = timeouts.idle
        self._bound = None if timeouts.total is None else Bound(timeouts.total)

    @property
    def timeouts(self) -> StreamTimeouts:
        """The configured deadlines."""
        return self._timeouts

    async def complete(self, request: Request, call_next: Handler) -> Response:
        """A non-streaming attempt gets the total deadline only."""
        bound = self._bound
        if bound is None:
            return await call_next(request)
        with bound.scope() as scope:
            return await call_next(request)
        assert scope.cancelled_caught
        raise DeadlineExceeded("total", bound.seconds)

    def stream(self, request: Request, call_next: StreamHandler) -> StreamOpener:
        """Open the inner stream under the first-token and total deadlines."""
        return _DeadlineOpener(self, call_next(request))

    def iterator(self, function: Callable[P, AsyncIterator[T]]) -> Callable[P, AsyncIterator[T]]:
        """Decorate any function returning an async iterator (an async generator, say)
        with these deadlines, counted from the first read."""

        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
            source = function(*args, **kwargs)
            timed: _Timed[T] = _Timed(self, source, _closer(source))
            return timed

        return wrapper

    def __repr__(self) -> str:
        t = self._timeouts
        return f"Deadlines(total={t.total!r}, first_token={t.first_token!r}, idle={t.idle!r})"


Closer = Callable[[BaseException], Awaitable[object]]


def _closer(source: object) -> Closer | None:
    aclose = getattr(source, "aclose", None)
    if not callable(aclose):
        return None

    async def close(error: BaseException) -> object:
        return await aclose()

    return close


class _Timed(Generic[T]):
    """An async iterator read under deadlines; ``close`` is awaited when one fires."""

    __slots__ = (
        "_close",
        "_count",
        "_first_at",
        "_layer",
        "_loop",
        "_read_at",
        "_reading",
        "_scope",
        "_source",
        "_started",
        "_time",
        "_timer",
        "_total_at",
    )

    def __init__(
        self,
        layer: Deadlines,
        source: AsyncIterator[T],
        close: Closer | None,
        started: float | None = None,
    ) -> None:
        self._layer = layer
        self._source = source
        self._close = close
        self._count = 0
        self._started = started
        self._first_at = math.inf
        self._total_at = math.inf
        # asyncio only: the loop, the read in flight (its scope and deadline), the timer
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading: anyio.CancelScope | None = None
        self._read_at = math.inf
        self._timer: asyncio.TimerHandle | None = None
        self._time: Callable[[], float] = anyio.current_time
        self._scope: Callable[..., Any] = anyio.CancelScope  # trio: trio's own, below
        if started is not None:
            self._start(started)

    def _start(self, now: float) -> None:
        layer = self._layer
        self._started = now
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:  # trio: a scope with a deadline costs what one without does
            self._loop = None
            import trio  # running: anyio's scope wraps this one and costs half as much again

            self._scope = trio.CancelScope
        else:
            self._time = self._loop.time  # what anyio.current_time reads, without its lookup
        if layer._first is not None:
            self._first_at = now + layer._first
        if layer._total is not None:
            self._total_at = now + layer._total

    def __aiter__(self) -> _Timed[T]:
        return self

    async def __anext__(self) -> T:
        if self._source is None:  # a deadline fired already: the upstream is closed
            raise StopAsyncIteration
        if self._started is None:
            now = anyio.current_time()
            self._start(now)
        else:
            now = self._time()
        layer = self._layer
        if self._count:
            which, at = "total", self._total_at
            if layer._idle is not None and now + layer._idle < at:
                which, at = "idle", now + layer._idle
        else:
            which, at = "first_token", self._first_at
            if self._total_at < at:
                which, at = "total", self._total_at
        if at <= now:
            await self._fire(which, now)
        if self._loop is None:
            with self._scope(deadline=at) as scope:
                item = await self._source.__anext__()
        else:
            scope = self._reading = anyio.CancelScope()
            self._read_at = at
            timer = self._timer
            if timer is None or timer.when() > at:
                self._arm(at)
            try:
                with scope:
                    item = await self._source.__anext__()
            except BaseException:
                self._disarm()
                raise
            finally:
                self._reading = None
        if scope.cancelled_caught:
            await self._fire(which, anyio.current_time())
        self._count += 1
        return item

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        assert self._loop is not None
        self._timer = self._loop.call_at(at, self._on_timer)

    def _disarm(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _on_timer(self) -> None:
        """The stream's timer: cancel the read in flight if it overran, else re-arm
        for its deadline (no read in flight: the next read arms it)."""
        self._timer = None
        reading = self._reading
        if reading is None:
            return
        assert self._loop is not None
        if self._read_at <= self._loop.time():
            reading.cancel()
        else:
            self._arm(self._read_at)

    async def _fire(self, which: str, now: float) -> None:
        layer = self._layer
        seconds = {"total": layer._total, "first_token": layer._first, "idle": layer._idle}[which]
        assert seconds is not None
        assert self._started is not None
        error = StreamTimeout(which, seconds, elapsed=now - self._started, events=self._count)
        self._disarm()
        close, self._close = self._close, None
        self._source = None  # type: ignore[assignment]
        if close is not None:
            await _close_shielded(close, error)
        raise error


async def _close_shielded(close: Closer, error: BaseException) -> None:
    with anyio.CancelScope(shield=True) as shield:
        shield.deadline = anyio.current_time() + _CLOSE_GRACE_S
        with suppress(Exception):  # closing a timed-out stream must not hide the timeout
            await close(error)


class _DeadlineOpener(AbstractAsyncContextManager[EventStream]):
    """Opens the inner stream under the first-token and total deadlines; leaving
    closes it unless a deadline already did."""

    __slots__ = ("_closed", "_inner", "_layer", "_timed")

    def __init__(self, layer: Deadlines, inner: StreamOpener) -> None:
        self._layer = layer
        self._inner = inner
        self._closed = False
        self._timed: _Timed[StreamEvent] | None = None

    async def __aenter__(self) -> EventStream:
        layer = self._layer
        started = anyio.current_time()
        which, at = "first_token", math.inf
        if layer._first is not None:
            at = started + layer._first
        if layer._total is not None and started + layer._total < at:
            which, at = "total", started + layer._total
        with anyio.CancelScope(deadline=at) as scope:
            events = await self._inner.__aenter__()
        if scope.cancelled_caught:  # the inner opener was interrupted while opening
            self._closed = True
            seconds = layer._total if which == "total" else layer._first
            assert seconds is not None
            raise StreamTimeout(which, seconds, elapsed=anyio.current_time() - started)
        timed = self._timed = _Timed(layer, events, self._close_inner, started)
        return timed

    async def _close_inner(self, error: BaseException) -> None:
        if not self._closed:
            self._closed = True
            await self._inner.__aexit__(type(error), error, error.__traceback__)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if self._timed is not None:
            self._timed._disarm()
        if self._closed:
            return None
        self._closed = True
        return await self._inner.__aexit__(exc_type, exc, tb)

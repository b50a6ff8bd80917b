"""``guard.stream``: the guarded stream (``GuardStream``) and its events (``GuardedEvents``).

Entering runs every layer's checks that can refuse and opens the upstream; leaving
always closes it, shielded and bounded. The Guard's total deadline is one cancel scope
held across the whole ``async with`` block, or checked on each read where the reads run
in other tasks than the block (``guard.sync``) or the stream is iterated bare.
"""

from __future__ import annotations

import math
from contextlib import suppress
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from ._assemble import StreamAssembler, estimate_usage
from ._clock import Clock
from ._errors import DeadlineExceeded
from ._fast_init import replace
from ._pipeline import _new_state
from ._state import _CURRENT_CALL, CallState
from ._types import Request, Response, StreamEvent

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ._layer import EventStream, StreamHandler, StreamOpener

__all__ = ["GuardStream", "GuardedEvents", "leave_deadline_scope"]

_CLOSE_GRACE_S = 5.0  # bound on closing an upstream stream while being cancelled


def leave_deadline_scope(scope: anyio.CancelScope | None, in_flight: BaseException | None) -> bool:
    """Exit a deadline scope held open across an ``async with`` block; true when the
    error in flight was that scope's own cancellation (its deadline passed)."""
    if scope is None:
        return False
    if in_flight is None:
        scope.__exit__(None, None, None)
        return False
    return bool(scope.__exit__(type(in_flight), in_flight, in_flight.__traceback__))


class GuardedEvents:
    """The events of a guarded stream; ``response`` is what they added up to so far."""

    __slots__ = ("_assembler", "_deadline", "_events", "_request", "_state", "_timeout")

    def __init__(
        self,
        events: EventStream,
        assembler: StreamAssembler,
        deadline: float,
        timeout: float | None,
        request: Request,
        state: CallState | None = None,
    ) -> None:
        self._state = state  # a cache hit marks the response cached, at zero cost
        self._request = request
        self._events = events
        self._assembler = assembler
        self._deadline = deadline
        self._timeout = timeout  # set only when each read carries the deadline itself

    def __aiter__(self) -> GuardedEvents:
        return self

    async def __anext__(self) -> StreamEvent:
        if self._timeout is None:
            event = await self._events.__anext__()
        else:
            with anyio.CancelScope(deadline=self._deadline) as scope:
                event = await self._events.__anext__()
            if scope.cancelled_caught:
                raise DeadlineExceeded("total", self._timeout)
        self._assembler.feed(event)
        return event

    @property
    def response(self) -> Response:
        """The response the events so far add up to (complete once the stream ended).

        When the provider reported no usage (a cut stream, a server that ignores
        ``include_usage``), ``usage`` is the documented estimate, flagged ``estimated``.
        """
        assembler = self._assembler
        response = assembler.response()
        if assembler.usage is None:
            usage = estimate_usage(self._request, assembler.output_chars())
            response = replace(response, usage=usage)
        state = self._state
        if state is not None and state.cache == "hit":
            response = replace(response, cached=True, cost_micros=0)
        elif state is not None and state.cost_micros is not None:
            response = replace(response, cost_micros=state.cost_micros)  # priced by a Budget
        return response


class GuardStream:
    """``async with guard.stream(...) as events``: entering runs every check that can
    refuse and opens the upstream; leaving always closes it.

    The total deadline covers the whole ``async with`` block: one cancel scope from
    entering to leaving, so code in the block is interrupted too when it passes.
    Iterating bare (``async for event in guard.stream(...)``) also works, but then the
    upstream is closed only when the stream ends or the iterator is garbage collected
    (best-effort: prefer ``async with``), and the deadline is checked on each read.
    """

    __slots__ = (
        "_clock",
        "_events",
        "_handler",
        "_opener",
        "_per_read",
        "_provider",
        "_request",
        "_scope",
        "_state",
        "_timeout",
        "_token",
    )

    def __init__(
        self,
        handler: StreamHandler,
        request: Request,
        *,
        provider: str,
        clock: Clock,
        timeout: float | None,
    ) -> None:
        self._handler = handler
        self._request = request
        self._provider = provider
        self._clock = clock
        self._timeout = timeout
        self._opener: StreamOpener | None = None
        self._events: GuardedEvents | None = None
        self._state: CallState | None = None
        self._scope: anyio.CancelScope | None = None
        self._token: Any = None
        self._per_read = False

    @property
    def request(self) -> Request:
        """The request this stream sends."""
        return self._request

    def _deadline_per_read(self) -> GuardStream:
        """Check the deadline on each read instead of with one scope over the block
        (for readers in other tasks than the one that entered: ``guard.sync``)."""
        self._per_read = True
        return self

    async def __aenter__(self) -> GuardedEvents:
        if self._state is not None:
            raise RuntimeError("a guard.stream(...) can be entered only once")
        state = self._state = _new_state(self._request, self._provider, self._clock, stream=True)
        self._token = _CURRENT_CALL.set(state)
        timeout = self._timeout
        deadline = math.inf if timeout is None else anyio.current_time() + timeout
        scope = anyio.CancelScope(deadline=deadline)
        scope.__enter__()
        try:
            opener = self._handler(self._request)
            events = await opener.__aenter__()
        except BaseException as exc:
            error: BaseException = exc
            if scope.__exit__(type(exc), exc, exc.__traceback__):
                assert timeout is not None
                error = DeadlineExceeded("total", timeout)
            self._end(None, error)
            if error is exc:
                raise
            raise error from None
        if self._per_read:
            scope.__exit__(None, None, None)
        else:
            self._scope = scope
        self._opener = opener
        assembler = StreamAssembler(model=self._request.model, provider=self._provider)
        per_read_timeout = timeout if self._per_read else None
        self._events = GuardedEvents(
            events, assembler, deadline, per_read_timeout, self._request, state
        )
        return self._events

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        opener, self._opener = self._opener, None
        in_flight = exc
        if opener is not None:
            try:
                # Close the upstream even while this task is being cancelled.
                with anyio.CancelScope(shield=True) as shield:
                    shield.deadline = anyio.current_time() + _CLOSE_GRACE_S
                    await opener.__aexit__(exc_type, exc, tb)
            except BaseException as close_exc:
                in_flight = close_exc
        scope, self._scope = self._scope, None
        deadline_hit = leave_deadline_scope(scope, in_flight)
        events = self._events
        response = events.response if events is not None else None
        if deadline_hit:
            assert self._timeout is not None
            error = DeadlineExceeded("total", self._timeout)
            self._end(response, error)
            raise error from None
        self._end(response, in_flight)
        if in_flight is not None and in_flight is not exc:
            raise in_flight
        return False

    def _end(self, response: Response | None, error: BaseException | None) -> None:
        with suppress(ValueError):  # left in another context than it was entered in
            _CURRENT_CALL.reset(self._token)
        assert self._state is not None
        self._state.finish(response, error, now=self._clock.now())

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        async with self._deadline_per_read() as events:
            async for event in events:
                yield event

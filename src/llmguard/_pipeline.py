"""Composing layers into one handler, recording attempts, and running one call.

``compose`` chains the layers once, at construction (the stack is frozen then).
At the bottom of every stack sits an attempt recorder: each time any layer calls
inward to the provider, an ``Attempt`` is added to the ``CallState``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from ._assemble import StreamAssembler, estimate_usage
from ._clock import Clock
from ._context import current_context
from ._errors import DeadlineExceeded
from ._state import _CURRENT_CALL, Attempt, CallState
from ._targets import ROUTED_PROVIDER
from ._types import Request, Response, StreamEvent, TextDelta, ToolCallDelta, UsageUpdate

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ._layer import EventStream, Handler, Layer, Provider, StreamHandler, StreamOpener

__all__ = [
    "GuardStream",
    "GuardedEvents",
    "compose",
    "compose_stream",
    "decorate_handler",
    "run_complete",
]

_CLOSE_GRACE_S = 5.0  # bound on closing an upstream stream while being cancelled


def compose(layers: Sequence[Layer], bottom: Handler) -> Handler:
    """Chain ``layers`` around ``bottom``; the first layer is the outermost."""
    handler = bottom
    for layer in reversed(layers):
        handler = partial(layer.complete, call_next=handler)
    return handler


def compose_stream(layers: Sequence[Layer], bottom: StreamHandler) -> StreamHandler:
    """The streaming twin of ``compose``."""
    handler = bottom
    for layer in reversed(layers):
        handler = partial(layer.stream, call_next=handler)
    return handler


class AttemptRecorder:
    """The bottom of a stack: calls the provider and records each call as an attempt."""

    __slots__ = ("_clock", "_name", "_provider")

    def __init__(self, provider: Provider, clock: Clock) -> None:
        self._provider = provider
        self._name = provider.name
        self._clock = clock

    async def complete(self, request: Request) -> Response:
        provider = ROUTED_PROVIDER.get()  # a fallback target or route on another provider
        if provider is None:
            provider = self._provider
        state = _CURRENT_CALL.get()
        if state is None:
            return await provider.complete(request)
        if state._before_attempt:
            await state.run_before_attempt(request)
        now = self._clock.now
        attempt = Attempt(provider=provider.name, model=request.model, started_at=now())
        attempts = state.attempts
        attempts.append(attempt)
        try:
            response = await provider.complete(request)
        except BaseException as exc:
            attempt.ended_at = now()
            attempt.error = type(exc).__name__
            _drop_if_nested(attempts, attempt)
            raise
        attempt.ended_at = attempt.first_event_at = now()
        attempt.usage = response.usage
        _drop_if_nested(attempts, attempt)
        return response

    @asynccontextmanager
    async def stream(self, request: Request) -> AsyncIterator[EventStream]:
        provider = ROUTED_PROVIDER.get()
        if provider is None:
            provider = self._provider
        state = _CURRENT_CALL.get()
        if state is not None and state._before_attempt:
            await state.run_before_attempt(request)
        attempt = Attempt(provider=provider.name, model=request.model, started_at=self._clock.now())
        if state is not None:
            state.attempts.append(attempt)
        tracked: _TrackedEvents | None = None
        try:
            async with provider.stream(request) as events:
                tracked = _TrackedEvents(events, attempt, self._clock, request)
                yield tracked
        except BaseException as exc:
            attempt.error = type(exc).__name__
            raise
        finally:
            attempt.ended_at = self._clock.now()
            if tracked is not None:
                tracked.settle_usage()
            if state is not None:
                _drop_if_nested(state.attempts, attempt)


def _drop_if_nested(attempts: list[Attempt], attempt: Attempt) -> None:
    """A provider that is itself a guarded handler records its own attempts: keep
    only those innermost ones, so nothing is counted twice."""
    if attempts[-1] is not attempt:
        for index in range(len(attempts) - 1, -1, -1):
            if attempts[index] is attempt:
                del attempts[index]
                break


class _TrackedEvents:
    """Passes events through, noting the first event, usage and output so far."""

    __slots__ = ("_attempt", "_chars", "_clock", "_events", "_request", "_saw_usage")

    def __init__(self, events: EventStream, attempt: Attempt, clock: Clock, request: Request):
        self._events = events
        self._attempt = attempt
        self._clock = clock
        self._request = request
        self._chars = 0
        self._saw_usage = False

    def __aiter__(self) -> _TrackedEvents:
        return self

    async def __anext__(self) -> StreamEvent:
        try:
            event = await self._events.__anext__()
        except StopAsyncIteration:
            raise
        except BaseException as exc:
            self._attempt.error = type(exc).__name__
            raise
        kind = type(event)
        if kind is TextDelta:
            self._chars += len(event.text)  # type: ignore[union-attr]
            if self._attempt.first_event_at is None:
                self._attempt.first_event_at = self._clock.now()
        elif kind is UsageUpdate:
            self._saw_usage = True
            self._attempt.usage = event.usage  # type: ignore[union-attr]
        elif kind is ToolCallDelta:
            self._chars += len(event.arguments) + len(event.name or "")  # type: ignore[union-attr]
            if self._attempt.first_event_at is None:
                self._attempt.first_event_at = self._clock.now()
        return event

    def settle_usage(self) -> None:
        """A stream that never reported usage is charged an estimate of what it sent."""
        if not self._saw_usage:
            self._attempt.usage = estimate_usage(self._request, self._chars)


def _new_state(request: Request | None, provider: str, clock: Clock, *, stream: bool) -> CallState:
    return CallState(
        call_id=CallState.new_id(),
        context=current_context(),
        started_at=clock.now(),
        request=request,
        provider=provider,
        stream=stream,
    )


async def run_complete(
    handler: Handler,
    request: Request,
    *,
    provider: str,
    clock: Clock,
    total_s: float | None,
) -> Response:
    """Run one non-streaming call as its owner: open the state, apply the total deadline."""
    state = _new_state(request, provider, clock, stream=False)
    token = _CURRENT_CALL.set(state)
    response: Response | None = None
    error: BaseException | None = None
    try:
        if total_s is None:
            response = await handler(request)
        else:
            with anyio.CancelScope(deadline=anyio.current_time() + total_s) as scope:
                response = await handler(request)
            if scope.cancelled_caught:
                raise DeadlineExceeded("total", total_s)
        assert response is not None
        return response
    except BaseException as exc:
        error = exc
        raise
    finally:
        _CURRENT_CALL.reset(token)
        state.finish(response, error, now=clock.now())


def decorate_handler(layers: Sequence[Layer], handler: Handler) -> Handler:
    """Wrap a plain ``async def (Request) -> Response`` in ``layers``.

    The wrapped function opens a ``CallState`` when called outside any guarded call,
    so observe records it, and joins the open one otherwise.
    """
    from ._clock import SystemClock
    from ._providers.function import FunctionProvider

    provider = FunctionProvider(handler)
    clock = SystemClock()
    inner = compose(layers, AttemptRecorder(provider, clock).complete)

    async def decorated(request: Request) -> Response:
        if _CURRENT_CALL.get() is not None:
            return await inner(request)
        return await run_complete(inner, request, provider=provider.name, clock=clock, total_s=None)

    decorated.__name__ = getattr(handler, "__name__", "decorated")
    decorated.__qualname__ = getattr(handler, "__qualname__", decorated.__name__)
    decorated.__doc__ = getattr(handler, "__doc__", None)
    decorated.__wrapped__ = handler  # type: ignore[attr-defined]
    return decorated


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

"""Composing layers into one handler, recording attempts, and running one call.

``compose`` chains the layers once, at construction (the stack is frozen then).
At the bottom of every stack sits an attempt recorder: each time any layer calls
inward to the provider, an ``Attempt`` is added to the ``CallState``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import asynccontextmanager
from functools import lru_cache, partial
from typing import TYPE_CHECKING

from ._assemble import estimate_usage
from ._clock import Clock
from ._context import current_context
from ._errors import DeadlineExceeded
from ._state import _CURRENT_CALL, Attempt, CallState
from ._targets import ROUTED_PROVIDER
from ._timeouts import Bound
from ._types import (
    RefusalDelta,
    Request,
    Response,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    UsageUpdate,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ._layer import EventStream, Handler, Layer, Provider, StreamHandler

__all__ = [
    "AttemptRecorder",
    "compose",
    "compose_stream",
    "decorate_handler",
    "run_complete",
]


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
        attempts = state.attempts
        if len(attempts) >= state._hooks_from:
            await state.run_before_attempt(request)
        now = self._clock.now
        attempt = Attempt(provider=provider.name, model=request.model, started_at=now())
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
        if state is not None and len(state.attempts) >= state._hooks_from:
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
        if kind is TextDelta or kind is RefusalDelta:
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
    total: Bound | None = None,
) -> Response:
    """Run one non-streaming call as its owner: open the state, apply the total deadline
    (``total``: a ``Bound`` of ``total_s`` kept by the caller, cheaper on asyncio)."""
    state = _new_state(request, provider, clock, stream=False)
    token = _CURRENT_CALL.set(state)
    response: Response | None = None
    error: BaseException | None = None
    try:
        if total_s is None:
            response = await handler(request)
        else:
            bound = _bound(total_s) if total is None else total
            with bound.scope() as scope:
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


@lru_cache(maxsize=64)
def _bound(seconds: float) -> Bound:
    """A shared ``Bound`` per length, for callers that keep none."""
    return Bound(seconds)


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

"""``sse()``: a stream of events as ``text/event-stream`` bytes; ``parse_sse()``: back.

The wire shape is stable (documented in docs/streaming.md). Each event is one
``data:`` line of compact JSON with a ``type``::

    data: {"type":"text","text":"Hel"}
    data: {"type":"tool_call","index":0,"id":"call_1","name":"get_weather","arguments":"{\\"ci"}
    data: {"type":"usage","input_tokens":12,"output_tokens":3,"cached_input_tokens":0,…}
    data: {"type":"finish","reason":"stop"}
    data: [DONE]

A failure ends the stream with ``event: error`` and a safe message (the error's
class and a fixed sentence per class: never provider text, never a traceback)
instead of ``[DONE]``, so a cut stream never reads as a whole answer. Heartbeats
are SSE comments (``: ping``), which clients ignore.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from json.encoder import encode_basestring
from types import TracebackType
from typing import TYPE_CHECKING, Final

import anyio

from ._clock import Clock, SystemClock
from ._errors import (
    BudgetExceeded,
    CircuitOpen,
    ConfigurationError,
    DeadlineExceeded,
    LLMGuardError,
    OutputValidationError,
    ProviderError,
    RateLimited,
    StoreUnavailable,
)
from ._types import Finish, RefusalDelta, StreamEvent, TextDelta, ToolCallDelta, UsageUpdate

if TYPE_CHECKING:
    from anyio.abc import TaskGroup
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ["DONE", "HEARTBEAT", "SSEStream", "encode_event", "error_frame", "safe_error", "sse"]

DONE: Final = b"data: [DONE]\n\n"
"""The last frame of a stream that ended whole."""

HEARTBEAT: Final = b": ping\n\n"
"""A comment frame sent while waiting, so proxies keep the connection open."""

_q = encode_basestring


def encode_event(event: StreamEvent) -> bytes:
    """One event as one ``data:`` frame of compact JSON (the documented shape)."""
    kind = type(event)
    if kind is TextDelta:
        return b'data: {"type":"text","text":%s}\n\n' % _q(event.text).encode()  # type: ignore[union-attr]
    if kind is ToolCallDelta:
        d: ToolCallDelta = event  # type: ignore[assignment]
        return (
            f'data: {{"type":"tool_call","index":{d.index:d},'
            f'"id":{"null" if d.id is None else _q(d.id)},'
            f'"name":{"null" if d.name is None else _q(d.name)},'
            f'"arguments":{_q(d.arguments)}}}\n\n'
        ).encode()
    if kind is UsageUpdate:
        u = event.usage  # type: ignore[union-attr]
        return (
            f'data: {{"type":"usage","input_tokens":{u.input_tokens:d},'
            f'"output_tokens":{u.output_tokens:d},'
            f'"cached_input_tokens":{u.cached_input_tokens:d},'
            f'"reasoning_tokens":{u.reasoning_tokens:d},'
            f'"estimated":{"true" if u.estimated else "false"}}}\n\n'
        ).encode()
    if kind is RefusalDelta:
        return b'data: {"type":"refusal","text":%s}\n\n' % _q(event.text).encode()  # type: ignore[union-attr]
    if kind is Finish:
        reason = event.reason  # type: ignore[union-attr]
        return b'data: {"type":"finish","reason":%s}\n\n' % (
            b"null" if reason is None else _q(reason).encode()
        )
    raise TypeError(f"not a stream event: {event!r}")


# The one table of what an error means to a client: (class, HTTP status, fixed message).
# The first matching row wins, so subclasses come before their bases.
_SAFE: tuple[tuple[type[BaseException], int, str], ...] = (
    (BudgetExceeded, 429, "the budget for this request is used up; try again after it resets"),
    (CircuitOpen, 503, "the model service is temporarily unavailable; try again shortly"),
    (RateLimited, 503, "the model provider is rate limiting requests; try again shortly"),
    (DeadlineExceeded, 504, "the model did not answer in time"),
    (OutputValidationError, 502, "the model's answer was not valid"),
    (StoreUnavailable, 503, "a backing store is unavailable; try again shortly"),
    (ProviderError, 502, "the model provider failed to answer"),
    (LLMGuardError, 500, "the request could not be completed"),
)


def safe_error(error: BaseException) -> tuple[str, int, str]:
    """``(type, status, message)`` to show a client for ``error``: the llmguard class
    name and a fixed message per class; any other exception is ``InternalError``/500."""
    for cls, status, message in _SAFE:
        if isinstance(error, cls):
            return type(error).__name__, status, message
    return "InternalError", 500, "the request could not be completed"


def error_frame(error: BaseException) -> bytes:
    """The ``event: error`` frame for ``error`` (safe: see ``safe_error``)."""
    kind, status, message = safe_error(error)
    payload = json.dumps(
        {"type": "error", "error": kind, "message": message, "status": status},
        separators=(",", ":"),
    )
    return f"event: error\ndata: {payload}\n\n".encode()


class _End:
    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class SSEStream:
    """The bytes of an SSE response: iterate it (``async for chunk in sse(events)``).

    It ends with ``data: [DONE]``; or, when the events fail, with an ``event: error``
    frame, after which the next read raises the original error (so the guarded
    stream around it records it). Cancellation passes through untouched.

    With ``heartbeat=`` seconds, enter it first (``async with sse(...) as body``): a
    task then reads the events while another sends ``: ping`` whenever nothing was
    sent for that long, on the injected ``clock``.
    """

    __slots__ = (
        "_clock",
        "_done",
        "_entered",
        "_events",
        "_failure",
        "_heartbeat",
        "_last",
        "_receive",
        "_tg",
    )

    def __init__(
        self,
        events: AsyncIterator[StreamEvent],
        *,
        heartbeat: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        if heartbeat is not None and not heartbeat > 0:
            raise ConfigurationError(
                f"heartbeat must be positive seconds or None, not {heartbeat!r}"
            )
        self._events = events
        self._heartbeat = heartbeat
        self._clock: Clock = clock or SystemClock()
        self._done = False
        self._failure: BaseException | None = None
        self._entered = False
        self._tg: TaskGroup | None = None
        self._receive: MemoryObjectReceiveStream[bytes | _End] | None = None
        self._last = 0.0

    def __aiter__(self) -> SSEStream:
        return self

    async def __anext__(self) -> bytes:
        failure = self._failure
        if failure is not None:
            self._failure = None
            self._done = True
            raise failure
        if self._done:
            raise StopAsyncIteration
        receive = self._receive
        if receive is not None:
            try:  # no trip through the event loop while chunks are waiting
                item = receive.receive_nowait()
            except anyio.WouldBlock:
                item = await receive.receive()
            if type(item) is _End:
                self._failure = item.error
                self._done = item.error is None
                return DONE if item.error is None else error_frame(item.error)
            return item  # type: ignore[return-value]
        if self._heartbeat is not None:
            raise ConfigurationError(
                "sse(..., heartbeat=) needs a task for the heartbeats: "
                "`async with sse(events, heartbeat=15) as body: async for chunk in body`"
            )
        try:
            event = await self._events.__anext__()
        except StopAsyncIteration:
            self._done = True
            return DONE
        except Exception as exc:
            self._failure = exc
            return error_frame(exc)
        return encode_event(event)

    async def __aenter__(self) -> SSEStream:
        if self._entered:
            raise ConfigurationError("an sse() stream can be entered only once")
        self._entered = True
        if self._heartbeat is None:
            return self
        send, receive = anyio.create_memory_object_stream[bytes | _End](16)
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg, self._receive = tg, receive
        self._last = self._clock.now()
        tg.start_soon(self._pump, send)
        tg.start_soon(self._tick, send.clone())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg, self._tg = self._tg, None
        if tg is None:
            return None
        tg.cancel_scope.cancel()
        assert self._receive is not None
        self._receive.close()
        # The helpers are cancelled and end at once; an error from the body passes
        # through unchanged (not wrapped in an exception group).
        await tg.__aexit__(None, None, None)
        return None

    async def _pump(self, send: MemoryObjectSendStream[bytes | _End]) -> None:
        clock = self._clock
        with send:
            try:
                async for event in self._events:
                    chunk = encode_event(event)
                    try:  # no trip through the event loop while there is room
                        send.send_nowait(chunk)
                    except anyio.WouldBlock:
                        await send.send(chunk)
                    self._last = clock.now()
            except Exception as exc:
                await send.send(_End(exc))
            else:
                await send.send(_End(None))

    async def _tick(self, send: MemoryObjectSendStream[bytes | _End]) -> None:
        clock, every = self._clock, self._heartbeat
        assert every is not None
        with send:
            while True:
                wait = self._last + every - clock.now()
                if wait > 0:
                    await clock.sleep(wait)
                    continue
                await send.send(HEARTBEAT)
                self._last = clock.now()


def sse(
    events: AsyncIterator[StreamEvent],
    *,
    heartbeat: float | None = None,
    clock: Clock | None = None,
) -> SSEStream:
    """Turn a guarded stream's events into ``text/event-stream`` bytes.

    >>> # async with guard.stream(user="Hi") as events:
    >>> #     async for chunk in sse(events):
    >>> #         await send(chunk)

    Args:
        events: the events (``async with guard.stream(...) as events``).
        heartbeat: seconds of silence after which a ``: ping`` comment is sent
            (``None``: no heartbeats). Needs ``async with sse(...) as body``.
        clock: the clock heartbeats are timed on (default ``SystemClock``).
    """
    return SSEStream(events, heartbeat=heartbeat, clock=clock)

"""``guard.structured_stream``: partial objects while the JSON streams in, then the
validated instance.

It works as ``guard.stream`` does, in the caller's task: entering opens the call
state and the first model stream (a refusal such as a budget's raises there, before
anything was read); each read takes events until the partial object changes; when an
attempt's stream ends, its answer is judged and, if rejected, the re-ask is opened
and streamed in turn; leaving always closes the upstream stream. The Guard's total
deadline spans every attempt: one cancel scope over the ``async with`` block, or one
per read for bare iteration and ``guard.sync`` (whose reads run in other tasks).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic

import anyio

from .._assemble import StreamAssembler, estimate_usage
from .._context import _use
from .._errors import DeadlineExceeded
from .._guard_stream import _CLOSE_GRACE_S, leave_deadline_scope
from .._pipeline import _new_state
from .._state import _CURRENT_CALL, CallState
from .._types import Request, Response, TextDelta
from .reask import prepare
from .structured import Judge, _spec
from .types import StructuredMode, T, ValidatesJSON, check_options, resolve_mode

if TYPE_CHECKING:
    from .._clock import Clock
    from .._layer import EventStream, Provider, StreamHandler, StreamOpener
    from .partial import PartialParser
    from .schema import OutputSpec

__all__ = ["StructuredPartials", "StructuredStream"]


class StructuredPartials(Generic[T]):
    """What ``async with guard.structured_stream(...)`` gives: an async iterator of
    partial objects (``Partial<Model>`` twins, every field optional) and, last, the
    validated instance. ``result`` holds that instance once the call succeeded.

    When an attempt fails validation and is re-asked, the partials start over from
    the new answer (``attempt`` counts the attempts). An error (``Refusal``,
    ``OutputValidationError``, a provider error) is raised from the read after the
    last partial.
    """

    __slots__ = ("_owner",)

    def __init__(self, owner: StructuredStream[T]) -> None:
        self._owner = owner

    def __aiter__(self) -> StructuredPartials[T]:
        return self

    async def __anext__(self) -> Any:
        return await self._owner._next()

    @property
    def result(self) -> T | None:
        """The validated instance once the call succeeded, else ``None``."""
        return self._owner._result

    @property
    def attempt(self) -> int:
        """The attempt being streamed: 1 for the first answer, 2 for the first re-ask…"""
        return self._owner._attempt


class StructuredStream(Generic[T]):
    """``async with guard.structured_stream(Model, ...) as partials: async for p in partials``."""

    __slots__ = (
        "_assembler",
        "_attempt",
        "_clock",
        "_deadline",
        "_done",
        "_events",
        "_failure",
        "_first",
        "_handler",
        "_judge",
        "_live",
        "_opener",
        "_parser",
        "_per_read",
        "_provider",
        "_request",
        "_response",
        "_result",
        "_scope",
        "_spec",
        "_state",
        "_timeout",
        "_token",
    )

    def __init__(
        self,
        handler: StreamHandler,
        output_type: type[T] | ValidatesJSON[T],
        request: Request,
        *,
        retries: int,
        mode: StructuredMode,
        provider: Provider,
        clock: Clock,
        timeout: float | None,
    ) -> None:
        # Checked now, so misuse raises where the stream is made, before anything is sent.
        check_options(retries, mode)
        self._spec: OutputSpec[T] = _spec(output_type)
        used = resolve_mode(mode, provider, request.model, self._spec.schema)
        self._first = prepare(request, self._spec.schema, used)
        self._judge = Judge(self._spec, retries)
        self._handler = handler
        self._provider = provider.name
        self._clock = clock
        self._timeout = timeout
        self._deadline = math.inf
        self._per_read = False
        self._attempt = 0
        self._state: CallState | None = None
        self._token: Any = None
        self._scope: anyio.CancelScope | None = None
        self._request = self._first
        self._opener: StreamOpener | None = None
        self._events: EventStream | None = None
        self._parser: PartialParser[T] = self._spec.partial_parser()
        self._assembler = StreamAssembler(model=request.model, provider=self._provider)
        self._response: Response | None = None
        self._result: T | None = None
        self._done = False  # the answer validated: the next read ends the iteration
        self._live = False  # an attempt's stream is open and being read
        self._failure: BaseException | None = None

    @property
    def request(self) -> Request:
        """The first attempt's request (with the schema or instructions added)."""
        return self._first

    def _deadline_per_read(self) -> StructuredStream[T]:
        """Check the deadline on each read instead of with one scope over the block
        (for readers in other tasks than the one that entered: ``guard.sync``)."""
        self._per_read = True
        return self

    async def __aenter__(self) -> StructuredPartials[T]:
        if self._state is not None:
            raise RuntimeError("a guard.structured_stream(...) can be entered only once")
        state = self._state = _new_state(self._first, self._provider, self._clock, stream=True)
        self._token = _CURRENT_CALL.set(state)
        timeout = self._timeout
        self._deadline = math.inf if timeout is None else anyio.current_time() + timeout
        scope = anyio.CancelScope(deadline=self._deadline)
        scope.__enter__()
        try:
            await self._open(self._first)
        except BaseException as exc:
            error: BaseException = exc
            if scope.__exit__(type(exc), exc, exc.__traceback__):
                assert timeout is not None
                error = DeadlineExceeded("total", timeout)
            self._end(error)
            if error is exc:
                raise
            raise error from None
        if self._per_read:
            scope.__exit__(None, None, None)
        else:
            self._scope = scope
        return StructuredPartials(self)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        in_flight = exc
        try:
            await self._close(exc_type, exc, tb)
        except BaseException as close_exc:
            in_flight = close_exc
        scope, self._scope = self._scope, None
        deadline_hit = leave_deadline_scope(scope, in_flight)
        if deadline_hit:
            assert self._timeout is not None
            error = DeadlineExceeded("total", self._timeout)
            self._end(error)
            raise error from None
        self._end(in_flight if in_flight is not None else self._failure)
        if in_flight is not None and in_flight is not exc:
            raise in_flight
        return False

    async def __aiter__(self) -> AsyncIterator[Any]:
        """Iterate without ``async with``: the same partials. The upstream is closed when
        the iteration ends or the iterator is garbage collected (prefer ``async with``),
        and the deadline is checked on each read."""
        async with self._deadline_per_read() as partials:
            async for partial in partials:
                yield partial

    # One attempt ----------------------------------------------------------------------

    async def _open(self, request: Request) -> None:
        """Open the model stream of one attempt (the first, or a re-ask)."""
        state = self._state
        assert state is not None
        self._attempt += 1
        self._request = request
        self._parser = self._spec.partial_parser()
        self._assembler = StreamAssembler(model=request.model, provider=self._provider)
        # A re-ask read by guard.sync runs in another task than the one that entered:
        # the layers opening it must still see this call and its context.
        token = _CURRENT_CALL.set(state)
        try:
            with _use(state.context):
                opener = self._handler(request)
                self._events = await opener.__aenter__()
                self._opener = opener
                self._live = True
        finally:
            _CURRENT_CALL.reset(token)

    async def _close(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        """Close the open attempt's stream, even while this task is being cancelled."""
        opener, self._opener = self._opener, None
        self._events = None
        if opener is not None:
            with anyio.CancelScope(shield=True) as shield:
                shield.deadline = anyio.current_time() + _CLOSE_GRACE_S
                await opener.__aexit__(exc_type, exc, tb)

    def _attempt_response(self) -> Response:
        assembler = self._assembler
        response = assembler.response()
        if assembler.usage is None:
            usage = estimate_usage(self._request, assembler.output_chars())
            response = replace(response, usage=usage)
        return response

    # Reading ----------------------------------------------------------------------------

    async def _next(self) -> Any:
        if not self._per_read:
            return await self._step()
        with anyio.CancelScope(deadline=self._deadline) as scope:
            return await self._step()
        assert self._timeout is not None
        assert scope.cancelled_caught
        raise DeadlineExceeded("total", self._timeout)

    async def _step(self) -> Any:
        try:
            while True:
                events = self._events
                if events is None:
                    raise StopAsyncIteration
                try:
                    event = await events.__anext__()
                except StopAsyncIteration:
                    await self._attempt_ended()
                    if self._done:
                        return self._result
                    continue
                self._assembler.feed(event)
                if type(event) is TextDelta:
                    partial = self._parser.feed(event.text)
                    if partial is not None:
                        return partial
        except StopAsyncIteration:
            raise
        except BaseException as exc:
            self._failure = exc
            raise

    async def _attempt_ended(self) -> None:
        """Judge the answer of the attempt that just ended; open the re-ask if needed."""
        await self._close()
        self._live = False
        response = self._response = self._attempt_response()
        following = self._judge.judge(self._request, response)
        if following is None:
            self._result = self._judge.value
            self._done = True
        else:
            await self._open(following)

    def _end(self, error: BaseException | None) -> None:
        with suppress(ValueError):  # left in another context than it was entered in
            _CURRENT_CALL.reset(self._token)
        assert self._state is not None
        response = self._attempt_response() if self._live else self._response
        self._state.finish(response, error, now=self._clock.now())

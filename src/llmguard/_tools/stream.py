"""``guard.run_tools_stream``: the tool loop, yielding text and tool events as they happen.

The loop runs in a task of a task group owned by the ``async with`` block and hands
each event over an unbuffered memory stream, so it never runs ahead of the reader.
Entering waits until the first model stream is open (so a refusal such as a budget
raises on entering, before anything was read); leaving cancels the loop and closes
the upstream stream, whatever state it is in.
"""

from __future__ import annotations

from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._assemble import StreamAssembler, estimate_usage
from .._errors import DeadlineExceeded
from .._pipeline import _new_state
from .._state import _CURRENT_CALL
from .._types import Request, Response
from .loop import LoopTranscript
from .results import ToolLoopEvent, ToolRunResult
from .toolbox import Toolbox

if TYPE_CHECKING:
    from .._clock import Clock
    from .._layer import StreamHandler

__all__ = ["ToolLoopEvents", "ToolLoopStream"]


class ToolLoopEvents:
    """The events of a streaming tool loop: the model's stream events (text, tool-call
    deltas, usage, finish, for every step) and ``ToolStarted``/``ToolFinished``.

    When the loop fails (``ToolLoopLimit``, a provider error…), the error is raised
    from the read after the last event. ``result`` is set once the loop has ended.
    """

    __slots__ = ("_owner", "_receive")

    def __init__(self, receive: MemoryObjectReceiveStream[ToolLoopEvent], owner: ToolLoopStream):
        self._receive = receive
        self._owner = owner

    def __aiter__(self) -> ToolLoopEvents:
        return self

    async def __anext__(self) -> ToolLoopEvent:
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            error, self._owner._error = self._owner._error, None
            if error is not None:
                raise error from None
            raise StopAsyncIteration from None

    @property
    def result(self) -> ToolRunResult | None:
        """The loop's result once it ended without an error, else ``None``."""
        return self._owner._result


class ToolLoopStream:
    """``async with guard.run_tools_stream(...) as events: async for event in events``."""

    __slots__ = (
        "_clock",
        "_closing",
        "_error",
        "_group",
        "_handler",
        "_max_steps",
        "_opened",
        "_provider",
        "_receive",
        "_request",
        "_result",
        "_timeout",
        "_toolbox",
        "_transcript",
    )

    def __init__(
        self,
        handler: StreamHandler,
        request: Request,
        toolbox: Toolbox,
        max_steps: int,
        *,
        provider: str,
        clock: Clock,
        timeout: float | None,
    ) -> None:
        # Checked now, so misuse raises where the stream is made, not in the task.
        self._transcript = LoopTranscript(request, toolbox, max_steps)
        self._handler = handler
        self._request = request
        self._toolbox = toolbox
        self._max_steps = max_steps
        self._provider = provider
        self._clock = clock
        self._timeout = timeout
        self._error: BaseException | None = None
        self._result: ToolRunResult | None = None
        self._group: TaskGroup | None = None
        self._receive: MemoryObjectReceiveStream[ToolLoopEvent] | None = None
        self._opened: anyio.Event | None = None  # made on entering, inside the event loop
        self._closing = False

    async def __aenter__(self) -> ToolLoopEvents:
        if self._group is not None:
            raise RuntimeError("a guard.run_tools_stream(...) can be entered only once")
        send, receive = anyio.create_memory_object_stream[ToolLoopEvent](0)
        self._receive = receive
        opened = self._opened = anyio.Event()
        group = self._group = anyio.create_task_group()
        await group.__aenter__()
        group.start_soon(self._drive, send)
        try:
            await opened.wait()
        except BaseException:  # cancelled while opening: stop the loop, then propagate
            await self._leave()
            raise
        if self._result is None and self._error is not None:
            error, self._error = self._error, None
            await self._leave()
            raise error
        return ToolLoopEvents(receive, self)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        await self._leave()
        return False

    async def _leave(self) -> None:
        group, self._group = self._group, None
        if group is None:
            return
        self._closing = True
        group.cancel_scope.cancel()
        try:
            # The loop's task never fails (it keeps its error for the reader), so the
            # group ends clean; the block's own exception, if any, propagates as is.
            await group.__aexit__(None, None, None)
        finally:
            if self._receive is not None:
                self._receive.close()

    async def _drive(self, send: MemoryObjectSendStream[ToolLoopEvent]) -> None:
        state = _new_state(self._request, self._provider, self._clock, stream=True)
        token = _CURRENT_CALL.set(state)
        response: Response | None = None
        error: BaseException | None = None
        try:
            transcript = self._transcript
            while True:
                response = await self._step(transcript.next_request(), send)
                calls = transcript.add_response(response)
                if not calls:
                    self._result = transcript.result(response)
                    break
                transcript.add_results(await self._toolbox.run_all(calls, events=send.send))
        except Exception as exc:
            error = self._error = exc
        except BaseException as exc:  # cancelled: by leaving the block, or from outside
            error = None if self._closing else exc
            raise
        finally:
            _CURRENT_CALL.reset(token)
            send.close()
            self._mark_opened()
            state.finish(response, error, now=self._clock.now())

    def _mark_opened(self) -> None:
        if self._opened is not None:
            self._opened.set()

    async def _step(
        self, request: Request, send: MemoryObjectSendStream[ToolLoopEvent]
    ) -> Response:
        timeout = self._timeout
        deadline = anyio.current_time() + timeout if timeout is not None else float("inf")
        assembler = StreamAssembler(model=request.model, provider=self._provider)
        with anyio.CancelScope(deadline=deadline) as scope:
            async with self._handler(request) as events:
                self._mark_opened()
                async for event in events:
                    assembler.feed(event)
                    await send.send(event)
        if scope.cancelled_caught:
            assert timeout is not None
            raise DeadlineExceeded("total", timeout)
        response = assembler.response()
        if assembler.usage is None:
            response = replace(response, usage=estimate_usage(request, assembler.output_chars()))
        return response

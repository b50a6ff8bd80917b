"""The blocking side of the tool loop, used by ``guard.sync.run_tools(_stream)``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from anyio.from_thread import BlockingPortal

from .._context import CallContext, _use
from .._types import Request
from .decorator import Tool
from .results import ToolLoopEvent, ToolRunResult
from .stream import ToolLoopEvents, ToolLoopStream
from .toolbox import Toolbox

if TYPE_CHECKING:
    from .._guard import Guard

__all__ = ["SyncToolEvents", "run_tools_in", "tool_stream_in"]


class SyncToolEvents:
    """A blocking iterator over a streaming tool loop's events (``result`` once ended)."""

    __slots__ = ("_events", "_portal")

    def __init__(self, portal: BlockingPortal, events: ToolLoopEvents) -> None:
        self._portal = portal
        self._events = events

    def __iter__(self) -> SyncToolEvents:
        return self

    def __next__(self) -> ToolLoopEvent:
        try:
            return self._portal.call(self._events.__anext__)
        except StopAsyncIteration:
            raise StopIteration from None

    @property
    def result(self) -> ToolRunResult | None:
        """The loop's result once it ended without an error, else ``None``."""
        return self._events.result


async def run_tools_in(
    guard: Guard,
    ctx: CallContext,
    request: Request,
    tools: Toolbox | Sequence[Tool[..., Any]],
    max_steps: int,
) -> ToolRunResult:
    with _use(ctx):
        return await guard.run_tools(request, tools=tools, max_steps=max_steps)


@asynccontextmanager
async def tool_stream_in(opened: ToolLoopStream, ctx: CallContext) -> AsyncIterator[ToolLoopEvents]:
    # The loop's task is started inside this context, so it carries the caller's.
    with _use(ctx):
        async with opened as events:
            yield events

"""``guard.sync``: the Guard's verbs as blocking calls.

One event loop per Guard runs in a daemon thread, started lazily on first use and
shared by every calling thread (anyio's ``BlockingPortal``). The llmguard context
set in the calling thread is handed to the call explicitly. In a forked child
(gunicorn ``--preload``) the parent's loop thread does not exist: the facade notices
the new process id and starts a fresh one.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, Unpack

import anyio
from anyio.from_thread import BlockingPortal

from ._cache_core import CacheOptions, current_options, use_options
from ._context import CallContext, _use, current_context
from ._errors import SyncUsageError
from ._guard_stream import GuardedEvents, GuardStream
from ._output.sync import SyncPartials, structured_in, structured_stream_in
from ._output.types import StructuredMode, T, ValidatesJSON
from ._tools.decorator import Tool
from ._tools.loop import DEFAULT_MAX_STEPS, ToolRunOptions
from ._tools.results import ToolRunResult
from ._tools.sync import SyncToolEvents, run_tools_in, tool_stream_in
from ._tools.toolbox import Toolbox
from ._types import Request, Response, StreamEvent

if TYPE_CHECKING:
    from ._guard import Guard, RequestOptions

__all__ = ["SyncEvents", "SyncGuard"]


def _ensure_no_running_loop(verb: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise SyncUsageError(
            f"guard.sync.{verb}() was called inside a running event loop, where blocking "
            f"would freeze it; use `await guard.{verb}(...)` instead"
        )
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        raise SyncUsageError(
            f"guard.sync.{verb}() was called inside a running trio run; "
            f"use `await guard.{verb}(...)` instead"
        )


class _PortalThread:
    """A lazily started event loop in a daemon thread, reset after ``fork()``."""

    def __init__(self, backend: str) -> None:
        self._backend = backend
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._portal: BlockingPortal | None = None

    def get(self) -> BlockingPortal:
        if self._pid != os.getpid():
            # A forked child: the parent's loop thread was not copied, and its lock
            # may have been held at fork time. Start afresh.
            self._pid = os.getpid()
            self._lock = threading.Lock()
            self._portal = None
        portal = self._portal
        if portal is not None:
            return portal
        with self._lock:
            if self._portal is None:
                self._portal = self._start()
            return self._portal

    def _start(self) -> BlockingPortal:
        ready = threading.Event()
        box: list[BlockingPortal] = []
        failure: list[BaseException] = []

        async def serve() -> None:
            async with BlockingPortal() as portal:
                box.append(portal)
                ready.set()
                await portal.sleep_until_stopped()

        def run() -> None:
            try:
                anyio.run(serve, backend=self._backend)
            except BaseException as exc:  # pragma: no cover - the loop failed to start
                failure.append(exc)
                ready.set()

        thread = threading.Thread(target=run, name="llmguard-sync", daemon=True)
        thread.start()
        ready.wait()
        if failure:  # pragma: no cover
            raise failure[0]
        return box[0]

    def close(self) -> None:
        with self._lock:
            portal, self._portal = self._portal, None
        if portal is not None and self._pid == os.getpid():
            portal.call(portal.stop)


class SyncEvents:
    """A blocking iterator over a guarded stream's events (``response`` once ended)."""

    __slots__ = ("_events", "_portal")

    def __init__(self, portal: BlockingPortal, events: GuardedEvents) -> None:
        self._portal = portal
        self._events = events

    def __iter__(self) -> SyncEvents:
        return self

    def __next__(self) -> StreamEvent:
        try:
            return self._portal.call(self._events.__anext__)
        except StopAsyncIteration:
            raise StopIteration from None

    @property
    def response(self) -> Response:
        """The response the events so far add up to."""
        return self._events.response


class SyncGuard:
    """Blocking versions of the Guard's verbs. Safe to call from many threads at once.

    Calling a verb from inside a running event loop raises ``SyncUsageError``.
    """

    __slots__ = ("_guard", "_runner")

    def __init__(self, guard: Guard, *, backend: str = "asyncio") -> None:
        self._guard = guard
        self._runner = _PortalThread(backend)

    def complete(
        self, request: Request | None = None, /, **options: Unpack[RequestOptions]
    ) -> Response:
        """Blocking ``guard.complete``."""
        _ensure_no_running_loop("complete")
        built = self._guard.build_request(request, **options)
        return self._runner.get().call(
            _complete_in, self._guard, current_context(), built, current_options()
        )

    @contextmanager
    def stream(
        self, request: Request | None = None, /, **options: Unpack[RequestOptions]
    ) -> Iterator[SyncEvents]:
        """Blocking ``guard.stream``: ``with guard.sync.stream(user="Hi") as events``."""
        _ensure_no_running_loop("stream")
        portal = self._runner.get()
        opened = self._guard.stream(request, **options)
        opener = _stream_in(opened, current_context(), current_options())
        with portal.wrap_async_context_manager(opener) as events:
            yield SyncEvents(portal, events)

    def run_tools(
        self,
        request: Request | None = None,
        /,
        *,
        tools: Toolbox | Sequence[Tool[..., Any]],
        max_steps: int = DEFAULT_MAX_STEPS,
        **options: Unpack[ToolRunOptions],
    ) -> ToolRunResult:
        """Blocking ``guard.run_tools`` (sync tools still run in worker threads)."""
        _ensure_no_running_loop("run_tools")
        built = self._guard.build_request(request, **options)
        result: ToolRunResult = self._runner.get().call(
            run_tools_in, self._guard, current_context(), built, tools, max_steps
        )
        return result

    @contextmanager
    def run_tools_stream(
        self,
        request: Request | None = None,
        /,
        *,
        tools: Toolbox | Sequence[Tool[..., Any]],
        max_steps: int = DEFAULT_MAX_STEPS,
        **options: Unpack[ToolRunOptions],
    ) -> Iterator[SyncToolEvents]:
        """Blocking ``guard.run_tools_stream``: ``with guard.sync.run_tools_stream(...) as
        events: for event in events: ...``."""
        _ensure_no_running_loop("run_tools_stream")
        portal = self._runner.get()
        opened = self._guard.run_tools_stream(request, tools=tools, max_steps=max_steps, **options)
        with portal.wrap_async_context_manager(tool_stream_in(opened, current_context())) as events:
            yield SyncToolEvents(portal, events)

    def structured(
        self,
        output_type: type[T] | ValidatesJSON[T],
        request: Request | None = None,
        /,
        *,
        retries: int = 2,
        mode: StructuredMode = "auto",
        **options: Unpack[RequestOptions],
    ) -> T:
        """Blocking ``guard.structured``."""
        _ensure_no_running_loop("structured")
        built = self._guard.build_request(request, **options)
        result: T = self._runner.get().call(
            structured_in,
            self._guard,
            current_context(),
            current_options(),
            output_type,
            built,
            retries,
            mode,
        )
        return result

    @contextmanager
    def structured_stream(
        self,
        output_type: type[T] | ValidatesJSON[T],
        request: Request | None = None,
        /,
        *,
        retries: int = 2,
        mode: StructuredMode = "auto",
        **options: Unpack[RequestOptions],
    ) -> Iterator[SyncPartials[T]]:
        """Blocking ``guard.structured_stream``: ``with guard.sync.structured_stream(Model,
        user=...) as partials: for partial in partials: ...``."""
        _ensure_no_running_loop("structured_stream")
        portal = self._runner.get()
        opened = self._guard.structured_stream(
            output_type, request, retries=retries, mode=mode, **options
        )
        opener = structured_stream_in(opened, current_context(), current_options())
        with portal.wrap_async_context_manager(opener) as partials:
            yield SyncPartials(portal, partials)

    def close(self) -> None:
        """Stop the event loop thread (a later call starts a new one)."""
        self._runner.close()


async def _complete_in(
    guard: Guard, ctx: CallContext, request: Request, cache: CacheOptions
) -> Response:
    with _use(ctx), use_options(cache):
        return await guard.complete(request)


@asynccontextmanager
async def _stream_in(
    opened: GuardStream, ctx: CallContext, cache: CacheOptions
) -> AsyncIterator[GuardedEvents]:
    # Each read runs in its own portal task, so the deadline goes with each read.
    with _use(ctx), use_options(cache):
        async with opened._deadline_per_read() as events:
            yield events

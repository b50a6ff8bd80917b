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
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Unpack

import anyio
from anyio.from_thread import BlockingPortal

from ._context import CallContext, _use, current_context
from ._errors import SyncUsageError
from ._pipeline import GuardedEvents, GuardStream
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
        return self._runner.get().call(_complete_in, self._guard, current_context(), built)

    @contextmanager
    def stream(
        self, request: Request | None = None, /, **options: Unpack[RequestOptions]
    ) -> Iterator[SyncEvents]:
        """Blocking ``guard.stream``: ``with guard.sync.stream(user="Hi") as events``."""
        _ensure_no_running_loop("stream")
        portal = self._runner.get()
        opened = self._guard.stream(request, **options)
        with portal.wrap_async_context_manager(_stream_in(opened, current_context())) as events:
            yield SyncEvents(portal, events)

    def close(self) -> None:
        """Stop the event loop thread (a later call starts a new one)."""
        self._runner.close()


async def _complete_in(guard: Guard, ctx: CallContext, request: Request) -> Response:
    with _use(ctx):
        return await guard.complete(request)


@asynccontextmanager
async def _stream_in(opened: GuardStream, ctx: CallContext) -> AsyncIterator[GuardedEvents]:
    # Each read runs in its own portal task, so the deadline goes with each read.
    with _use(ctx):
        async with opened._deadline_per_read() as events:
            yield events

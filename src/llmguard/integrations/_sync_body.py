"""A blocking SSE body over ``guard.sync.stream``, for WSGI servers (Flask, Django).

It reads through the Guard's own event-loop thread, so heartbeats and deadlines run
there. ``close()`` (which every WSGI server calls) closes the upstream; closing
before the end is recorded as ``ClientDisconnected``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, suppress
from typing import Any

from .._clock import Clock
from .._errors import ClientDisconnected, LLMGuardError
from .._guard import Guard, RequestOptions
from .._sse import SSEStream, sse
from .._sync import SyncEvents
from .._types import Request

__all__ = ["SyncSSEBody", "open_sync"]


def open_sync(
    guard: Guard, llm_request: Request | None, options: RequestOptions
) -> tuple[AbstractContextManager[SyncEvents], SyncEvents]:
    """Open ``guard.sync.stream`` now (a refusal raises here, before any header)."""
    opened = guard.sync.stream(llm_request, **options)
    events = opened.__enter__()
    return opened, events


class SyncSSEBody:
    """An iterator of SSE bytes with ``close()``; see the module docstring."""

    __slots__ = ("_entered", "_finished", "_opened", "_portal", "_sse", "_sse_cm")

    def __init__(
        self,
        opened: AbstractContextManager[SyncEvents],
        events: SyncEvents,
        *,
        heartbeat: float | None,
        clock: Clock | None,
    ) -> None:
        self._opened: AbstractContextManager[SyncEvents] | None = opened
        self._portal = events._portal
        self._sse: SSEStream = sse(events._events, heartbeat=heartbeat, clock=clock)
        self._sse_cm: AbstractContextManager[SSEStream] | None = None
        self._entered = False
        self._finished = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._opened is None:
            raise StopIteration
        if not self._entered:
            self._entered = True
            self._sse_cm = self._portal.wrap_async_context_manager(self._sse)
            self._sse_cm.__enter__()
        try:
            return self._portal.call(self._sse.__anext__)
        except StopAsyncIteration:
            self._finished = True
            self._close(None)
            raise StopIteration from None
        except Exception as exc:  # the error frame went out already: record, end cleanly
            self._finished = True
            self._close(exc)
            raise StopIteration from None
        except BaseException as exc:
            self._close(exc)
            raise

    def close(self) -> None:
        """Close the upstream (the WSGI server calls this when the response ends)."""
        self._close(None if self._finished else ClientDisconnected())

    def _close(self, error: BaseException | None) -> None:
        opened, self._opened = self._opened, None
        if opened is None:
            return
        args: tuple[Any, Any, Any] = (None, None, None)
        if error is not None:
            args = (type(error), error, error.__traceback__)
        sse_cm, self._sse_cm = self._sse_cm, None
        try:
            if sse_cm is not None:
                sse_cm.__exit__(None, None, None)
        finally:
            with suppress(LLMGuardError):  # already sent to the client as the error frame
                opened.__exit__(*args)

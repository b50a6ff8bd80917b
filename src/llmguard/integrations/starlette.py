"""Starlette and FastAPI: a streamed SSE response, the context, error mapping, jobs.

``await stream_response(guard.stream(...))`` opens the guarded stream *before* any
header is sent: a budget refusal or an open circuit becomes a JSON 429/503, never
an error frame inside a 200. The response then watches for the client going away
itself (Starlette stops listening for disconnects on servers that speak ASGI 2.4)
and closes the upstream the moment it does.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, ParamSpec

import anyio

from .._clock import Clock
from .._context import CallContext, context, restore_context, snapshot
from .._errors import ClientDisconnected, LLMGuardError
from .._guard_stream import GuardedEvents, GuardStream
from .._sse import sse
from ._common import DEFAULT_HEARTBEAT_S, SSE_HEADERS, error_payload, missing_extra

try:
    from starlette.background import BackgroundTasks
    from starlette.requests import HTTPConnection, Request
    from starlette.responses import JSONResponse, Response
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("starlette", "Starlette", "fastapi") from exc

__all__ = [
    "ContextMiddleware",
    "SSEResponse",
    "add_background_task",
    "add_exception_handlers",
    "context_dependency",
    "error_response",
    "exception_handler",
    "stream_response",
]

P = ParamSpec("P")

Identify = Callable[[HTTPConnection], CallContext]
"""Who is calling, read from the request: ``lambda r: CallContext(user=..., endpoint=...)``."""

_CLOSE_GRACE_S = 5.0


def _default_identify(request: HTTPConnection) -> CallContext:
    route = request.scope.get("route")
    path = getattr(route, "path", None) or request.url.path
    return CallContext(endpoint=path)


def error_response(error: BaseException) -> JSONResponse:
    """The JSON response for an llmguard error (status and body: see ``error_payload``)."""
    status, headers, body = error_payload(error)
    return JSONResponse(body, status_code=status, headers=headers)


async def exception_handler(request: Request, exc: Exception) -> Response:
    """A Starlette/FastAPI exception handler for ``LLMGuardError`` (429, 502, 503, 504…)."""
    return error_response(exc)


def add_exception_handlers(app: Any) -> None:
    """Map every ``LLMGuardError`` raised by an endpoint to its JSON error response."""
    app.add_exception_handler(LLMGuardError, exception_handler)


class SSEResponse(Response):
    """A streamed ``text/event-stream`` response over an opened guarded stream.

    Build it with ``stream_response``; it owns the stream and closes it when the
    body ends, fails, or the client disconnects (then the call is recorded with
    ``ClientDisconnected`` and the usage received so far).
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        stream: GuardStream,
        events: GuardedEvents,
        *,
        heartbeat: float | None = DEFAULT_HEARTBEAT_S,
        clock: Clock | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._stream = stream
        self._events = events
        self._heartbeat = heartbeat
        self._clock = clock
        self.status_code = 200
        self.background = None
        self.init_headers({**SSE_HEADERS, **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        disconnected = False
        error: BaseException | None = None
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async with anyio.create_task_group() as tg:

                async def watch() -> None:
                    nonlocal disconnected
                    while True:
                        message: Message = await receive()
                        if message["type"] == "http.disconnect":
                            disconnected = True
                            tg.cancel_scope.cancel()
                            return

                tg.start_soon(watch)
                try:
                    async with sse(
                        self._events, heartbeat=self._heartbeat, clock=self._clock
                    ) as body:
                        async for chunk in body:
                            await send(
                                {"type": "http.response.body", "body": chunk, "more_body": True}
                            )
                except OSError:  # a server on ASGI 2.4 tells of a disconnect this way
                    disconnected = True
                except Exception as exc:  # the error frame went out; record it, end cleanly
                    error = exc
                finally:
                    tg.cancel_scope.cancel()
        except BaseException as exc:
            await self._close(exc)
            raise
        if disconnected:
            await self._close(ClientDisconnected())
            return
        await self._close(error)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _close(self, error: BaseException | None) -> None:
        with anyio.CancelScope(shield=True) as shield:
            shield.deadline = anyio.current_time() + _CLOSE_GRACE_S
            if error is None:
                await self._stream.__aexit__(None, None, None)
            else:
                await self._stream.__aexit__(type(error), error, error.__traceback__)


async def stream_response(
    stream: GuardStream,
    *,
    heartbeat: float | None = DEFAULT_HEARTBEAT_S,
    clock: Clock | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Open ``stream`` now and return its SSE response, or the JSON error response
    if opening was refused (``BudgetExceeded`` → 429, ``CircuitOpen`` → 503, …).

    >>> # @app.post("/chat")
    >>> # async def chat(body: Ask) -> Response:
    >>> #     return await stream_response(guard.stream(user=body.question))

    Args:
        stream: ``guard.stream(...)``, not entered yet.
        heartbeat: seconds of silence before a ``: ping`` comment (``None``: none).
        clock: the clock heartbeats run on.
        headers: extra response headers.
    """
    try:
        events = await stream._deadline_per_read().__aenter__()
    except LLMGuardError as exc:
        return error_response(exc)
    return SSEResponse(stream, events, heartbeat=heartbeat, clock=clock, headers=headers)


class ContextMiddleware:
    """Pure ASGI middleware: sets the llmguard context from each request for the
    whole request, the streamed body included.

    ``app.add_middleware(ContextMiddleware, identify=lambda r: CallContext(...))``;
    by default the context carries the request path as ``endpoint``.
    """

    def __init__(self, app: ASGIApp, identify: Identify | None = None) -> None:
        self.app = app
        self.identify = identify or _default_identify

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        found = self.identify(HTTPConnection(scope))
        with context(
            user=found.user, tenant=found.tenant, endpoint=found.endpoint, tags=found.tags
        ):
            await self.app(scope, receive, send)


def context_dependency(
    identify: Identify | None = None,
) -> Callable[[Request], AsyncIterator[CallContext]]:
    """A FastAPI dependency that sets the llmguard context from the request.

    ``Depends(context_dependency(identify))`` on a route or router. It is a
    ``yield`` dependency, so the context stays set until the response, a streamed
    body included, has been sent. By default ``endpoint`` is the route's path
    template (``/items/{id}``).
    """
    resolve = identify or _default_identify

    async def llmguard_context(request: Request) -> AsyncIterator[CallContext]:
        found = resolve(request)
        with context(
            user=found.user, tenant=found.tenant, endpoint=found.endpoint, tags=found.tags
        ) as ctx:
            yield ctx

    # FastAPI reads the signature; spell the annotation out (no string forward refs).
    llmguard_context.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)]
    )
    return llmguard_context


def add_background_task(
    tasks: BackgroundTasks,
    function: Callable[P, Any],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> None:
    """``tasks.add_task(function, ...)`` that runs ``function`` in the llmguard context
    of *this* request (user, endpoint, …), so its records carry them."""
    saved = snapshot()

    if inspect.iscoroutinefunction(function):

        async def run_async() -> None:
            with restore_context(saved):
                await function(*args, **kwargs)

        tasks.add_task(run_async)
    else:

        def run_sync() -> None:
            with restore_context(saved):
                function(*args, **kwargs)

        tasks.add_task(run_sync)

"""Django: streamed SSE responses from async and sync views, the context, error mapping.

``stream_response`` (sync views) and ``astream_response`` (async views) open the
guarded stream before any header is sent (a refusal is a JSON 429/503) and return a
``StreamingHttpResponse`` whose iterator suits the server the request came through:
a blocking iterator over ``guard.sync`` under WSGI (Django would otherwise buffer an
async iterator whole, with a warning), an async iterator under ASGI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Unpack

import anyio

from .._clock import Clock
from .._context import CallContext, _use, context, current_context
from .._errors import ClientDisconnected, LLMGuardError
from .._guard import Guard, RequestOptions
from .._guard_stream import GuardedEvents, GuardStream
from .._sse import sse
from .._types import Request
from ._common import DEFAULT_HEARTBEAT_S, SSE_HEADERS, error_payload, missing_extra
from ._sync_body import SyncSSEBody, open_sync

try:
    from asgiref.sync import iscoroutinefunction, markcoroutinefunction
    from django.conf import settings
    from django.core.handlers.asgi import ASGIRequest
    from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
    from django.utils.module_loading import import_string
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("django", "Django", "django") from exc

__all__ = ["LLMGuardMiddleware", "astream_response", "error_response", "stream_response"]

Identify = Callable[[HttpRequest], CallContext]

_CLOSE_GRACE_S = 5.0


def error_response(error: BaseException) -> JsonResponse:
    """The JSON response for an llmguard error (status and body: see ``error_payload``)."""
    status, headers, body = error_payload(error)
    return JsonResponse(body, status=status, headers=headers)


def _sse_response(content: Any) -> StreamingHttpResponse:
    return StreamingHttpResponse(content, content_type="text/event-stream", headers=SSE_HEADERS)


def stream_response(
    http_request: HttpRequest,
    guard: Guard,
    llm_request: Request | None = None,
    /,
    *,
    heartbeat: float | None = DEFAULT_HEARTBEAT_S,
    clock: Clock | None = None,
    **options: Unpack[RequestOptions],
) -> HttpResponse:
    """From a sync view: stream ``guard``'s answer as SSE (or return the JSON error).

    >>> # def chat(request):
    >>> #     return stream_response(request, guard, user=request.GET["q"])
    """
    try:
        opened, events = open_sync(guard, llm_request, options)
    except LLMGuardError as exc:
        return error_response(exc)
    body = SyncSSEBody(opened, events, heartbeat=heartbeat, clock=clock)
    if isinstance(http_request, ASGIRequest):  # a sync view served over ASGI
        return _sse_response(_pull_in_threads(body))
    return _sse_response(body)


async def astream_response(
    http_request: HttpRequest,
    guard: Guard,
    llm_request: Request | None = None,
    /,
    *,
    heartbeat: float | None = DEFAULT_HEARTBEAT_S,
    clock: Clock | None = None,
    **options: Unpack[RequestOptions],
) -> HttpResponse:
    """From an async view: stream ``guard``'s answer as SSE (or return the JSON error).

    >>> # async def chat(request):
    >>> #     return await astream_response(request, guard, user=request.GET["q"])
    """
    if not isinstance(http_request, ASGIRequest):
        # Under WSGI this view's event loop ends when it returns: stream through the
        # Guard's own loop thread with a blocking iterator instead.
        try:
            opened, events = await anyio.to_thread.run_sync(open_sync, guard, llm_request, options)
        except LLMGuardError as exc:
            return error_response(exc)
        return _sse_response(SyncSSEBody(opened, events, heartbeat=heartbeat, clock=clock))
    stream = guard.stream(llm_request, **options)
    try:
        guarded = await stream._deadline_per_read().__aenter__()
    except LLMGuardError as exc:
        return error_response(exc)
    return _sse_response(_async_body(stream, guarded, heartbeat, clock, current_context()))


async def _async_body(
    stream: GuardStream,
    events: GuardedEvents,
    heartbeat: float | None,
    clock: Clock | None,
    ctx: CallContext,
) -> AsyncIterator[bytes]:
    error: BaseException | None = None
    finished = False
    try:
        with _use(ctx):
            async with sse(events, heartbeat=heartbeat, clock=clock) as body:
                async for chunk in body:
                    yield chunk
        finished = True
    except Exception as exc:  # the error frame went out: record it, end cleanly
        error = exc
    except BaseException as exc:  # cancelled on disconnect, or closed early
        error = exc
        raise
    finally:
        if (error is not None and not isinstance(error, Exception)) or (
            error is None and not finished
        ):
            error = ClientDisconnected()
        with anyio.CancelScope(shield=True) as shield:
            shield.deadline = anyio.current_time() + _CLOSE_GRACE_S
            if error is None:
                await stream.__aexit__(None, None, None)
            else:
                await stream.__aexit__(type(error), error, error.__traceback__)


async def _pull_in_threads(body: SyncSSEBody) -> AsyncIterator[bytes]:
    def step() -> bytes | None:
        return next(body, None)

    try:
        while (chunk := await anyio.to_thread.run_sync(step)) is not None:
            yield chunk
    finally:
        await anyio.to_thread.run_sync(body.close)


def _default_identify(request: HttpRequest) -> CallContext:
    return CallContext(endpoint=request.path)


class LLMGuardMiddleware:
    """Sets the llmguard context from each request and maps llmguard errors raised
    by views to JSON responses (429 with ``Retry-After``, 502, 503, 504…).

    Add ``"llmguard.integrations.django.LLMGuardMiddleware"`` to ``MIDDLEWARE``. Set
    ``LLMGUARD_IDENTIFY = "myapp.llm.identify"`` (a function of the request returning
    a ``CallContext``) to say who is calling; by default only ``endpoint`` is set
    (the request path). Works in sync and async stacks.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        dotted = getattr(settings, "LLMGUARD_IDENTIFY", None)
        self.identify: Identify = import_string(dotted) if dotted else _default_identify
        self._is_async = iscoroutinefunction(get_response)
        if self._is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self._is_async:
            return self.__acall__(request)
        found = self.identify(request)
        with context(
            user=found.user, tenant=found.tenant, endpoint=found.endpoint, tags=found.tags
        ):
            return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> Any:
        found = self.identify(request)
        with context(
            user=found.user, tenant=found.tenant, endpoint=found.endpoint, tags=found.tags
        ):
            return await self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """Turn an llmguard error into its JSON response; leave others to Django."""
        if isinstance(exception, LLMGuardError):
            return error_response(exception)
        return None

"""Flask: a streamed SSE response from a sync view, the context, error mapping.

``stream_response(guard, user=...)`` opens the guarded stream through ``guard.sync``
before any header is sent (a refusal is a JSON 429/503) and streams it with
``stream_with_context``. ``init_app(app)`` sets the llmguard context from each
request and maps llmguard errors to JSON responses.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from contextvars import Token
from typing import Any, Unpack

from .._clock import Clock
from .._context import _CURRENT, CallContext, context
from .._errors import LLMGuardError
from .._guard import Guard, RequestOptions
from .._types import Request
from ._common import DEFAULT_HEARTBEAT_S, SSE_HEADERS, error_payload, missing_extra
from ._sync_body import SyncSSEBody, open_sync

try:
    import flask
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("flask", "Flask", "flask") from exc

__all__ = ["error_response", "init_app", "stream_response"]

Identify = Callable[[flask.Request], CallContext]

_TOKEN_KEY = "_llmguard_context_token"


def error_response(error: BaseException) -> flask.Response:
    """The JSON response for an llmguard error (status and body: see ``error_payload``)."""
    status, headers, body = error_payload(error)
    response = flask.jsonify(body)
    response.status_code = status
    response.headers.update(headers)
    return response


def stream_response(
    guard: Guard,
    llm_request: Request | None = None,
    /,
    *,
    heartbeat: float | None = DEFAULT_HEARTBEAT_S,
    clock: Clock | None = None,
    **options: Unpack[RequestOptions],
) -> flask.Response:
    """Stream ``guard``'s answer as SSE from a Flask view (or return the JSON error).

    >>> # @app.post("/chat")
    >>> # def chat():
    >>> #     return stream_response(guard, user=request.json["question"])
    """
    try:
        opened, events = open_sync(guard, llm_request, options)
    except LLMGuardError as exc:
        return error_response(exc)
    body = SyncSSEBody(opened, events, heartbeat=heartbeat, clock=clock)
    return flask.Response(
        flask.stream_with_context(body),
        mimetype="text/event-stream",
        headers=dict(SSE_HEADERS),
    )


def _default_identify(request: flask.Request) -> CallContext:
    rule = request.url_rule
    return CallContext(endpoint=rule.rule if rule is not None else request.path)


def init_app(app: flask.Flask, identify: Identify | None = None) -> None:
    """Set the llmguard context from each request (for the whole request, a streamed
    body included) and map ``LLMGuardError`` to JSON responses (429, 502, 503, 504…).

    By default only ``endpoint`` is set: the URL rule (``/items/<id>``).
    """
    resolve = identify or _default_identify

    def set_context() -> None:
        found = resolve(flask.request)
        with context(
            user=found.user, tenant=found.tenant, endpoint=found.endpoint, tags=found.tags
        ) as ctx:
            pass
        token: Token[CallContext] = _CURRENT.set(ctx)
        flask.g.setdefault(_TOKEN_KEY, token)

    def reset_context(error: BaseException | None) -> None:
        token = flask.g.pop(_TOKEN_KEY, None)
        if token is not None:
            with suppress(ValueError):  # torn down in another context than set in
                _CURRENT.reset(token)

    def handle(error: LLMGuardError) -> Any:
        return error_response(error)

    app.before_request(set_context)
    app.teardown_request(reset_context)
    app.register_error_handler(LLMGuardError, handle)

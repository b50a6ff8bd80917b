"""The one error tree of llmguard.

Every error that llmguard raises is an ``LLMGuardError``::

    LLMGuardError
    ├── ConfigurationError          misuse, raised at construction
    ├── ProviderError               the provider failed (status_code, retryable, retry_after)
    │   ├── ProviderTimeout         the provider's own request timed out
    │   ├── ProviderConnectionError the connection failed or was cut
    │   ├── RateLimited             429
    │   ├── MalformedResponse       the provider's answer could not be read
    │   └── Refusal                 the model refused (a typed answer, not retried)
    ├── DeadlineExceeded            one of llmguard's deadlines fired
    │   └── StreamTimeout           a stream's first-token, idle or total deadline
    ├── SSEError                    an SSE stream read by parse_sse ended in an error
    ├── ClientDisconnected          a streamed response's client went away (recorded only)
    ├── BudgetExceeded              a budget refused the call (scope, remaining, reset_at)
    ├── UnknownPrice                a dollar budget cannot price the model (model, provider)
    ├── OutputValidationError       structured output failed every attempt
    ├── ToolError                   a tool call could not be run
    │   └── ToolLoopLimit           the tool loop reached max_steps
    ├── CircuitOpen                 a circuit breaker fails fast
    ├── StoreUnavailable            a store did not answer within its bound
    └── SyncUsageError              guard.sync called from inside a running event loop

Errors carry their facts as attributes. Foreign errors (openai, redis, sqlite3) are
translated at one boundary per provider and per store, ``raise ... from exc``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

__all__ = [
    "BudgetExceeded",
    "CircuitOpen",
    "ClientDisconnected",
    "ConfigurationError",
    "DeadlineExceeded",
    "LLMGuardError",
    "MalformedResponse",
    "OutputValidationError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderTimeout",
    "RateLimited",
    "Refusal",
    "SSEError",
    "StoreUnavailable",
    "StreamTimeout",
    "SyncUsageError",
    "ToolError",
    "ToolLoopLimit",
    "UnknownPrice",
]


class LLMGuardError(Exception):
    """The root of every error llmguard raises."""


class ConfigurationError(LLMGuardError, ValueError):
    """llmguard was set up wrongly; raised when the object is built, never mid-call.

    Also a ``ValueError``, so code that checks arguments the usual way catches it.
    The one exception to "at construction": a call with no model anywhere (neither
    ``model=`` on the call nor on the Guard) raises it when the call is made.
    """


class SyncUsageError(LLMGuardError):
    """A blocking ``guard.sync`` verb was called from inside a running event loop.

    Blocking there would freeze the loop; ``await`` the async verb instead.
    """


class ProviderError(LLMGuardError):
    """The provider failed to answer.

    Attributes:
        status_code: the HTTP status, or ``None`` when there was no HTTP answer.
        retryable: whether trying again may succeed (timeouts, connection errors,
            408/409/429/5xx); never for 400/401/403/404/422.
        retry_after: seconds the provider asked us to wait, if it said (``math.inf``
            when it sent a number too large for a float: not worth waiting for).
        request_id: the provider's request id, if it gave one.
        provider: the provider's name.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
        provider: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.retryable = _default_retryable(status_code) if retryable is None else retryable
        self.retry_after = retry_after
        self.request_id = request_id
        self.provider = provider

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, status_code={self.status_code!r}, "
            f"retryable={self.retryable!r}, retry_after={self.retry_after!r})"
        )


def _default_retryable(status_code: int | None) -> bool:
    if status_code is None:
        return False
    return status_code in (408, 409, 429) or status_code >= 500


class ProviderTimeout(ProviderError):
    """The provider's own request timed out (retryable)."""

    def __init__(self, message: str = "the provider did not answer in time", **kw: Any) -> None:
        kw.setdefault("retryable", True)
        super().__init__(message, **kw)


class ProviderConnectionError(ProviderError):
    """The connection to the provider failed or was cut (retryable)."""

    def __init__(self, message: str = "could not reach the provider", **kw: Any) -> None:
        kw.setdefault("retryable", True)
        super().__init__(message, **kw)


class RateLimited(ProviderError):
    """The provider answered 429; ``retry_after`` says how long it asked us to wait."""

    def __init__(self, message: str = "rate limited by the provider", **kw: Any) -> None:
        kw.setdefault("status_code", 429)
        kw.setdefault("retryable", True)
        super().__init__(message, **kw)


class MalformedResponse(ProviderError):
    """The provider's answer could not be read (bad JSON, bad SSE, an HTML error page)."""

    def __init__(self, message: str = "the provider's answer could not be read", **kw: Any) -> None:
        kw.setdefault("retryable", False)
        super().__init__(message, **kw)


class Refusal(ProviderError):
    """The model refused to answer; ``refusal`` holds its words. Never retried."""

    def __init__(self, refusal: str, **kw: Any) -> None:
        kw.setdefault("retryable", False)
        super().__init__(f"the model refused: {refusal}", **kw)
        self.refusal = refusal


class DeadlineExceeded(LLMGuardError):
    """One of llmguard's deadlines fired.

    Attributes:
        deadline: which deadline (``"total"``, ``"first_token"``, ``"idle"``).
        seconds: the deadline's length in seconds.
    """

    def __init__(self, deadline: str, seconds: float, message: str | None = None) -> None:
        super().__init__(
            message
            or f"the {deadline} deadline of {seconds:g} s passed; raise it with timeout= "
            "or make the call smaller"
        )
        self.deadline = deadline
        self.seconds = seconds


class StreamTimeout(DeadlineExceeded):
    """A stream's first-token, idle or total deadline fired; the upstream was closed.

    Attributes (besides ``deadline`` and ``seconds``): ``elapsed``, the seconds from
    opening the stream to the moment the deadline fired, and ``events``, how many
    events had arrived by then.
    """

    def __init__(
        self, deadline: str, seconds: float, *, elapsed: float | None = None, events: int = 0
    ) -> None:
        after = f" after {elapsed:.3g} s" if elapsed is not None else ""
        super().__init__(
            deadline,
            seconds,
            f"the stream's {deadline} deadline of {seconds:g} s fired{after} "
            f"({events} events received); the upstream request was closed",
        )
        self.elapsed = elapsed
        self.events = events


class ClientDisconnected(LLMGuardError):
    """The client of a streamed HTTP response went away before the stream ended.

    The framework helpers close the upstream request at once and record the call
    with this error (and the usage received so far); it is never raised to your code.
    """

    def __init__(self, message: str = "the client disconnected; the upstream was closed") -> None:
        super().__init__(message)


class SSEError(LLMGuardError):
    """A server-sent-event stream read by ``parse_sse`` ended in an ``event: error``
    frame, or ended without its ``data: [DONE]`` terminator (``error_type`` is then
    ``"IncompleteStream"``): the answer is not whole.

    Attributes: ``error_type`` (the error's class name as the server sent it),
    ``status_code`` (the HTTP status the server mapped it to, if it said).
    """

    def __init__(self, error_type: str, message: str, *, status_code: int | None = None) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message
        self.status_code = status_code


class BudgetExceeded(LLMGuardError):
    """A budget refused the call before it started.

    Attributes: ``scope`` (which budget), ``limit``, ``used``, ``remaining`` (in the
    budget's unit), ``unit`` (``"tokens"`` or ``"usd_micros"``) and ``reset_at``
    (when the window ends, timezone-aware, or ``None`` for a budget with no window).
    """

    def __init__(
        self,
        *,
        scope: str,
        limit: int,
        used: int,
        remaining: int,
        unit: str,
        reset_at: datetime | None,
    ) -> None:
        when = f"; resets at {reset_at.isoformat()}" if reset_at else ""
        super().__init__(
            f"budget {scope!r} exceeded: {used} of {limit} {unit} used, {remaining} remaining{when}"
        )
        self.scope = scope
        self.limit = limit
        self.used = used
        self.remaining = remaining
        self.unit = unit
        self.reset_at = reset_at


class UnknownPrice(LLMGuardError):
    """A dollar budget refused a call to a model whose price it does not know.

    Raised before anything is sent when the budget's ``on_unknown_price`` is
    ``"refuse"`` (the default). Attributes: ``model`` and ``provider``. Add the model to
    ``Pricing(prices={...})``, or choose ``on_unknown_price="warn"`` (count its tokens
    only) or a default ``Price``.
    """

    def __init__(self, model: str, *, provider: str | None = None) -> None:
        where = f" (provider {provider!r})" if provider else ""
        super().__init__(
            f"no price is known for model {model!r}{where}, so a dollar budget cannot "
            "charge it; add it to Pricing(prices={...}) or set on_unknown_price="
        )
        self.model = model
        self.provider = provider


class OutputValidationError(LLMGuardError):
    """Structured output failed validation on every attempt.

    ``attempts`` holds one ``(raw_text, error_text)`` pair per attempt.
    """

    def __init__(self, message: str, *, attempts: Sequence[tuple[str, str]]) -> None:
        super().__init__(message)
        self.attempts = tuple(attempts)


class ToolError(LLMGuardError):
    """A tool call could not be run (unknown tool, invalid arguments, a failure)."""


class ToolLoopLimit(ToolError):
    """The tool loop reached ``max_steps``; ``transcript`` holds the messages so far."""

    def __init__(self, message: str, *, transcript: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.transcript = tuple(transcript)


class CircuitOpen(LLMGuardError):
    """A circuit breaker is open and fails fast; ``retry_at`` says when it half-opens."""

    def __init__(self, name: str, *, retry_at: float | None = None) -> None:
        super().__init__(f"circuit {name!r} is open; failing fast until it half-opens")
        self.name = name
        self.retry_at = retry_at


class StoreUnavailable(LLMGuardError):
    """A store did not answer within its bound; the cause is attached as ``__cause__``."""

    def __init__(self, store: str, message: str = "did not answer") -> None:
        super().__init__(f"store {store} is unavailable: {message}")
        self.store = store

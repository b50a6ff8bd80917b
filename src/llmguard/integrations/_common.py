"""What every framework helper shares: SSE headers and the error-to-HTTP mapping."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

from .._errors import BudgetExceeded, RateLimited
from .._sse import safe_error

__all__ = ["DEFAULT_HEARTBEAT_S", "SSE_HEADERS", "error_payload", "missing_extra"]

DEFAULT_HEARTBEAT_S: Final = 15.0
"""Seconds of silence after which the framework helpers send a ``: ping`` comment."""

SSE_HEADERS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
    }
)
"""Headers of every streamed response (besides ``Content-Type: text/event-stream``)."""


def error_payload(
    error: BaseException, *, now: datetime | None = None
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """``(status, headers, json_body)`` for ``error``, the same in every framework.

    The body is ``{"error": {"type": ..., "message": ...}}`` with a fixed, safe
    message per error class (never the provider's text). ``BudgetExceeded`` adds
    ``scope``, ``limit``, ``used``, ``remaining``, ``unit`` and ``reset_at`` (ISO
    8601 or ``null``) and a ``Retry-After`` header in whole seconds when it resets;
    ``RateLimited`` forwards the provider's ``Retry-After``.
    """
    kind, status, message = safe_error(error)
    detail: dict[str, Any] = {"type": kind, "message": message}
    headers: dict[str, str] = {}
    if isinstance(error, BudgetExceeded):
        reset_at = error.reset_at
        detail.update(
            scope=error.scope,
            limit=error.limit,
            used=error.used,
            remaining=error.remaining,
            unit=error.unit,
            reset_at=reset_at.isoformat() if reset_at is not None else None,
        )
        if reset_at is not None:
            seconds = (reset_at - (now or datetime.now(UTC))).total_seconds()
            headers["Retry-After"] = str(max(1, math.ceil(seconds)))
    elif isinstance(error, RateLimited) and error.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return status, headers, {"error": detail}


def missing_extra(module: str, framework: str, extra: str) -> ImportError:
    """The ImportError a helper raises when its framework is not installed."""
    return ImportError(
        f'llmguard.integrations.{module} needs {framework}: pip install "llmguard[{extra}]"'
    )

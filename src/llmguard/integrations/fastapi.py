"""FastAPI: the same helpers as ``llmguard.integrations.starlette`` (FastAPI is Starlette).

``context_dependency`` gives a ``Depends(...)`` that sets the llmguard context,
and ``add_background_task`` carries it into ``BackgroundTasks``.
"""

from __future__ import annotations

from ._common import missing_extra

try:
    import fastapi  # noqa: F401  (only to name the right extra when it is missing)
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("fastapi", "FastAPI", "fastapi") from exc

from .starlette import (
    ContextMiddleware,
    SSEResponse,
    add_background_task,
    add_exception_handlers,
    context_dependency,
    error_response,
    exception_handler,
    stream_response,
)

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

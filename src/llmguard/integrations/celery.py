"""Celery: carry the llmguard context (user, tenant, endpoint, tags) into tasks.

``@app.task(base=ContextTask)``: calling ``.delay()``/``.apply_async()`` takes a
``snapshot()`` of the caller's context into the message headers, and the worker
restores it around the task body, so the task's records carry the original user and
endpoint. A context already present in the headers (a task sending another) wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from .._context import restore_context, snapshot
from ._common import missing_extra

try:
    import celery
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("celery", "Celery", "celery") from exc

__all__ = ["HEADER", "ContextTask", "context_of"]

HEADER: Final = "llmguard_context"
"""The message header that carries the snapshot (a plain JSON-able dict)."""


def context_of(task_request: Any) -> Mapping[str, Any] | None:
    """The snapshot carried by a task's request (``self.request``), if any."""
    headers = getattr(task_request, "headers", None) or {}
    found = headers.get(HEADER) if isinstance(headers, Mapping) else None
    if found is None:
        found = getattr(task_request, HEADER, None)
    return found if isinstance(found, Mapping) else None


class ContextTask(celery.Task):  # type: ignore[misc]
    """A Celery task base that runs each task in its caller's llmguard context."""

    abstract = True

    def apply_async(
        self, args: Any = None, kwargs: Any = None, **options: Any
    ) -> Any:  # mirrors celery.Task.apply_async
        """Send the task with the caller's context in its headers."""
        headers = dict(options.pop("headers", None) or {})
        headers.setdefault(HEADER, snapshot())
        return super().apply_async(args, kwargs, headers=headers, **options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        saved = context_of(self.request)
        if saved is None:
            return super().__call__(*args, **kwargs)
        with restore_context(saved):
            return super().__call__(*args, **kwargs)

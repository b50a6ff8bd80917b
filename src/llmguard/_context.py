"""Who is calling: user, tenant, endpoint and tags, carried on a contextvar.

A web framework's middleware sets it once per request; budgets, caches and records
read it. It flows across ``await``, into anyio task groups (tasks copy the context
when they start) and through ``guard.sync`` (the caller's context is handed to the
portal thread explicitly).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["CallContext", "context", "current_context", "restore_context", "snapshot"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CallContext:
    """Who is calling. Every field may be ``None``; ``tags`` is a sorted tuple."""

    user: str | None = None
    tenant: str | None = None
    endpoint: str | None = None
    tags: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-able dict; ``context(**d)`` restores it."""
        return {
            "user": self.user,
            "tenant": self.tenant,
            "endpoint": self.endpoint,
            "tags": list(self.tags),
        }


_EMPTY = CallContext()
_CURRENT: ContextVar[CallContext] = ContextVar("llmguard_context", default=_EMPTY)


def current_context() -> CallContext:
    """The context in force here (an empty one when none was set)."""
    return _CURRENT.get()


@contextmanager
def context(
    *,
    user: str | None = None,
    tenant: str | None = None,
    endpoint: str | None = None,
    tags: Iterable[str] = (),
) -> Iterator[CallContext]:
    """Set who is calling for the code inside the ``with`` block.

    Nested blocks inherit what they do not set; tags add up.

    >>> with context(user="u1", endpoint="/chat"):
    ...     current_context().user
    'u1'
    """
    outer = _CURRENT.get()
    inner = replace(
        outer,
        user=outer.user if user is None else user,
        tenant=outer.tenant if tenant is None else tenant,
        endpoint=outer.endpoint if endpoint is None else endpoint,
        tags=tuple(sorted(set(outer.tags).union(tags))),
    )
    token = _CURRENT.set(inner)
    try:
        yield inner
    finally:
        _CURRENT.reset(token)


@contextmanager
def _use(ctx: CallContext) -> Iterator[None]:
    """Install ``ctx`` as is (used to carry a context across threads)."""
    token = _CURRENT.set(ctx)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def snapshot() -> dict[str, Any]:
    """The current context as a plain dict, to pass to a background job."""
    return _CURRENT.get().to_dict()


def restore_context(data: Mapping[str, Any]) -> AbstractContextManager[CallContext]:
    """Restore a ``snapshot()`` in another task, thread or process.

    Returns a context manager: ``with llmguard.restore_context(job_arg): ...``.
    Unknown keys are ignored, so snapshots from newer versions still restore.
    """
    tags = data.get("tags") or ()
    return context(
        user=data.get("user"),
        tenant=data.get("tenant"),
        endpoint=data.get("endpoint"),
        tags=[str(t) for t in tags],
    )

"""Who is calling: user, tenant, endpoint and tags, carried on a contextvar.

A web framework's middleware sets it once per request; budgets, caches and records
read it. It flows across ``await``, into anyio task groups (tasks copy the context
when they start) and through ``guard.sync`` (the caller's context is handed to the
portal thread explicitly).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, ContextDecorator, contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from ._fast_init import fast_init

__all__ = ["CallContext", "context", "current_context", "restore_context", "snapshot"]


@fast_init
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


def context(
    *,
    user: str | None = None,
    tenant: str | None = None,
    endpoint: str | None = None,
    tags: Iterable[str] = (),
) -> _Context:
    """Set who is calling for the code inside the ``with`` block.

    Nested blocks inherit what they do not set; tags add up.

    >>> with context(user="u1", endpoint="/chat"):
    ...     current_context().user
    'u1'
    """
    return _Context(user, tenant, endpoint, tags)


class _Context(ContextDecorator, AbstractContextManager[CallContext]):
    """What ``context()`` returns: entering sets the context (inheriting what is not
    given), leaving restores the outer one. Also a decorator, like ``contextmanager``'s."""

    __slots__ = ("_endpoint", "_tags", "_tenant", "_tokens", "_user")

    def __init__(
        self, user: str | None, tenant: str | None, endpoint: str | None, tags: Iterable[str]
    ) -> None:
        self._user = user
        self._tenant = tenant
        self._endpoint = endpoint
        self._tags = tags
        self._tokens: list[Token[CallContext]] = []

    def _recreate_cm(self) -> _Context:
        return _Context(self._user, self._tenant, self._endpoint, self._tags)

    def __enter__(self) -> CallContext:
        outer = _CURRENT.get()
        tags = self._tags
        user, tenant, endpoint = self._user, self._tenant, self._endpoint
        inner = CallContext(
            user=outer.user if user is None else user,
            tenant=outer.tenant if tenant is None else tenant,
            endpoint=outer.endpoint if endpoint is None else endpoint,
            tags=tuple(sorted(set(outer.tags).union(tags))) if tags or outer.tags else (),
        )
        self._tokens.append(_CURRENT.set(inner))
        return inner

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _CURRENT.reset(self._tokens.pop())


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

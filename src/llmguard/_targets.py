"""Which provider the bottom of a stack calls: the Guard's own, or one a layer routed to.

A ``Fallback`` target on another provider, or a ``Route`` with its own provider, sets
it for the calls it makes inward, so every layer between it and the provider (circuit
breaker, retry, deadlines) applies to that target as well. A contextvar, so concurrent
calls never see each other's routing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._layer import Provider

__all__ = ["ROUTED_PROVIDER", "route_to", "routed_provider_name"]

ROUTED_PROVIDER: ContextVar[Provider | None] = ContextVar("llmguard_provider", default=None)


def routed_provider_name() -> str | None:
    """The name of the provider calls are routed to here, ``None`` when not routed."""
    provider = ROUTED_PROVIDER.get()
    return None if provider is None else provider.name


@contextmanager
def route_to(provider: Provider | None) -> Iterator[None]:
    """Send the calls made inside the block to ``provider`` (``None``: leave as is)."""
    if provider is None:
        yield
        return
    token = ROUTED_PROVIDER.set(provider)
    try:
        yield
    finally:
        ROUTED_PROVIDER.reset(token)

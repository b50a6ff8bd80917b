"""Per-call cache options: ``cache_options`` and the options in force for a call.

They live in a context variable, so they follow the calls made inside the ``with``
block, and are carried into ``guard.sync``'s loop thread with ``use_options``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from ._errors import ConfigurationError

__all__ = [
    "UNSET",
    "CacheOptions",
    "Unset",
    "cache_options",
    "current_options",
    "use_options",
]


class Unset(enum.Enum):
    """The type of ``UNSET``: an option that was not given."""

    UNSET = "UNSET"


UNSET = Unset.UNSET


@dataclass(frozen=True, slots=True)
class CacheOptions:
    """The per-call cache options in force (set with ``cache_options``)."""

    enabled: bool = True
    refresh: bool = False
    ttl: float | Unset | None = UNSET


_DEFAULTS = CacheOptions()
_OPTIONS: ContextVar[CacheOptions] = ContextVar("llmguard_cache_options", default=_DEFAULTS)


def current_options() -> CacheOptions:
    """The per-call cache options in force here."""
    return _OPTIONS.get()


@contextmanager
def cache_options(
    *,
    enabled: bool | None = None,
    refresh: bool | None = None,
    ttl: float | Unset | None = UNSET,
) -> Iterator[None]:
    """Per-call cache controls for the calls made inside the ``with`` block.

    - ``enabled=False``: do not read or write the cache (recorded as ``"bypass"``);
    - ``refresh=True``: do not read it, call upstream and store the fresh answer
      (recorded as ``"refresh"``);
    - ``ttl=``: seconds to keep what these calls store (``None``: no expiry), instead
      of the cache's own ``ttl``.

    Nested blocks inherit what they do not set. Applies to every ``Cache`` layer and
    ``@llmguard.cache`` function the calls go through, and to ``guard.sync`` calls.

    >>> with cache_options(refresh=True):
    ...     pass
    """
    if ttl is not UNSET and ttl is not None and not ttl > 0:
        raise ConfigurationError(f"ttl must be a positive number of seconds or None, not {ttl!r}")
    outer = _OPTIONS.get()
    inner = CacheOptions(
        enabled=outer.enabled if enabled is None else enabled,
        refresh=outer.refresh if refresh is None else refresh,
        ttl=outer.ttl if ttl is UNSET else ttl,
    )
    token = _OPTIONS.set(inner)
    try:
        yield
    finally:
        _OPTIONS.reset(token)


@contextmanager
def use_options(options: CacheOptions) -> Iterator[None]:
    """Install ``options`` as they are (to carry them into ``guard.sync``'s loop thread)."""
    token = _OPTIONS.set(options)
    try:
        yield
    finally:
        _OPTIONS.reset(token)

"""``RedisStore``'s TTLs as command arguments: ``SET``'s ``PX`` and the scripts' text.

A TTL is seconds (a float) or ``None`` for none; NaN is refused. An infinite TTL, or
one too large for Redis's clock, means no expiry.
"""

from __future__ import annotations

import math

__all__ = ["expiry_ms", "ttl_arg"]

#: TTLs past this (about 285,000 years) are stored without an expiry: Redis refuses an
#: expiry that overflows its clock, and a float has no exact milliseconds there.
_MAX_EXPIRY_MS = 2**53


def expiry_ms(ttl: float | None) -> int | None:
    """A cache TTL as ``SET``'s ``PX``: ``None`` for none, 0 to delete, else >= 1 ms."""
    value = _ttl_seconds(ttl)
    if not math.isfinite(value):
        return None
    if value <= 0:
        return 0
    ms = math.ceil(value * 1000)
    return ms if ms <= _MAX_EXPIRY_MS else None


def _ttl_seconds(ttl: float | None) -> float:
    value = math.inf if ttl is None else float(ttl)
    if math.isnan(value):
        raise ValueError(f"ttl must be a number of seconds or None, not {ttl!r}")
    return value


def ttl_arg(ttl: float | None, *, required: bool = False) -> str:
    """A TTL as script text: '' for none (``None`` or infinite)."""
    value = math.inf if ttl is None else float(ttl)
    if math.isnan(value) or (required and not math.isfinite(value)):
        raise ValueError(f"ttl must be a finite number of seconds, not {ttl!r}")
    return repr(value) if math.isfinite(value) else ""

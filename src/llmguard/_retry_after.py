"""Reading how long a provider asked us to wait (``retry-after-ms``, ``retry-after``)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime

__all__ = ["parse_retry_after"]


def parse_retry_after(
    headers: Mapping[str, str] | None, *, now: Callable[[], float] = time.time
) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (preferred, as the openai SDK reads it),
    else ``retry-after`` as seconds or an HTTP date. ``None`` when absent, negative,
    not a finite number, or not parseable: the caller's own backoff decides then.
    Header names are matched case-insensitively.
    """
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        seconds = _number(raw_ms)
        if seconds is not None:
            return seconds / 1000.0
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    seconds = _number(raw)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:  # pragma: no cover - older Pythons returned None
        return None
    return max(0.0, when.timestamp() - now())


def _number(text: str) -> float | None:
    try:
        value = float(text.strip())
    except (ValueError, OverflowError):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return value

"""How long a provider asked us to wait (``retry-after-ms``, ``retry-after``), and
what the retry layer does about it.

Both follow the openai SDK (``BaseClient._parse_retry_after_header``,
``_calculate_retry_timeout`` and ``_should_retry``, read in openai 3.57), so a call
retried by llmguard waits what the SDK would have waited:

- ``retry-after-ms`` is read first, then ``retry-after`` as seconds (floats allowed),
  then ``retry-after`` as an HTTP date. A header whose number does not parse is
  skipped; one that parses is used, even when its value is unusable.
- an advertised wait in ``(0, cap]`` is waited exactly (no jitter);
- above the cap (and for a number too large for a float, e.g. ``1e999``) the call is
  not retried at all: a provider asking for minutes is better served by a fallback;
- zero, negative, ``nan`` and a literal ``inf`` are no usable advice: our own
  backoff decides.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Literal

__all__ = ["DEFAULT_MAX_RETRY_AFTER", "RetryAfterDecision", "decide", "parse_retry_after"]

DEFAULT_MAX_RETRY_AFTER = 120.0
"""The longest advertised wait honoured by default: the openai SDK's
``MAX_RETRY_AFTER_DELAY`` (two minutes)."""

_INFINITY_WORDS = frozenset({"inf", "+inf", "infinity", "+infinity"})

RetryAfterDecision = tuple[Literal["wait", "backoff", "give_up"], float]


def parse_retry_after(
    headers: Mapping[str, str] | None, *, now: Callable[[], float] = time.time
) -> float | None:
    """Seconds the provider asked us to wait, from its response headers.

    Returns ``None`` when it gave no usable advice (absent, unparseable, negative,
    ``nan``, a literal ``inf``), ``math.inf`` when the number overflows a float (an
    excessive wait, as the SDK reads it), else the seconds (``0.0`` for a date in the
    past). Header names are matched case-insensitively.
    """
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = lowered.get(name)
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            continue
        if math.isinf(value) and value > 0 and raw.strip().lower() not in _INFINITY_WORDS:
            return math.inf  # an overflowing number: more than anyone should wait
        if math.isnan(value) or math.isinf(value) or value < 0:
            return None
        return value / divisor
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    from email.utils import mktime_tz, parsedate_tz  # only for a date: keeps imports light

    try:
        parsed = parsedate_tz(raw)
        if parsed is None:
            return None
        when = mktime_tz(parsed)
    except (TypeError, ValueError, OverflowError, OSError):
        return None
    return max(0.0, when - now())


def decide(retry_after: float | None, *, cap: float) -> RetryAfterDecision:
    """What to do about an advertised wait: ``("wait", seconds)`` to honour it,
    ``("backoff", 0.0)`` to use our own backoff, ``("give_up", 0.0)`` not to retry."""
    if retry_after is None:
        return ("backoff", 0.0)
    if retry_after > cap:
        return ("give_up", 0.0)
    if retry_after > 0:  # false for nan as well
        return ("wait", retry_after)
    return ("backoff", 0.0)

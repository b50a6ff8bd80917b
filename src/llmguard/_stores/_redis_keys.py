"""Where ``RedisStore`` keeps things, and how a ``Window`` travels to the ledger script.

Key layout, for a key (a budget scope, a cache key, a lock name...) ``K``::

    <prefix>{<tag(K)>}:h         budget: open reservations and their sum (hash)
    <prefix>{<tag(K)>}:e         budget: when reservations expire, closed ids (zset)
    <prefix>{<tag(K)>}:w         budget: settled totals per window (hash)
    <prefix>{<tag(K)>}:s:<wid>   budget: settles of a sliding window (zset)
    <prefix>{<tag(K)>}:c2        cache value      <prefix>{<tag(K)>}:k  lock
    <prefix>{<tag(K)>}:v         shared value     <prefix>{<tag(K)>}:n  counter

A cache value is a plain string with Redis's own expiry (``SET ... PX``), read by one
``GET``. Before it, cache values were hashes under ``:c`` (value and expiry, read by a
script): the new name makes such an entry a miss, never a ``WRONGTYPE`` error, and
``delete`` removes both.

Every key of one ``K`` carries the same hash tag ``{...}``, so one script touches
keys of one slot only and never meets ``CROSSSLOT`` on Redis Cluster. ``tag(K)`` is
``K`` with ``%``, ``{`` and ``}`` percent-escaped (and ``%`` for the empty key): the
tag is never empty and never ends early, and distinct keys get distinct tags.
"""

from __future__ import annotations

import math

from .._errors import ConfigurationError
from ._roles import Window, window_id

__all__ = ["DEFAULT_PREFIX", "KeyLayout", "WindowArgs", "hash_tag"]

DEFAULT_PREFIX = "llmguard:"


def hash_tag(key: str) -> str:
    """The text between the braces for ``key``: never empty, never a brace."""
    if not key:
        return "%"
    return key.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


class KeyLayout:
    """Builds the Redis keys of every role under one ``prefix``."""

    def __init__(self, prefix: str) -> None:
        if "{" in prefix or "}" in prefix:
            raise ConfigurationError(
                f"a RedisStore prefix may not contain '{{' or '}}' (it would change the "
                f"hash tag that keeps a key's data in one cluster slot): {prefix!r}"
            )
        self.prefix = prefix

    def _base(self, key: str) -> str:
        return f"{self.prefix}{{{hash_tag(key)}}}:"

    def ledger(self, key: str, window: Window) -> list[str]:
        """KEYS of the ledger script: H, E, W, and S for a sliding window."""
        base = self._base(key)
        keys = [base + "h", base + "e", base + "w"]
        if window.kind == "sliding":
            keys.append(f"{base}s:{window_id(window)}")
        return keys

    def cache(self, key: str) -> str:
        return self._base(key) + "c2"

    def legacy_cache(self, key: str) -> str:
        """Where llmguard kept a cache value before ``:c2`` (a hash, read by a script)."""
        return self._base(key) + "c"

    def lock(self, key: str) -> str:
        return self._base(key) + "k"

    def value(self, key: str) -> str:
        return self._base(key) + "v"

    def counter(self, key: str) -> str:
        return self._base(key) + "n"


class WindowArgs:
    """ARGV[7..12] of the ledger script for a window, as seen from time ``at``.

    Fixed and month windows in a time zone need calendar and DST arithmetic, which
    stays in Python (``Window.bounds``): the client sends the window it thinks holds
    the server's time and the one after it, and the script picks by ``TIME``. If the
    server's time is in neither (a client clock far off), the script says so and the
    client asks again with bounds for the time the server reported. Bounds are
    cached per window until ``at`` leaves them.
    """

    def __init__(self) -> None:
        self._calendar: dict[Window, tuple[float, float, float]] = {}

    def args(self, window: Window, at: float) -> list[str]:
        wid = window_id(window)
        if window.kind == "forever":
            return [wid, "i", "0", "", "", ""]
        if window.kind == "sliding":
            return [wid, "s", repr(window.seconds), "", "", ""]
        seconds = repr(window.seconds) if math.isfinite(window.seconds) else "0"
        start, end, next_end = self._bounds(window, at)
        return [wid, "c", seconds, repr(start), repr(end), repr(next_end)]

    def _bounds(self, window: Window, at: float) -> tuple[float, float, float]:
        cached = self._calendar.get(window)
        if cached is not None and cached[0] <= at < cached[1]:
            return cached
        start, end = window.bounds(at)
        bounds = (start, end, window.bounds(end)[1])
        if len(self._calendar) >= 256:
            self._calendar.clear()
        self._calendar[window] = bounds
        return bounds

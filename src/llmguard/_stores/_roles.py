"""The store roles: narrow protocols that each guard asks for, and no more.

- ``BudgetLedger``: reserve, extend, settle, release and read usage, each keyed by a
  reservation id so that repeating a command (a retry after a lost reply) is a no-op.
- ``CacheStore``: get, set with a TTL, delete, and a short lock for single flight.
- ``SharedState``: small versioned values with compare-and-set and counters, for
  circuit breakers shared between workers.

``MemoryStore``, ``SQLiteStore`` and ``RedisStore`` implement all three; one contract
suite runs against each. Amounts are integers (tokens, or micro-dollars). Window
arithmetic uses the *store's* wall clock (Redis: the server's ``TIME``), never the
caller's, so clients whose clocks drift agree.
"""

from __future__ import annotations

import calendar
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable
from zoneinfo import ZoneInfo

__all__ = ["BudgetLedger", "CacheStore", "LedgerResult", "SharedState", "Versioned", "Window"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    """The time window a budget counts over.

    - ``Window.fixed(seconds)``: windows aligned to the clock (an hour window runs
      from :00 to :00, in ``tz``), reset at their end.
    - ``Window.sliding(seconds)``: the last ``seconds`` before now.
    - ``Window.month(tz)``: calendar months in ``tz``.
    - ``Window.forever()``: never resets.
    """

    kind: str  # "fixed", "sliding", "month", "forever"
    seconds: float = math.inf
    tz: str = "UTC"

    @classmethod
    def fixed(cls, length: float | timedelta, *, tz: str = "UTC") -> Window:
        """Fixed windows of ``length``, aligned to midnight of 1970-01-01 in ``tz``."""
        seconds = length.total_seconds() if isinstance(length, timedelta) else float(length)
        if not seconds > 0:
            raise ValueError(f"a window needs a positive length, not {length!r}")
        return cls(kind="fixed", seconds=seconds, tz=tz)

    @classmethod
    def sliding(cls, length: float | timedelta) -> Window:
        """A sliding window: what was settled in the last ``length``."""
        seconds = length.total_seconds() if isinstance(length, timedelta) else float(length)
        if not seconds > 0:
            raise ValueError(f"a window needs a positive length, not {length!r}")
        return cls(kind="sliding", seconds=seconds)

    @classmethod
    def month(cls, *, tz: str = "UTC") -> Window:
        """Calendar months in the time zone ``tz``."""
        ZoneInfo(tz)  # fail early on an unknown zone
        return cls(kind="month", tz=tz)

    @classmethod
    def forever(cls) -> Window:
        """One window that never ends."""
        return cls(kind="forever")

    def bounds(self, now: float) -> tuple[float, float]:
        """Start and end (epoch seconds) of the window holding ``now``.

        For a sliding window this is ``(now - seconds, now + seconds)``: the end is the
        latest moment by which everything counted now has slid out.
        """
        if self.kind == "forever":
            return (-math.inf, math.inf)
        if self.kind == "sliding":
            return (now - self.seconds, now + self.seconds)
        zone = ZoneInfo(self.tz)
        local = datetime.fromtimestamp(now, zone)
        if self.kind == "month":
            start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            days = calendar.monthrange(start.year, start.month)[1]
            end = (start + timedelta(days=days)).replace(day=1)
            return (start.timestamp(), end.replace(tzinfo=zone).timestamp())
        offset = local.utcoffset() or timedelta(0)
        shifted = now + offset.total_seconds()
        start_shifted = math.floor(shifted / self.seconds) * self.seconds
        first = start_shifted - offset.total_seconds()
        return (first, first + self.seconds)

    def reset_at(self, now: float) -> datetime | None:
        """When the window holding ``now`` ends, as an aware datetime (``None``: never)."""
        end = self.bounds(now)[1]
        return None if math.isinf(end) else datetime.fromtimestamp(end, UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerResult:
    """The ledger's answer. ``ok`` is false when a reserve/extend did not fit.

    ``used`` is what was settled in the current window, ``reserved`` what is held by
    open reservations (this one included when it was admitted), ``reset_at`` the end
    of the window in epoch seconds (``inf`` for none).
    """

    ok: bool
    used: int
    reserved: int
    limit: int | None
    reset_at: float

    @property
    def remaining(self) -> int | None:
        """What is left to reserve now (never negative), ``None`` when unlimited."""
        if self.limit is None:
            return None
        return max(0, self.limit - self.used - self.reserved)


@runtime_checkable
class BudgetLedger(Protocol):
    """Atomic budget accounting keyed by scope and reservation id.

    Every command is idempotent per ``reservation_id``: repeating a reserve returns
    the first answer without holding twice; repeating settle or release is a no-op.
    A reservation not settled or released within ``hold`` seconds expires.
    """

    async def reserve(
        self, key: str, reservation_id: str, amount: int, *, limit: int, window: Window, hold: float
    ) -> LedgerResult:
        """Hold ``amount`` if ``used + reserved + amount <= limit``; else refuse (``ok=False``)."""
        ...

    async def extend(
        self, key: str, reservation_id: str, amount: int, *, limit: int, window: Window, hold: float
    ) -> LedgerResult:
        """Add ``amount`` to an open reservation if it fits (the step id makes it idempotent:
        pass ``f"{reservation_id}/{n}"`` style ids through ``reservation_id``)."""
        ...

    async def settle(
        self, key: str, reservation_id: str, amount: int, *, window: Window
    ) -> LedgerResult:
        """Close the reservation and count ``amount`` (the real usage) in the current window."""
        ...

    async def release(self, key: str, reservation_id: str, *, window: Window) -> LedgerResult:
        """Close the reservation without counting anything."""
        ...

    async def usage(self, key: str, *, window: Window, limit: int | None = None) -> LedgerResult:
        """Read used, reserved and reset time without changing anything."""
        ...


@runtime_checkable
class CacheStore(Protocol):
    """Bytes under string keys with a TTL, plus a short lock for single flight."""

    async def get(self, key: str) -> bytes | None:
        """The value, or ``None`` when missing or expired."""
        ...

    async def set(self, key: str, value: bytes, *, ttl: float | None) -> None:
        """Store ``value`` for ``ttl`` seconds (``None``: until evicted)."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the value if present."""
        ...

    async def acquire_lock(self, key: str, *, ttl: float) -> str | None:
        """Take the lock ``key`` for at most ``ttl`` seconds: a token, or ``None`` if held."""
        ...

    async def release_lock(self, key: str, token: str) -> bool:
        """Release the lock if ``token`` still holds it; true when it did."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Versioned:
    """A shared value and its version (incremented by every successful write)."""

    value: bytes
    version: int


@runtime_checkable
class SharedState(Protocol):
    """Small shared values for circuit breakers: compare-and-set and counters."""

    async def read(self, key: str) -> Versioned | None:
        """The value and its version, or ``None`` when missing or expired."""
        ...

    async def compare_and_set(
        self, key: str, version: int, value: bytes, *, ttl: float | None
    ) -> bool:
        """Write ``value`` if the stored version is ``version`` (0: missing); true on success."""
        ...

    async def increment(self, key: str, amount: int, *, ttl: float | None) -> int:
        """Add ``amount`` to the counter ``key`` (missing: 0) and return the new value."""
        ...

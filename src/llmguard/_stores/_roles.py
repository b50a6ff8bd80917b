"""The store roles: narrow protocols that each guard asks for, and no more.

- ``BudgetLedger``: reserve, extend, settle, release and read usage, each keyed by a
  reservation id so that repeating a command (a retry after a lost reply) is a no-op.
  A ledger may also offer ``reserve_many`` and ``settle_many`` (``BatchLedger``): the
  same commands for several keys at once, which budgets then use (one command per
  phase of a call, whatever the number of limits); without them budgets loop.
- ``CacheStore``: get, set with a TTL, delete, and a short lock for single flight.
- ``SharedState``: small versioned values with compare-and-set and counters, for
  circuit breakers shared between workers.

``MemoryStore``, ``SQLiteStore`` and ``RedisStore`` implement all three; one contract
suite runs against each. Amounts are integers (tokens, or micro-dollars). Window
arithmetic uses the *store's* wall clock (Redis: the server's ``TIME``), never the
caller's, so clients whose clocks drift agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, NamedTuple, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

from .._errors import ConfigurationError
from .._fast_init import fast_init

__all__ = [
    "BatchLedger",
    "BudgetLedger",
    "CacheStore",
    "LedgerEntry",
    "LedgerResult",
    "SharedState",
    "StoreErrorPolicy",
    "Versioned",
    "Window",
]

#: What a guard does when its store raises ``StoreUnavailable`` (``on_store_error=``):
#: ``"closed"`` refuses the call (the error propagates), ``"open"`` lets the call go on
#: as if the store were not there. Budgets default to ``"closed"`` (never overspend),
#: caches to ``"open"`` (a cache miss is always safe). Every store decides within its
#: ``timeout`` (default 250 ms), so either policy answers within a bounded time.
StoreErrorPolicy = Literal["closed", "open"]


_NAIVE_EPOCH = datetime(1970, 1, 1)


def _offset(instant: float, zone: ZoneInfo) -> float:
    """The UTC offset of ``zone`` at ``instant``, in seconds."""
    offset = datetime.fromtimestamp(instant, zone).utcoffset()
    return offset.total_seconds() if offset is not None else 0.0


def _wall(instant: float, zone: ZoneInfo) -> float:
    """What the wall clock in ``zone`` shows at ``instant``, as naive seconds since 1970."""
    return instant + _offset(instant, zone)


def _instant(wall: float, zone: ZoneInfo) -> float:
    """The first instant at which the wall clock in ``zone`` shows ``wall`` or later."""
    naive = _NAIVE_EPOCH + timedelta(seconds=wall)
    offsets: set[float] = set()
    for fold in (0, 1):
        delta = naive.replace(tzinfo=zone, fold=fold).utcoffset()
        offsets.add(delta.total_seconds() if delta is not None else 0.0)
    for offset in sorted(offsets, reverse=True):  # the larger offset is the earlier instant
        if _offset(wall - offset, zone) == offset:
            return wall - offset
    # ``wall`` falls into a gap: find the transition (zone data has whole seconds).
    low, high = math.floor(wall - max(offsets)), math.ceil(wall - min(offsets))
    while high - low > 1:
        middle = (low + high) // 2
        if _wall(middle, zone) >= wall:
            high = middle
        else:
            low = middle
    return float(high)


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
        if not 0 < seconds < math.inf:
            raise ConfigurationError(
                f"a fixed window needs a positive, finite length, not {length!r}"
            )
        ZoneInfo(tz)  # fail early on an unknown zone
        return cls(kind="fixed", seconds=seconds, tz=tz)

    @classmethod
    def sliding(cls, length: float | timedelta) -> Window:
        """A sliding window: what was settled in the last ``length``."""
        seconds = length.total_seconds() if isinstance(length, timedelta) else float(length)
        if not seconds > 0:
            raise ConfigurationError(f"a window needs a positive length, not {length!r}")
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

        Fixed and month windows are bounded by wall-clock times in ``tz``. A boundary
        that falls into a DST gap starts when the gap ends; one that the clock shows
        twice starts at its first occurrence. So windows never overlap and never skip
        a moment: a day window on a DST day lasts 23 or 25 hours, and the hour window
        holding the repeated hour lasts two.
        """
        if self.kind == "forever":
            return (-math.inf, math.inf)
        if self.kind == "sliding":
            return (now - self.seconds, now + self.seconds)
        if self.kind == "fixed" and self.tz == "UTC":
            start = math.floor(now / self.seconds) * self.seconds
            return (start, start + self.seconds)
        zone = ZoneInfo(self.tz)
        if self.kind == "month":
            local = datetime.fromtimestamp(now, zone)
            index = (local.year - 1970) * 12 + local.month - 1

            def boundary(k: int) -> float:
                first = datetime(1970 + k // 12, k % 12 + 1, 1)
                return (first - _NAIVE_EPOCH).total_seconds()
        else:
            index = math.floor(_wall(now, zone) / self.seconds)

            def boundary(k: int) -> float:
                return k * self.seconds

        start, end = _instant(boundary(index), zone), _instant(boundary(index + 1), zone)
        while end <= now:  # ``now`` is in a repeated stretch whose first pass passed `end`
            index += 1
            start, end = end, _instant(boundary(index + 1), zone)
        return (start, end)

    def reset_at(self, now: float) -> datetime | None:
        """When the window holding ``now`` ends, as an aware datetime (``None``: never)."""
        end = self.bounds(now)[1]
        return None if math.isinf(end) else datetime.fromtimestamp(end, UTC)


def window_id(window: Window) -> str:
    """A stable text name for ``window`` (equal windows, equal names), for stored keys."""
    return f"{window.kind}/{window.seconds!r}/{window.tz}"


@fast_init
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


class LedgerEntry(NamedTuple):
    """One key of a batched ledger command (``reserve_many``, ``settle_many``).

    ``amount`` is what to hold (``reserve_many``) or to count (``settle_many``, where
    ``None`` releases the reservation instead of settling it); ``limit`` is the key's
    limit (``reserve_many`` needs it, ``settle_many`` ignores it).

    >>> LedgerEntry("budget:daily:tokens:global", Window.fixed(86400), 500, limit=10_000).amount
    500
    """

    key: str
    window: Window
    amount: int | None
    limit: int | None = None


@runtime_checkable
class BatchLedger(Protocol):
    """The batched commands a ``BudgetLedger`` may also offer, for several keys under one
    reservation id in one command (one lock, one transaction, one round trip).

    A budget with several limits uses them when its store has them (``MemoryStore``,
    ``SQLiteStore`` and ``RedisStore`` do), and otherwise sends one command per key.
    Each entry obeys the rules of the single-key command, idempotence included.
    """

    async def reserve_many(
        self, reservation_id: str, entries: Sequence[LedgerEntry], *, hold: float
    ) -> list[LedgerResult]:
        """``reserve`` every entry, all or none.

        Entries are reserved in order; at the first that does not fit, the holds this
        command made are undone (nothing of it stays held) and the answer stops there:
        one result per entry up to the refused one, whose result has ``ok=False``. When
        every entry fits, one result per entry, all ``ok``.
        """
        ...

    async def settle_many(
        self, reservation_id: str, entries: Sequence[LedgerEntry]
    ) -> list[LedgerResult]:
        """``settle`` every entry (``release`` those whose ``amount`` is ``None``); one
        result per entry, in order."""
        ...


@runtime_checkable
class InstantLedger(Protocol):
    """A ledger in this process's memory (``MemoryStore``), which budgets drive through
    two leaner commands (internal): a reserve answering only what they read, and a
    settle that is a plain call, so the end of a call needs no shield, no time bound
    and no trip through the event loop."""

    def plain_calls(self, *names: str) -> bool:
        """Whether the commands ``names`` are the store's own (not wrapped or replaced):
        only then may the plain calls stand in for them."""
        ...

    async def reserve_all(
        self, reservation_id: str, entries: Sequence[LedgerEntry], *, hold: float
    ) -> tuple[int, LedgerResult] | None:
        """``reserve_many``: ``None`` when all were reserved, else ``(index, refusal)``."""
        ...

    def settle_all_now(
        self, reservation_id: str, entries: Sequence[LedgerEntry]
    ) -> list[tuple[int, int, float]]:
        """``settle_many``, done when it returns: ``(used, reserved, reset_at)`` each."""
        ...


@runtime_checkable
class InstantCache(Protocol):
    """A cache store in this process's memory (``MemoryStore``), which caches read and
    write with plain calls (internal): a command in memory has nothing to wait for."""

    def plain_calls(self, *names: str) -> bool:
        """Whether the commands ``names`` are the store's own (not wrapped or replaced):
        only then may the plain calls stand in for them."""
        ...

    def get_now(self, key: str) -> bytes | None:
        """``get``, as a plain call."""
        ...

    def set_now(self, key: str, value: bytes, *, ttl: float | None) -> None:
        """``set``, as a plain call."""
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


@fast_init
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

"""The in-memory budget ledger behind ``MemoryStore`` (synchronous; the store locks).

State per key (a budget scope):

- ``holds``: open reservations, each with its amount, its expiry and the extend step
  ids already applied to it. A reservation expires when ``now > expires``; expired
  ones are dropped lazily whenever the key is touched.
- ``closed``: ids settled or released recently, so that repeating a command is a no-op.
  Each is remembered at least ``max(hold, window length if finite, 3600)`` seconds.
- ``usage``: what was settled, per window. Fixed and month windows keep the window
  start and a total (a new start means the window rolled over: the total restarts at
  0); sliding windows keep ``(time, amount)`` entries, counted while
  ``time > now - seconds``; the forever window keeps a total.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from ._roles import LedgerResult, Window

__all__ = ["MemoryLedger"]

#: Closed reservation ids are remembered at least this long (seconds).
MIN_CLOSED_MEMORY = 3600.0


@dataclass(slots=True)
class _Hold:
    amount: int
    expires: float
    hold: float
    steps: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Usage:
    start: float = -math.inf  # fixed, month, forever: the window the total belongs to
    total: int = 0  # sliding: the sum of the entries
    entries: deque[tuple[float, int]] = field(default_factory=deque)  # sliding


@dataclass(slots=True)
class _Account:
    holds: dict[str, _Hold] = field(default_factory=dict)
    closed: dict[str, float] = field(default_factory=dict)  # id -> forget after
    usage: dict[Window, _Usage] = field(default_factory=dict)

    def prune(self, now: float) -> None:
        """Drop expired reservations and closed ids past their memory."""
        for rid in [rid for rid, h in self.holds.items() if now > h.expires]:
            del self.holds[rid]
        # Closed ids are kept in the order they closed: drop from the oldest while they
        # are past their memory (O(dropped), not a scan of every id on every command; an
        # id behind a longer-remembered one is forgotten when that one is).
        closed = self.closed
        while closed:
            rid = next(iter(closed))
            if not now > closed[rid]:
                break
            del closed[rid]

    def used(self, window: Window, now: float) -> tuple[int, float]:
        """What was settled in the window holding ``now``, and when that count resets."""
        usage = self.usage.get(window)
        if window.kind == "sliding":
            if usage is None:
                return 0, now + window.seconds
            entries = usage.entries
            while entries and entries[0][0] <= now - window.seconds:
                usage.total -= entries.popleft()[1]
            reset = entries[0][0] + window.seconds if entries else now + window.seconds
            return usage.total, reset
        start, end = window.bounds(now)
        if usage is None or usage.start != start:
            return 0, end
        return usage.total, end

    def count(self, window: Window, amount: int, now: float) -> None:
        """Add settled ``amount`` to the window holding ``now``."""
        usage = self.usage.setdefault(window, _Usage())
        if window.kind == "sliding":
            usage.entries.append((now, amount))
            usage.total += amount
            return
        start = window.bounds(now)[0]
        if usage.start != start:
            usage.start, usage.total = start, 0
        usage.total += amount

    def reserved(self) -> int:
        return sum(h.amount for h in self.holds.values())

    def close(self, rid: str, window: Window, now: float) -> None:
        hold = self.holds.pop(rid, None)
        memory = max(
            hold.hold if hold is not None else 0.0,
            window.seconds if math.isfinite(window.seconds) else 0.0,
            MIN_CLOSED_MEMORY,
        )
        self.closed[rid] = now + memory

    def is_idle(self, now: float) -> bool:
        """True when dropping the account changes nothing anyone can observe."""
        if self.holds or self.closed:
            return False
        return all(self.used(window, now)[0] == 0 for window in self.usage)


def _check_amount(amount: int) -> None:
    if amount < 0:
        raise ValueError(f"amounts are never negative, not {amount!r}")


class MemoryLedger:
    """The ``BudgetLedger`` commands as plain synchronous methods taking ``now``.

    Not thread-safe by itself: ``MemoryStore`` calls it under its lock.
    """

    def __init__(self) -> None:
        self._accounts: dict[str, _Account] = {}

    def __len__(self) -> int:
        return len(self._accounts)

    def _account(self, key: str, now: float) -> _Account:
        account = self._accounts.get(key)
        if account is None:
            account = self._accounts[key] = _Account()
        account.prune(now)
        return account

    def _result(
        self, ok: bool, account: _Account, window: Window, now: float, limit: int | None
    ) -> LedgerResult:
        used, reset_at = account.used(window, now)
        return LedgerResult(
            ok=ok, used=used, reserved=account.reserved(), limit=limit, reset_at=reset_at
        )

    def _fits(self, account: _Account, window: Window, now: float, amount: int, limit: int) -> bool:
        return account.used(window, now)[0] + account.reserved() + amount <= limit

    def reserve(
        self,
        key: str,
        rid: str,
        amount: int,
        *,
        limit: int,
        window: Window,
        hold: float,
        now: float,
    ) -> LedgerResult:
        """Hold ``amount`` under ``rid`` if it fits; a repeat of a held or closed id is ok."""
        _check_amount(amount)
        account = self._account(key, now)
        if rid in account.holds or rid in account.closed:
            return self._result(True, account, window, now, limit)
        if not self._fits(account, window, now, amount, limit):
            return self._result(False, account, window, now, limit)
        account.holds[rid] = _Hold(amount=amount, expires=now + hold, hold=hold)
        return self._result(True, account, window, now, limit)

    def extend(
        self,
        key: str,
        step_id: str,
        amount: int,
        *,
        limit: int,
        window: Window,
        hold: float,
        now: float,
    ) -> LedgerResult:
        """Add ``amount`` to the reservation named by ``step_id`` (``"<rid>/<step>"``).

        Applied once per ``step_id``. An open reservation grows if the amount fits, and
        its expiry moves to ``now + hold``. A closed one holds nothing more (ok). An
        unknown or expired one is reserved afresh with ``amount`` under ``<rid>``.
        """
        _check_amount(amount)
        rid = step_id.rpartition("/")[0] or step_id
        account = self._account(key, now)
        if rid in account.closed:
            return self._result(True, account, window, now, limit)
        current = account.holds.get(rid)
        if current is not None and step_id in current.steps:
            return self._result(True, account, window, now, limit)
        if not self._fits(account, window, now, amount, limit):
            return self._result(False, account, window, now, limit)
        if current is None:
            current = account.holds[rid] = _Hold(amount=0, expires=now, hold=hold)
        current.amount += amount
        current.expires = now + hold
        current.hold = max(current.hold, hold)
        current.steps.add(step_id)
        return self._result(True, account, window, now, limit)

    def settle(
        self, key: str, rid: str, amount: int, *, window: Window, now: float
    ) -> LedgerResult:
        """Close ``rid`` and count ``amount``; a repeat is a no-op, a late one still counts."""
        _check_amount(amount)
        account = self._account(key, now)
        if rid not in account.closed:
            account.close(rid, window, now)
            account.count(window, amount, now)
        return self._result(True, account, window, now, None)

    def release(self, key: str, rid: str, *, window: Window, now: float) -> LedgerResult:
        """Close ``rid`` without counting; a no-op for unknown or closed ids."""
        account = self._account(key, now)
        if rid in account.holds:
            account.close(rid, window, now)
        return self._result(True, account, window, now, None)

    def usage(self, key: str, *, window: Window, limit: int | None, now: float) -> LedgerResult:
        """Used, reserved and reset time of ``key``."""
        account = self._accounts.get(key)
        if account is None:
            return self._result(True, _Account(), window, now, limit)
        account.prune(now)
        return self._result(True, account, window, now, limit)

    def sweep(self, now: float) -> None:
        """Forget every account that holds nothing and counts nothing."""
        for key in list(self._accounts):
            account = self._accounts[key]
            account.prune(now)
            if account.is_idle(now):
                del self._accounts[key]

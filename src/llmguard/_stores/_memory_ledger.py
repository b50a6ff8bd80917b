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
from collections.abc import Sequence
from dataclasses import dataclass, field

from ._roles import LedgerEntry, LedgerResult, Window

__all__ = ["MemoryLedger"]

#: Closed reservation ids are remembered at least this long (seconds).
MIN_CLOSED_MEMORY = 3600.0


class _Hold:
    """An open reservation: its amount, expiry, hold, and the extend steps applied."""

    __slots__ = ("amount", "expires", "hold", "steps")

    def __init__(self, amount: int, expires: float, hold: float) -> None:
        self.amount = amount
        self.expires = expires
        self.hold = hold
        self.steps: set[str] | None = None  # made by the first extend


@dataclass(slots=True)
class _Usage:
    start: float = -math.inf  # fixed, month, forever: the window the total belongs to
    end: float = -math.inf  # ... and its end (a time in [start, end) needs no bounds())
    total: int = 0  # sliding: the sum of the entries
    entries: deque[tuple[float, int]] = field(default_factory=deque)  # sliding


@dataclass(slots=True)
class _Account:
    holds: dict[str, _Hold] = field(default_factory=dict)
    closed: dict[str, float] = field(default_factory=dict)  # id -> forget after
    usage: dict[Window, _Usage] = field(default_factory=dict)
    held: int = 0  # the sum of the holds' amounts, kept in step with ``holds``
    # No hold expires before this (a lower bound: dropping a hold leaves it as it is),
    # so a command scans the holds for expired ones only once one may have expired.
    earliest: float = math.inf
    # The window last counted in and its usage: a budget uses the same Window object
    # call after call, and an identity test is cheaper than hashing a Window.
    last_window: Window | None = None
    last_usage: _Usage | None = None

    def prune(self, now: float) -> None:
        """Drop expired reservations and closed ids past their memory."""
        holds = self.holds
        if now > self.earliest:
            for rid in [rid for rid, h in holds.items() if now > h.expires]:
                self.held -= holds.pop(rid).amount
            self.earliest = min((h.expires for h in holds.values()), default=math.inf)
        # Closed ids are kept in the order they closed: drop from the oldest while they
        # are past their memory (O(dropped), not a scan of every id on every command; an
        # id behind a longer-remembered one is forgotten when that one is).
        closed = self.closed
        while closed:
            rid = next(iter(closed))
            if not now > closed[rid]:
                break
            del closed[rid]

    def _usage_of(self, window: Window, *, create: bool) -> _Usage | None:
        if window is self.last_window:
            return self.last_usage
        usage = self.usage.get(window)
        if usage is None:
            if not create:
                return None
            usage = self.usage[window] = _Usage()
        self.last_window, self.last_usage = window, usage
        return usage

    def used(self, window: Window, now: float) -> tuple[int, float]:
        """What was settled in the window holding ``now``, and when that count resets."""
        usage = self._usage_of(window, create=False)
        if window.kind == "sliding":
            if usage is None:
                return 0, now + window.seconds
            entries = usage.entries
            while entries and entries[0][0] <= now - window.seconds:
                usage.total -= entries.popleft()[1]
            reset = entries[0][0] + window.seconds if entries else now + window.seconds
            return usage.total, reset
        if usage is not None and usage.start <= now < usage.end:  # the window counted in
            return usage.total, usage.end
        start, end = window.bounds(now)
        if usage is None or usage.start != start:
            return 0, end
        return usage.total, end

    def count(self, window: Window, amount: int, now: float) -> tuple[int, float]:
        """Add settled ``amount`` to the window holding ``now``; then ``used``'s answer."""
        usage = self._usage_of(window, create=True)
        assert usage is not None
        if window.kind == "sliding":
            usage.entries.append((now, amount))
            usage.total += amount
            return self.used(window, now)
        if not usage.start <= now < usage.end:  # another window than the one counted in
            start, end = window.bounds(now)
            if usage.start != start:
                usage.start, usage.total = start, 0
            usage.end = end
        usage.total += amount
        return usage.total, usage.end

    def hold(self, rid: str, amount: int, expires: float, hold: float) -> None:
        """Hold ``amount`` under a new reservation ``rid``."""
        self.holds[rid] = _Hold(amount, expires, hold)
        self.held += amount
        if expires < self.earliest:
            self.earliest = expires

    def drop(self, rid: str) -> _Hold | None:
        """Forget the reservation ``rid`` (not closing it); what it held."""
        hold = self.holds.pop(rid, None)
        if hold is not None:
            self.held -= hold.amount
        return hold

    def close(self, rid: str, window: Window, now: float) -> None:
        hold = self.drop(rid)
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
        return LedgerResult(ok=ok, used=used, reserved=account.held, limit=limit, reset_at=reset_at)

    def _fits(self, account: _Account, window: Window, now: float, amount: int, limit: int) -> bool:
        return account.used(window, now)[0] + account.held + amount <= limit

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
        account.hold(rid, amount, now + hold, hold)
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
        if current is not None and current.steps is not None and step_id in current.steps:
            return self._result(True, account, window, now, limit)
        if not self._fits(account, window, now, amount, limit):
            return self._result(False, account, window, now, limit)
        if current is None:
            current = account.holds[rid] = _Hold(0, now, hold)
        current.amount += amount
        account.held += amount
        current.expires = now + hold
        if current.expires < account.earliest:
            account.earliest = current.expires
        current.hold = max(current.hold, hold)
        if current.steps is None:
            current.steps = set()
        current.steps.add(step_id)
        return self._result(True, account, window, now, limit)

    def settle(
        self, key: str, rid: str, amount: int, *, window: Window, now: float
    ) -> LedgerResult:
        """Close ``rid`` and count ``amount``; a repeat is a no-op, a late one still counts."""
        _check_amount(amount)
        account = self._account(key, now)
        if rid in account.closed:
            return self._result(True, account, window, now, None)
        account.close(rid, window, now)
        used, reset_at = account.count(window, amount, now)
        return LedgerResult(
            ok=True, used=used, reserved=account.held, limit=None, reset_at=reset_at
        )

    def release(self, key: str, rid: str, *, window: Window, now: float) -> LedgerResult:
        """Close ``rid`` without counting; a no-op for unknown or closed ids."""
        account = self._account(key, now)
        if rid in account.holds:
            account.close(rid, window, now)
        return self._result(True, account, window, now, None)

    def reserve_many(
        self, rid: str, entries: Sequence[LedgerEntry], *, hold: float, now: float
    ) -> list[LedgerResult]:
        """``reserve`` each entry under ``rid``, all or none (see ``BatchLedger``)."""
        results: list[LedgerResult] = []
        self._reserve_all(rid, entries, hold, now, results)
        return results

    def reserve_all(
        self, rid: str, entries: Sequence[LedgerEntry], *, hold: float, now: float
    ) -> tuple[int, LedgerResult] | None:
        """``reserve_many`` answering only what a budget reads: ``None`` when every entry
        was reserved, else the index of the one that did not fit and its refusal."""
        return self._reserve_all(rid, entries, hold, now, None)

    def _reserve_all(
        self,
        rid: str,
        entries: Sequence[LedgerEntry],
        hold: float,
        now: float,
        results: list[LedgerResult] | None,
    ) -> tuple[int, LedgerResult] | None:
        for entry in entries:  # nothing changes on a bad entry
            amount = entry.amount
            if amount is None or entry.limit is None:
                raise ValueError(f"reserve_many needs an amount and a limit: {entry!r}")
            if amount < 0:
                _check_amount(amount)
        made: list[_Account] = []
        accounts = self._accounts
        for index, (key, window, amount, limit) in enumerate(entries):
            assert amount is not None
            assert limit is not None
            account = accounts.get(key)
            if account is None:
                account = accounts[key] = _Account()
            account.prune(now)
            used, reset_at = account.used(window, now)
            if rid not in account.holds and rid not in account.closed:
                if used + account.held + amount > limit:
                    for undo in made:  # all or none
                        undo.drop(rid)
                    refused = LedgerResult(
                        ok=False, used=used, reserved=account.held, limit=limit, reset_at=reset_at
                    )
                    if results is not None:
                        results.append(refused)
                    return index, refused
                expires = now + hold
                account.holds[rid] = _Hold(amount, expires, hold)
                account.held += amount
                if expires < account.earliest:
                    account.earliest = expires
                made.append(account)
            if results is not None:
                results.append(
                    LedgerResult(
                        ok=True, used=used, reserved=account.held, limit=limit, reset_at=reset_at
                    )
                )
        return None

    def settle_many(
        self, rid: str, entries: Sequence[LedgerEntry], *, now: float
    ) -> list[LedgerResult]:
        """``settle`` each entry under ``rid`` (``release`` where ``amount`` is ``None``)."""
        return [
            LedgerResult(ok=True, used=used, reserved=reserved, limit=None, reset_at=reset_at)
            for used, reserved, reset_at in self.settle_all(rid, entries, now=now)
        ]

    def settle_all(
        self, rid: str, entries: Sequence[LedgerEntry], *, now: float
    ) -> list[tuple[int, int, float]]:
        """``settle_many`` answering plain figures: ``(used, reserved, reset_at)`` per entry.

        (``settle`` and ``release`` inlined: this ends every budgeted call.)
        """
        for entry in entries:  # nothing changes on a bad entry
            amount = entry.amount
            if amount is not None and amount < 0:
                _check_amount(amount)
        figures: list[tuple[int, int, float]] = []
        accounts = self._accounts
        for key, window, amount, _ in entries:
            account = accounts.get(key)
            if account is None:
                account = accounts[key] = _Account()
            account.prune(now)
            if amount is None:  # release
                if rid in account.holds:
                    account.close(rid, window, now)
                used, reset_at = account.used(window, now)
            elif rid in account.closed:  # a repeat
                used, reset_at = account.used(window, now)
            else:
                account.close(rid, window, now)
                used, reset_at = account.count(window, amount, now)
            figures.append((used, account.held, reset_at))
        return figures

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

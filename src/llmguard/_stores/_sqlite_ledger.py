"""The budget ledger of ``SQLiteStore``, in SQL (synchronous; the store runs it in a
worker thread).

Each command first runs with ``write=False`` in a read transaction, which never waits
for the writer (WAL): a repeat, a refusal or a no-op is answered from that snapshot, a
correct answer as of the moment it was taken. Only a command that changes something
runs again with ``write=True``, inside ``BEGIN IMMEDIATE``, which re-checks everything
under the write lock. So a budget that is full costs its callers no write lock.

The semantics are ``MemoryLedger``'s, row for row:

- ``ledger_holds``: open reservations (open while ``expires >= now``; expired rows are
  ignored and swept later) with the extend step ids applied to them.
- ``ledger_closed``: settled or released ids, a no-op to repeat until ``forget``, which
  is ``max(hold, window length if finite, 3600)`` seconds after they closed.
- ``ledger_totals``: fixed, month and forever windows keep their start and total (a
  new start means the window rolled over, the total restarts at 0).
- ``ledger_entries``: sliding windows keep one row per settle, counted while
  ``at > now - seconds``.

A window is stored under ``window_id(window)``, so the same key counts separately in
each window it is used with, as in ``MemoryStore``.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Sequence

from ._memory_ledger import MIN_CLOSED_MEMORY
from ._roles import LedgerEntry, LedgerResult, Window, window_id

__all__ = [
    "extend",
    "release",
    "reserve",
    "reserve_many",
    "settle",
    "settle_many",
    "sweep",
    "usage",
]


def _used(conn: sqlite3.Connection, key: str, window: Window, now: float) -> tuple[int, float]:
    """What was settled in the window holding ``now``, and when that count resets."""
    wid = window_id(window)
    if window.kind == "sliding":
        total, first = conn.execute(
            "SELECT COALESCE(SUM(amount), 0), MIN(at) FROM ledger_entries "
            "WHERE scope = ? AND window = ? AND at > ?",
            (key, wid, now - window.seconds),
        ).fetchone()
        reset = now + window.seconds if first is None else first + window.seconds
        return int(total), reset
    start, end = window.bounds(now)
    row = conn.execute(
        "SELECT start, total FROM ledger_totals WHERE scope = ? AND window = ?", (key, wid)
    ).fetchone()
    if row is None or row[0] != start:
        return 0, end
    return int(row[1]), end


def _reserved(conn: sqlite3.Connection, key: str, now: float) -> int:
    (total,) = conn.execute(
        "SELECT COALESCE(SUM(amount), 0) FROM ledger_holds WHERE scope = ? AND expires >= ?",
        (key, now),
    ).fetchone()
    return int(total)


def _result(
    conn: sqlite3.Connection, ok: bool, key: str, window: Window, now: float, limit: int | None
) -> LedgerResult:
    used, reset_at = _used(conn, key, window, now)
    return LedgerResult(
        ok=ok, used=used, reserved=_reserved(conn, key, now), limit=limit, reset_at=reset_at
    )


def _fits(
    conn: sqlite3.Connection, key: str, window: Window, now: float, amount: int, limit: int
) -> bool:
    return _used(conn, key, window, now)[0] + _reserved(conn, key, now) + amount <= limit


def _is_closed(conn: sqlite3.Connection, key: str, rid: str, now: float) -> bool:
    row = conn.execute(
        "SELECT 1 FROM ledger_closed WHERE scope = ? AND rid = ? AND forget >= ?",
        (key, rid, now),
    ).fetchone()
    return row is not None


def _open_hold(
    conn: sqlite3.Connection, key: str, rid: str, now: float
) -> tuple[int, float, list[str]] | None:
    """``(amount, hold, steps)`` of the open reservation ``rid``, or ``None``."""
    row = conn.execute(
        "SELECT amount, hold, steps FROM ledger_holds WHERE scope = ? AND rid = ? AND expires >= ?",
        (key, rid, now),
    ).fetchone()
    if row is None:
        return None
    return int(row[0]), float(row[1]), list(json.loads(row[2]))


def _close(
    conn: sqlite3.Connection, key: str, rid: str, hold: float, window: Window, now: float
) -> None:
    conn.execute("DELETE FROM ledger_holds WHERE scope = ? AND rid = ?", (key, rid))
    memory = max(hold, window.seconds if math.isfinite(window.seconds) else 0.0, MIN_CLOSED_MEMORY)
    conn.execute(
        "INSERT OR REPLACE INTO ledger_closed (scope, rid, forget) VALUES (?, ?, ?)",
        (key, rid, now + memory),
    )


def _count(conn: sqlite3.Connection, key: str, window: Window, amount: int, now: float) -> None:
    wid = window_id(window)
    if window.kind == "sliding":
        conn.execute(
            "INSERT INTO ledger_entries (scope, window, at, amount, until) VALUES (?, ?, ?, ?, ?)",
            (key, wid, now, amount, now + window.seconds),
        )
        return
    start, end = window.bounds(now)
    conn.execute(
        "INSERT INTO ledger_totals (scope, window, start, total, until) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (scope, window) DO UPDATE SET "
        "total = CASE WHEN start = excluded.start THEN total + excluded.total "
        "ELSE excluded.total END, start = excluded.start, until = excluded.until",
        (key, wid, start, amount, end if math.isfinite(end) else None),
    )


def reserve(
    conn: sqlite3.Connection,
    now: float,
    key: str,
    rid: str,
    amount: int,
    *,
    limit: int,
    window: Window,
    hold: float,
    write: bool = True,
) -> LedgerResult | None:
    """Hold ``amount`` under ``rid`` if it fits; a repeat of a held or closed id is ok.

    With ``write=False``, the answer when it needs no write (a repeat, a refusal), else
    ``None``: the store then runs it again with ``write=True`` under the write lock.
    """
    if _open_hold(conn, key, rid, now) is not None or _is_closed(conn, key, rid, now):
        return _result(conn, True, key, window, now, limit)
    if not _fits(conn, key, window, now, amount, limit):
        return _result(conn, False, key, window, now, limit)
    if not write:
        return None
    conn.execute(
        "INSERT OR REPLACE INTO ledger_holds (scope, rid, amount, expires, hold, steps) "
        "VALUES (?, ?, ?, ?, ?, '[]')",
        (key, rid, amount, now + hold, hold),
    )
    return _result(conn, True, key, window, now, limit)


def extend(
    conn: sqlite3.Connection,
    now: float,
    key: str,
    step_id: str,
    amount: int,
    *,
    limit: int,
    window: Window,
    hold: float,
    write: bool = True,
) -> LedgerResult | None:
    """Add ``amount`` to the reservation named by ``step_id`` (``"<rid>/<step>"``), once."""
    rid = step_id.rpartition("/")[0] or step_id
    if _is_closed(conn, key, rid, now):
        return _result(conn, True, key, window, now, limit)
    current = _open_hold(conn, key, rid, now)
    if current is not None and step_id in current[2]:
        return _result(conn, True, key, window, now, limit)
    if not _fits(conn, key, window, now, amount, limit):
        return _result(conn, False, key, window, now, limit)
    if not write:
        return None
    held, longest, steps = current if current is not None else (0, hold, [])
    steps.append(step_id)
    conn.execute(
        "INSERT OR REPLACE INTO ledger_holds (scope, rid, amount, expires, hold, steps) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (key, rid, held + amount, now + hold, max(longest, hold), json.dumps(steps)),
    )
    return _result(conn, True, key, window, now, limit)


def settle(
    conn: sqlite3.Connection,
    now: float,
    key: str,
    rid: str,
    amount: int,
    *,
    window: Window,
    write: bool = True,
) -> LedgerResult | None:
    """Close ``rid`` and count ``amount``; a repeat is a no-op, a late one still counts."""
    if not _is_closed(conn, key, rid, now):
        if not write:
            return None
        current = _open_hold(conn, key, rid, now)
        _close(conn, key, rid, current[1] if current is not None else 0.0, window, now)
        _count(conn, key, window, amount, now)
    return _result(conn, True, key, window, now, None)


def release(
    conn: sqlite3.Connection,
    now: float,
    key: str,
    rid: str,
    *,
    window: Window,
    write: bool = True,
) -> LedgerResult | None:
    """Close ``rid`` without counting; a no-op for unknown, expired or closed ids."""
    current = _open_hold(conn, key, rid, now)
    if current is not None:
        if not write:
            return None
        _close(conn, key, rid, current[1], window, now)
    return _result(conn, True, key, window, now, None)


def reserve_many(
    conn: sqlite3.Connection,
    now: float,
    rid: str,
    entries: Sequence[LedgerEntry],
    *,
    hold: float,
    write: bool = True,
) -> list[LedgerResult] | None:
    """``reserve`` each entry under ``rid``, all or none (see ``BatchLedger``).

    With ``write=False``, the answer when it needs no write (every entry a repeat, or
    one that does not fit), else ``None``.
    """
    results: list[LedgerResult] = []
    made: list[str] = []
    for key, window, amount, limit in entries:
        assert amount is not None  # checked by the store
        assert limit is not None
        if _open_hold(conn, key, rid, now) is not None or _is_closed(conn, key, rid, now):
            results.append(_result(conn, True, key, window, now, limit))
            continue
        if not _fits(conn, key, window, now, amount, limit):
            for undo in made if write else ():  # all or none (inside the transaction)
                conn.execute("DELETE FROM ledger_holds WHERE scope = ? AND rid = ?", (undo, rid))
            results.append(_result(conn, False, key, window, now, limit))
            return results
        if not write:
            made.append(key)  # would hold: the answer needs the write lock
            used, reset_at = _used(conn, key, window, now)  # ... unless a later one refuses
            reserved = _reserved(conn, key, now) + amount  # (then it answers as held)
            results.append(
                LedgerResult(ok=True, used=used, reserved=reserved, limit=limit, reset_at=reset_at)
            )
            continue
        conn.execute(
            "INSERT OR REPLACE INTO ledger_holds (scope, rid, amount, expires, hold, steps) "
            "VALUES (?, ?, ?, ?, ?, '[]')",
            (key, rid, amount, now + hold, hold),
        )
        made.append(key)
        results.append(_result(conn, True, key, window, now, limit))
    if made and not write:
        return None
    return results


def settle_many(
    conn: sqlite3.Connection,
    now: float,
    rid: str,
    entries: Sequence[LedgerEntry],
    *,
    write: bool = True,
) -> list[LedgerResult] | None:
    """``settle`` each entry under ``rid`` (``release`` where ``amount`` is ``None``);
    with ``write=False``, ``None`` when any of them needs a write."""
    results: list[LedgerResult] = []
    for key, window, amount, _ in entries:
        if amount is None:
            result = release(conn, now, key, rid, window=window, write=write)
        else:
            result = settle(conn, now, key, rid, amount, window=window, write=write)
        if result is None:
            return None
        results.append(result)
    return results


def usage(
    conn: sqlite3.Connection, now: float, key: str, *, window: Window, limit: int | None
) -> LedgerResult:
    """Used, reserved and reset time of ``key``, changing nothing."""
    return _result(conn, True, key, window, now, limit)


def sweep(conn: sqlite3.Connection, now: float) -> None:
    """Delete what no longer counts anywhere (a margin of a second keeps float edges safe)."""
    past = now - 1.0
    conn.execute("DELETE FROM ledger_holds WHERE expires < ?", (past,))
    conn.execute("DELETE FROM ledger_closed WHERE forget < ?", (past,))
    conn.execute("DELETE FROM ledger_entries WHERE until < ?", (past,))
    conn.execute("DELETE FROM ledger_totals WHERE until IS NOT NULL AND until < ?", (past,))
    conn.execute("DELETE FROM cache WHERE expires IS NOT NULL AND expires <= ?", (now,))
    conn.execute("DELETE FROM locks WHERE expires <= ?", (now,))
    conn.execute("DELETE FROM shared_values WHERE expires IS NOT NULL AND expires <= ?", (now,))
    conn.execute("DELETE FROM counters WHERE expires IS NOT NULL AND expires <= ?", (now,))

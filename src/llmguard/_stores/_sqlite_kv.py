"""Cache values, locks, shared values and counters of ``SQLiteStore``, in SQL.

Synchronous functions taking the connection and the store's ``now``; the store runs
each in a worker thread, in one transaction (``BEGIN IMMEDIATE`` when it writes). The
semantics are ``MemoryStore``'s; a ``NULL`` expiry never expires, and a row counts
while ``now < expires`` (expired rows are ignored here and swept later).
"""

from __future__ import annotations

import sqlite3

from ._roles import Versioned

__all__ = [
    "acquire_lock",
    "compare_and_set",
    "delete",
    "get",
    "increment",
    "read",
    "release_lock",
    "set_value",
]


def _expiry(now: float, ttl: float | None) -> float | None:
    return None if ttl is None else now + ttl


def _live(expires: float | None, now: float) -> bool:
    return expires is None or now < expires


def get(conn: sqlite3.Connection, now: float, key: str) -> bytes | None:
    row = conn.execute("SELECT value, expires FROM cache WHERE key = ?", (key,)).fetchone()
    return bytes(row[0]) if row is not None and _live(row[1], now) else None


def set_value(
    conn: sqlite3.Connection, now: float, key: str, value: bytes, ttl: float | None
) -> None:
    if ttl is not None and ttl <= 0:
        conn.execute("DELETE FROM cache WHERE key = ?", (key,))
        return
    conn.execute(
        "INSERT OR REPLACE INTO cache (key, value, expires) VALUES (?, ?, ?)",
        (key, value, _expiry(now, ttl)),
    )


def delete(conn: sqlite3.Connection, now: float, key: str) -> None:
    conn.execute("DELETE FROM cache WHERE key = ?", (key,))


def acquire_lock(
    conn: sqlite3.Connection, now: float, key: str, token: str, ttl: float
) -> str | None:
    row = conn.execute("SELECT expires FROM locks WHERE key = ?", (key,)).fetchone()
    if row is not None and now < row[0]:
        return None
    conn.execute(
        "INSERT OR REPLACE INTO locks (key, token, expires) VALUES (?, ?, ?)",
        (key, token, now + ttl),
    )
    return token


def release_lock(conn: sqlite3.Connection, now: float, key: str, token: str) -> bool:
    row = conn.execute("SELECT token, expires FROM locks WHERE key = ?", (key,)).fetchone()
    if row is None or row[0] != token:
        return False
    conn.execute("DELETE FROM locks WHERE key = ?", (key,))
    return bool(now < row[1])


def read(conn: sqlite3.Connection, now: float, key: str) -> Versioned | None:
    row = conn.execute(
        "SELECT value, version, expires FROM shared_values WHERE key = ?", (key,)
    ).fetchone()
    if row is None or not _live(row[2], now):
        return None
    return Versioned(value=bytes(row[0]), version=int(row[1]))


def compare_and_set(
    conn: sqlite3.Connection, now: float, key: str, version: int, value: bytes, ttl: float | None
) -> bool:
    row = conn.execute(
        "SELECT version, expires FROM shared_values WHERE key = ?", (key,)
    ).fetchone()
    current = int(row[0]) if row is not None and _live(row[1], now) else 0
    if current != version:
        return False
    conn.execute(
        "INSERT OR REPLACE INTO shared_values (key, value, version, expires) VALUES (?, ?, ?, ?)",
        (key, value, version + 1, _expiry(now, ttl)),
    )
    return True


def increment(
    conn: sqlite3.Connection, now: float, key: str, amount: int, ttl: float | None
) -> int:
    row = conn.execute("SELECT count, expires FROM counters WHERE key = ?", (key,)).fetchone()
    if row is None or not _live(row[1], now):
        count, expires = amount, _expiry(now, ttl)
    else:
        count, expires = int(row[0]) + amount, row[1]
    conn.execute(
        "INSERT OR REPLACE INTO counters (key, count, expires) VALUES (?, ?, ?)",
        (key, count, expires),
    )
    return count

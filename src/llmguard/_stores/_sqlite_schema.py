"""The ``SQLiteStore`` schema and its migrations.

The database records its schema version in ``meta`` (``key = 'schema_version'``). A
database without ``meta`` is version 0 (new, or made by nothing we know). Opening a
store applies the steps of ``MIGRATIONS`` that the database has not had yet, in order,
inside one ``BEGIN IMMEDIATE`` transaction, so two processes opening the same new file
at once cannot both migrate it. A database newer than this llmguard is refused.

To change the schema, append a step; never edit one that has shipped.

Times are epoch seconds (``REAL``), amounts integers (tokens or micro-dollars).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from .._errors import ConfigurationError

__all__ = ["MIGRATIONS", "migrate", "schema_version"]

#: Step ``n`` (1-based) takes a database from version ``n - 1`` to ``n``.
MIGRATIONS: list[Sequence[str]] = [
    (
        # Budget ledger. Open reservations; ``steps`` is a JSON list of applied extend ids.
        """CREATE TABLE ledger_holds (
            scope TEXT NOT NULL, rid TEXT NOT NULL, amount INTEGER NOT NULL,
            expires REAL NOT NULL, hold REAL NOT NULL, steps TEXT NOT NULL DEFAULT '[]',
            PRIMARY KEY (scope, rid)) WITHOUT ROWID""",
        "CREATE INDEX ledger_holds_expires ON ledger_holds (expires)",
        # Settled or released ids, remembered until ``forget`` so repeats are no-ops.
        """CREATE TABLE ledger_closed (
            scope TEXT NOT NULL, rid TEXT NOT NULL, forget REAL NOT NULL,
            PRIMARY KEY (scope, rid)) WITHOUT ROWID""",
        "CREATE INDEX ledger_closed_forget ON ledger_closed (forget)",
        # Fixed, month and forever windows: the window's start and its settled total.
        """CREATE TABLE ledger_totals (
            scope TEXT NOT NULL, window TEXT NOT NULL, start REAL NOT NULL,
            total INTEGER NOT NULL, until REAL,
            PRIMARY KEY (scope, window)) WITHOUT ROWID""",
        # Sliding windows: one row per settle, counted while ``at > now - seconds``.
        """CREATE TABLE ledger_entries (
            scope TEXT NOT NULL, window TEXT NOT NULL, at REAL NOT NULL,
            amount INTEGER NOT NULL, until REAL NOT NULL)""",
        "CREATE INDEX ledger_entries_at ON ledger_entries (scope, window, at)",
        "CREATE INDEX ledger_entries_until ON ledger_entries (until)",
        # Cache, locks, shared values and counters; a NULL ``expires`` never expires.
        """CREATE TABLE cache (
            key TEXT PRIMARY KEY, value BLOB NOT NULL, expires REAL) WITHOUT ROWID""",
        "CREATE INDEX cache_expires ON cache (expires)",
        """CREATE TABLE locks (
            key TEXT PRIMARY KEY, token TEXT NOT NULL, expires REAL NOT NULL) WITHOUT ROWID""",
        """CREATE TABLE shared_values (
            key TEXT PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL,
            expires REAL) WITHOUT ROWID""",
        """CREATE TABLE counters (
            key TEXT PRIMARY KEY, count INTEGER NOT NULL, expires REAL) WITHOUT ROWID""",
    ),
]


def schema_version(conn: sqlite3.Connection) -> int:
    """The version recorded in the database (0 when it has none)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return 0 if row is None else int(row[0])


def migrate(conn: sqlite3.Connection, path: str) -> int:
    """Bring the database up to ``len(MIGRATIONS)``; returns the version it had."""
    target = len(MIGRATIONS)
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = schema_version(conn)
        if version > target:
            raise ConfigurationError(
                f"the SQLite store {path!r} has schema version {version}, newer than this "
                f"llmguard knows ({target}); upgrade llmguard or use another file"
            )
        if version < target:
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            for step in MIGRATIONS[version:]:
                for statement in step:
                    conn.execute(statement)
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(target),),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return version

"""``SQLiteStore``: the three store roles in one SQLite file, shared by the processes
of one host and kept across restarts.

Each command is one transaction run in a worker thread (``anyio.to_thread``), so the
event loop never blocks: commands that write take the database's write lock first
(``BEGIN IMMEDIATE``), so a read-modify-write is atomic across threads and processes.
The file is in WAL mode, so readers never wait for the writer.

Bounded failure: a command that cannot get its answer within ``timeout`` (the write
lock held by another process, a full disk, an I/O error) raises ``StoreUnavailable``
with the cause attached; the wait for the write lock is SQLite's busy timeout, set to
what is left of ``timeout`` on every command.
"""

from __future__ import annotations

import functools
import math
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

from . import _sqlite_kv as kv
from . import _sqlite_ledger as ledger
from ._failure import DEFAULT_TIMEOUT, Outage, check_hold, check_timeout
from ._memory_ledger import _check_amount
from ._roles import LedgerEntry, LedgerResult, Versioned, Window
from ._sqlite_schema import migrate

__all__ = ["SQLiteStore"]

T = TypeVar("T")
_Mode = Literal["write", "read", "single"]

#: Expired rows are swept by one in every this many writing commands (per process).
SWEEP_EVERY = 1024


class _LockTimeout(Exception):
    """The store's own connection stayed busy with other commands past the bound."""


class SQLiteStore:
    """A ``BudgetLedger``, ``CacheStore`` and ``SharedState`` in one SQLite file.

    ``SQLiteStore(path, clock=time.time, timeout=0.25)``. Every process on the host that
    opens the same ``path`` shares the budgets, cache, locks and shared values, and all
    of it survives a restart. ``clock`` returns wall-clock epoch seconds (all processes
    of one host share the wall clock); ``timeout`` bounds every command: a command that
    has no answer by then raises ``StoreUnavailable``.

    The file is created, and its schema migrated, on first use (or on ``async with``).
    ``aclose()`` closes the connection; a closed store opens again when used. The
    semantics of every command are ``MemoryStore``'s (one contract suite runs against
    both); unlike ``MemoryStore``, the cache is not capped: expired rows are swept.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._path = os.fspath(path)
        self._clock = clock
        self._timeout = check_timeout(timeout)
        self._outage = Outage(f"SQLiteStore({self._path!r})")
        self._lock = threading.Lock()  # one command at a time on the one connection
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._writes = 0

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r}, timeout={self._timeout!r})"

    async def __aenter__(self) -> SQLiteStore:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def connect(self) -> None:
        """Open the file and migrate its schema now, not on first use (``async with``
        does this). Raises ``ConfigurationError`` for a schema newer than this llmguard.
        """
        await self._run(lambda conn, now: None, "single")

    async def aclose(self) -> None:
        """Close the connection (waiting for a command in flight to finish)."""
        await anyio.to_thread.run_sync(self._close)

    def _close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                conn.close()

    # -- running a command -------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        """The connection of this process, opened (and the schema migrated) if needed."""
        if self._conn is None:
            if self._path != ":memory:":
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self._path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
            try:
                _use_wal(conn, self._timeout)
                conn.execute("PRAGMA synchronous = NORMAL")
                migrate(conn, self._path)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _call(
        self,
        fn: Callable[[sqlite3.Connection, float], T],
        mode: _Mode,
        deadline: float,
        precheck: Callable[[sqlite3.Connection, float], T | None] | None = None,
    ) -> T:
        """Run ``fn`` in one transaction (worker thread); gives up at ``deadline``.

        With ``precheck``, first run that in a read transaction: its answer, unless
        ``None``, is the result and the write lock is never taken.
        """
        pid = os.getpid()
        if self._pid != pid:  # forked: a fresh lock, and never the parent's connection
            self._lock, self._conn, self._pid = threading.Lock(), None, pid
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise _LockTimeout("the store's connection stayed busy with other commands")
        try:
            conn = self._connection()
            remaining = max(1, math.ceil((deadline - time.monotonic()) * 1000))
            conn.execute(f"PRAGMA busy_timeout = {remaining}")
            if mode == "single":
                return fn(conn, self._clock())
            if precheck is not None:
                conn.execute("BEGIN")
                try:
                    answer = precheck(conn, self._clock())
                finally:
                    conn.execute("COMMIT")
                if answer is not None:
                    return answer
            conn.execute("BEGIN IMMEDIATE" if mode == "write" else "BEGIN")
            try:
                now = self._clock()  # read with the lock held: commits follow the clock
                result = fn(conn, now)
                if mode == "write":
                    self._writes += 1
                    if self._writes % SWEEP_EVERY == 0:
                        ledger.sweep(conn, now)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result
        finally:
            self._lock.release()

    async def _run(
        self,
        fn: Callable[[sqlite3.Connection, float], T],
        mode: _Mode,
        precheck: Callable[[sqlite3.Connection, float], T | None] | None = None,
    ) -> T:
        deadline = time.monotonic() + self._timeout
        try:
            with anyio.fail_after(self._timeout):  # the bound runs from the call
                await anyio.lowlevel.checkpoint()
                call = functools.partial(self._call, fn, mode, deadline, precheck)
                result = await anyio.to_thread.run_sync(call)
        except TimeoutError as exc:
            ms = round(self._timeout * 1000)
            raise self._outage.failed(exc, f"no answer within {ms} ms") from exc
        except _LockTimeout as exc:
            raise self._outage.failed(exc, "busy past its timeout") from exc
        except (sqlite3.Error, OSError) as exc:
            raise self._outage.failed(exc, "the database failed") from exc
        self._outage.succeeded()
        return result

    # -- BudgetLedger ------------------------------------------------------------------

    async def _ledger(self, command: Callable[..., T | None]) -> T:
        """Run a ledger command: read-only if it can answer so, else under the write lock."""

        def apply(conn: sqlite3.Connection, now: float) -> T:
            result = command(conn, now, write=True)
            assert result is not None  # with write=True every command answers
            return result

        def precheck(conn: sqlite3.Connection, now: float) -> T | None:
            return command(conn, now, write=False)

        return await self._run(apply, "write", precheck)

    async def reserve(
        self, key: str, reservation_id: str, amount: int, *, limit: int, window: Window, hold: float
    ) -> LedgerResult:
        """Hold ``amount`` for ``hold`` seconds if it fits; see ``MemoryStore.reserve``."""
        _check_amount(amount)
        hold = check_hold(hold)
        return await self._ledger(
            functools.partial(
                ledger.reserve,
                key=key,
                rid=reservation_id,
                amount=amount,
                limit=limit,
                window=window,
                hold=hold,
            )
        )

    async def extend(
        self, key: str, reservation_id: str, amount: int, *, limit: int, window: Window, hold: float
    ) -> LedgerResult:
        """Grow a reservation once per ``"<rid>/<step>"`` id; see ``MemoryStore.extend``."""
        _check_amount(amount)
        hold = check_hold(hold)
        return await self._ledger(
            functools.partial(
                ledger.extend,
                key=key,
                step_id=reservation_id,
                amount=amount,
                limit=limit,
                window=window,
                hold=hold,
            )
        )

    async def settle(
        self, key: str, reservation_id: str, amount: int, *, window: Window
    ) -> LedgerResult:
        """Close the reservation and count ``amount``; see ``MemoryStore.settle``."""
        _check_amount(amount)
        return await self._ledger(
            functools.partial(
                ledger.settle, key=key, rid=reservation_id, amount=amount, window=window
            )
        )

    async def release(self, key: str, reservation_id: str, *, window: Window) -> LedgerResult:
        """Close the reservation without counting; a no-op when unknown or closed."""
        return await self._ledger(
            functools.partial(ledger.release, key=key, rid=reservation_id, window=window)
        )

    async def reserve_many(
        self, reservation_id: str, entries: Sequence[LedgerEntry], *, hold: float
    ) -> list[LedgerResult]:
        """``reserve`` every entry in one transaction, all or none (see ``BatchLedger``)."""
        for entry in entries:
            if entry.amount is None or entry.limit is None:
                raise ValueError(f"reserve_many needs an amount and a limit: {entry!r}")
            _check_amount(entry.amount)
        hold = check_hold(hold)
        return await self._ledger(
            functools.partial(
                ledger.reserve_many, rid=reservation_id, entries=tuple(entries), hold=hold
            )
        )

    async def settle_many(
        self, reservation_id: str, entries: Sequence[LedgerEntry]
    ) -> list[LedgerResult]:
        """``settle`` every entry in one transaction (``release`` where ``amount`` is
        ``None``)."""
        for entry in entries:
            if entry.amount is not None:
                _check_amount(entry.amount)
        return await self._ledger(
            functools.partial(ledger.settle_many, rid=reservation_id, entries=tuple(entries))
        )

    async def usage(self, key: str, *, window: Window, limit: int | None = None) -> LedgerResult:
        """Used, reserved and reset time of ``key`` (``ok`` is always true)."""

        def command(conn: sqlite3.Connection, now: float) -> LedgerResult:
            return ledger.usage(conn, now, key, window=window, limit=limit)

        return await self._run(command, "read")

    # -- CacheStore --------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        """The value, or ``None`` when missing or expired."""
        return await self._run(functools.partial(kv.get, key=key), "single")

    async def set(self, key: str, value: bytes, *, ttl: float | None) -> None:
        """Store ``value`` for ``ttl`` seconds (``None``: until deleted; ``<= 0``: delete)."""
        command = functools.partial(kv.set_value, key=key, value=bytes(value), ttl=ttl)
        await self._run(command, "write")

    async def delete(self, key: str) -> None:
        """Remove the value if present."""
        await self._run(functools.partial(kv.delete, key=key), "write")

    async def acquire_lock(self, key: str, *, ttl: float) -> str | None:
        """Take the lock ``key`` for ``ttl`` seconds: a fresh token, or ``None`` if held."""
        token = secrets.token_hex(16)
        command = functools.partial(kv.acquire_lock, key=key, token=token, ttl=ttl)
        return await self._run(command, "write")

    async def release_lock(self, key: str, token: str) -> bool:
        """Release the lock if ``token`` holds it and it has not expired."""
        return await self._run(functools.partial(kv.release_lock, key=key, token=token), "write")

    # -- SharedState -------------------------------------------------------------------

    async def read(self, key: str) -> Versioned | None:
        """The value and its version, or ``None`` when missing or expired."""
        return await self._run(functools.partial(kv.read, key=key), "single")

    async def compare_and_set(
        self, key: str, version: int, value: bytes, *, ttl: float | None
    ) -> bool:
        """Write ``value`` if the stored version is ``version`` (0: missing or expired)."""
        command = functools.partial(
            kv.compare_and_set, key=key, version=version, value=bytes(value), ttl=ttl
        )
        return await self._run(command, "write")

    async def increment(self, key: str, amount: int, *, ttl: float | None) -> int:
        """Add ``amount`` to the counter ``key`` (missing or expired: 0); the new count.

        ``ttl`` applies when the increment creates the counter; later ones keep it.
        """
        command = functools.partial(kv.increment, key=key, amount=amount, ttl=ttl)
        return await self._run(command, "write")


def _use_wal(conn: sqlite3.Connection, seconds: float) -> None:
    """Put the file in WAL mode (it stays so). Changing the journal mode does not wait on
    SQLite's busy handler: processes opening a new file at the same moment (gunicorn
    workers starting) get "database is locked" at once, so retry briefly, within the
    store's bound; a file already in WAL mode needs no lock at all."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.002)  # a worker thread, never the event loop

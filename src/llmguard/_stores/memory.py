"""``MemoryStore``: the three store roles in one process's memory.

Every command is a short synchronous change to plain dicts with no ``await`` between
reading and writing, so it is atomic on one event loop; a ``threading.Lock`` makes it
atomic across threads too (``guard.sync`` may use the same store from an event loop in
another thread). Each command but the cache read (``get``) starts with a checkpoint, so
a cancelled caller is cancelled before the command runs, never halfway, as with a
networked store.

Limits are per process: a ``MemoryStore`` used in a forked child (gunicorn, Celery
prefork) warns once, with ``PerProcessStoreWarning``, that each process now counts on
its own. Share budgets between processes with ``SQLiteStore`` or ``RedisStore``.

Time comes from the injected ``clock`` (wall-clock epoch seconds): budget windows,
reservation holds, cache TTLs, locks and shared-state TTLs all read it, so tests move
time by hand instead of sleeping.
"""

from __future__ import annotations

import math
import os
import secrets
import threading
import time
import warnings
from collections.abc import Callable, Sequence

import anyio.lowlevel

from .._errors import ConfigurationError, LLMGuardError
from ._memory_cache import MemoryCache
from ._memory_ledger import MemoryLedger
from ._roles import LedgerEntry, LedgerResult, Versioned, Window

__all__ = ["MemoryStore", "PerProcessStoreWarning"]

#: Expired locks, shared values and idle ledger keys are swept every this many commands.
SWEEP_EVERY = 1024

#: Forks since this module was imported, in this process's line (a counter read on every
#: command: cheaper than asking the system for the process id each time).
_forks = [0]


def _after_fork_in_child() -> None:
    _forks[0] += 1


if hasattr(os, "register_at_fork"):  # pragma: no branch - every POSIX Python has it
    os.register_at_fork(after_in_child=_after_fork_in_child)


class PerProcessStoreWarning(LLMGuardError, UserWarning):
    """A ``MemoryStore`` is used in a process other than the one that made it.

    After a ``fork()`` (gunicorn, Celery prefork, ``multiprocessing``) each process has
    its own copy of the store, so a budget of N admits up to N per process. Use
    ``SQLiteStore`` (one host) or ``RedisStore`` (many hosts) to share the limits.
    A ``UserWarning`` (and an ``LLMGuardError``, like everything llmguard raises).
    """


def _expiry(now: float, ttl: float | None) -> float:
    return math.inf if ttl is None else now + ttl


class MemoryStore:
    """A ``BudgetLedger``, ``CacheStore`` and ``SharedState`` kept in memory.

    ``clock`` returns wall-clock epoch seconds (default ``time.time``); ``max_entries``
    caps the cache, which evicts the least recently used value when full (expired
    values go first). Budget state, locks and shared values are not capped, but what
    has expired or no longer counts is dropped lazily and swept now and then.

    Budget semantics, per key: ``used`` is what was settled in the window holding now
    (fixed and month windows restart at 0 when they roll over; a sliding window counts
    entries settled less than ``seconds`` ago; forever never resets) and ``reserved``
    the sum of open reservations, which expire ``hold`` seconds after they were made
    or last extended (they expire once ``now > expires``). See each method for its
    idempotence rules.

    Shared state: values (``read``/``compare_and_set``) and counters (``increment``)
    are separate namespaces: the same key can name one of each.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.time, max_entries: int = 10_000
    ) -> None:
        if max_entries < 1:
            raise ConfigurationError(f"max_entries must be at least 1, not {max_entries!r}")
        self._clock = clock
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._ledger = MemoryLedger()
        self._cache = MemoryCache(max_entries)
        self._locks: dict[str, tuple[str, float]] = {}  # key -> (token, expires)
        self._values: dict[str, tuple[Versioned, float]] = {}  # key -> (value, expires)
        self._counters: dict[str, tuple[int, float]] = {}  # key -> (count, expires)
        self._commands = 0
        self._forks = _forks[0]

    def __repr__(self) -> str:
        return (
            f"MemoryStore(max_entries={self._max_entries}, budget_keys={len(self._ledger)}, "
            f"cached={len(self._cache)}, locks={len(self._locks)}, "
            f"values={len(self._values)}, counters={len(self._counters)})"
        )

    def _now(self) -> float:
        """Read the clock and sweep now and then (call with the lock held)."""
        now = self._clock()
        self._commands += 1
        if self._commands % SWEEP_EVERY == 0:
            self._sweep(now)
        return now

    def _sweep(self, now: float) -> None:
        self._ledger.sweep(now)
        self._cache.expire(now)
        for table in (self._locks, self._values, self._counters):
            for key in [key for key, entry in table.items() if not now < entry[1]]:
                del table[key]

    def _check_process(self) -> None:
        """Warn once per process when the store is used in a process it was not made in."""
        if self._forks != _forks[0]:
            self._forks = _forks[0]
            warnings.warn(
                "this MemoryStore was created in another process (a fork): its budget "
                "limits now count per process; use SQLiteStore or RedisStore to share them",
                PerProcessStoreWarning,
                stacklevel=3,
            )

    def plain_calls(self, *names: str) -> bool:
        """Whether the commands ``names`` are this class's own here, neither overridden by
        a subclass nor replaced on the instance: then callers may use the plain-call
        forms (``get_now``, ``set_now``, ``reserve_all``, ``settle_all_now``) instead,
        and nothing that wraps a command is bypassed."""
        cls, own = type(self), vars(self)
        return all(
            getattr(cls, name) is getattr(MemoryStore, name) and name not in own for name in names
        )

    # -- BudgetLedger ------------------------------------------------------------------

    async def reserve(
        self, key: str, reservation_id: str, amount: int, *, limit: int, window: Window, hold: float
    ) -> LedgerResult:
        """Hold ``amount`` for ``hold`` seconds if ``used + reserved + amount <= limit``.

        Refused (``ok=False``, nothing held) when it does not fit. Repeating the reserve
        of an id that is held, settled or released returns ``ok=True`` with the current
        numbers and holds nothing more. ``reset_at`` is the window's end; for a sliding
        window, when the oldest counted entry slides out (``now + seconds`` if none).
        """
        self._check_process()
        await anyio.lowlevel.checkpoint()
        with self._lock:
            return self._ledger.reserve(
                key, reservation_id, amount, limit=limit, window=window, hold=hold, now=self._now()
            )

    async def extend(
        self, key: str, reservation_id: str, amount: int, *, limit: int, window: Window, hold: float
    ) -> LedgerResult:
        """Add ``amount`` to an open reservation if it fits, once per step id.

        ``reservation_id`` is ``"<rid>/<step>"``: the part before the last ``/`` names
        the reservation, the whole string makes the step idempotent (an id without
        ``/`` names the reservation and is its own step id). On success the reservation
        expires ``hold`` seconds from now. If the reservation expired or was never
        made, ``amount`` is reserved afresh under ``<rid>`` (so a step after a long wait
        still holds budget); if it was settled or released, nothing is held and the
        answer is ``ok=True``.
        """
        self._check_process()
        await anyio.lowlevel.checkpoint()
        with self._lock:
            return self._ledger.extend(
                key, reservation_id, amount, limit=limit, window=window, hold=hold, now=self._now()
            )

    async def settle(
        self, key: str, reservation_id: str, amount: int, *, window: Window
    ) -> LedgerResult:
        """Close the reservation and count ``amount`` in the window holding now.

        Counts even when the reservation expired or was never made (spend is never
        lost); a repeat, or a settle after a release, is a no-op. Closed ids are
        remembered for ``max(hold, window length if finite, 3600)`` seconds.
        """
        self._check_process()
        await anyio.lowlevel.checkpoint()
        with self._lock:
            return self._ledger.settle(key, reservation_id, amount, window=window, now=self._now())

    async def release(self, key: str, reservation_id: str, *, window: Window) -> LedgerResult:
        """Close the reservation without counting; a no-op when unknown or closed."""
        self._check_process()
        await anyio.lowlevel.checkpoint()
        with self._lock:
            return self._ledger.release(key, reservation_id, window=window, now=self._now())

    async def reserve_many(
        self, reservation_id: str, entries: Sequence[LedgerEntry], *, hold: float
    ) -> list[LedgerResult]:
        """``reserve`` every entry under one lock, all or none (see ``BatchLedger``): at
        the first entry that does not fit nothing of this command stays held, and the
        answer ends with that entry's refusal."""
        self._check_process()
        await anyio.lowlevel.checkpoint()
        with self._lock:
            return self._ledger.reserve_many(reservation_id, entries, hold=hold, now=self._now())

    async def settle_many(
        self, reservation_id: str, entries: Sequence[LedgerEntry]
    ) -> list[LedgerResult]:
        """``settle`` every entry under one lock (``release`` where ``amount`` is ``None``)."""
        self._check_process()
        await anyio.lowlevel.checkpoint()
        with self._lock:
            return self._ledger.settle_many(reservation_id, entries, now=self._now())

    # -- what budgets use (internal: see InstantLedger) ----------------------------------

    async def reserve_all(
        self, reservation_id: str, entries: Sequence[LedgerEntry], *, hold: float
    ) -> tuple[int, LedgerResult] | None:
        """``reserve_many`` answering what a budget reads: ``None`` when every entry was
        reserved, else the index of the entry that did not fit and its refusal."""
        self._check_process()
        await anyio.lowlevel.checkpoint()
        with self._lock:
            return self._ledger.reserve_all(reservation_id, entries, hold=hold, now=self._now())

    def settle_all_now(
        self, reservation_id: str, entries: Sequence[LedgerEntry]
    ) -> list[tuple[int, int, float]]:
        """``settle_many`` as a plain call, answering ``(used, reserved, reset_at)`` per
        entry: a command in memory has nothing to wait for, and a settle is never
        cancelled (a budget ends a call with it)."""
        self._check_process()
        with self._lock:
            return self._ledger.settle_all(reservation_id, entries, now=self._now())

    async def usage(self, key: str, *, window: Window, limit: int | None = None) -> LedgerResult:
        """Used, reserved and reset time of ``key`` (``ok`` is always true)."""
        self._check_process()
        await anyio.lowlevel.checkpoint()
        with self._lock:
            return self._ledger.usage(key, window=window, limit=limit, now=self._now())

    # -- CacheStore --------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        """The value, or ``None`` when missing, expired or evicted.

        The one command with no checkpoint: a cache read is on every call's hot path,
        and a lookup that never waits has nothing to cancel.
        """
        with self._lock:
            return self._cache.get(key, self._now())

    async def set(self, key: str, value: bytes, *, ttl: float | None) -> None:
        """Store ``value`` for ``ttl`` seconds (``None``: until evicted; ``<= 0``: delete)."""
        await anyio.lowlevel.checkpoint()
        with self._lock:
            self._cache.set(key, bytes(value), ttl, self._now())

    def get_now(self, key: str) -> bytes | None:
        """``get`` as a plain call (what the cache layer uses)."""
        with self._lock:
            return self._cache.get(key, self._now())

    def set_now(self, key: str, value: bytes, *, ttl: float | None) -> None:
        """``set`` as a plain call (what the cache layer uses to store an answer: a write
        in memory has nothing to wait for, so it needs no checkpoint)."""
        with self._lock:
            self._cache.set(key, bytes(value), ttl, self._now())

    async def delete(self, key: str) -> None:
        """Remove the value if present."""
        await anyio.lowlevel.checkpoint()
        with self._lock:
            self._now()
            self._cache.delete(key)

    async def acquire_lock(self, key: str, *, ttl: float) -> str | None:
        """Take the lock ``key`` for ``ttl`` seconds: a fresh token, or ``None`` if held.

        Locks live apart from cached values: a lock and a value may share a key.
        """
        await anyio.lowlevel.checkpoint()
        with self._lock:
            now = self._now()
            held = self._locks.get(key)
            if held is not None and now < held[1]:
                return None
            token = secrets.token_hex(16)
            self._locks[key] = (token, now + ttl)
            return token

    async def release_lock(self, key: str, token: str) -> bool:
        """Release the lock if ``token`` holds it and it has not expired."""
        await anyio.lowlevel.checkpoint()
        with self._lock:
            now = self._now()
            held = self._locks.get(key)
            if held is None or held[0] != token:
                return False
            del self._locks[key]
            return now < held[1]

    # -- SharedState -------------------------------------------------------------------

    def _read(self, key: str, now: float) -> Versioned | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        if not now < entry[1]:
            del self._values[key]
            return None
        return entry[0]

    async def read(self, key: str) -> Versioned | None:
        """The value and its version, or ``None`` when missing or expired."""
        await anyio.lowlevel.checkpoint()
        with self._lock:
            return self._read(key, self._now())

    async def compare_and_set(
        self, key: str, version: int, value: bytes, *, ttl: float | None
    ) -> bool:
        """Write ``value`` if the stored version is ``version`` (0: missing or expired).

        A write makes the version one higher and sets the expiry to ``ttl`` seconds from
        now (``None``: never). A value that expired starts again at version 1.
        """
        await anyio.lowlevel.checkpoint()
        with self._lock:
            now = self._now()
            current = self._read(key, now)
            if (current.version if current is not None else 0) != version:
                return False
            written = Versioned(value=bytes(value), version=version + 1)
            self._values[key] = (written, _expiry(now, ttl))
            return True

    async def increment(self, key: str, amount: int, *, ttl: float | None) -> int:
        """Add ``amount`` to the counter ``key`` (missing or expired: 0); the new count.

        ``ttl`` applies when the increment creates the counter; later increments keep
        that expiry (a counter of what happened within ``ttl`` of the first event).
        Counters are apart from ``read``/``compare_and_set`` values.
        """
        await anyio.lowlevel.checkpoint()
        with self._lock:
            now = self._now()
            entry = self._counters.get(key)
            if entry is None or not now < entry[1]:
                entry = (0, _expiry(now, ttl))
            count = entry[0] + amount
            self._counters[key] = (count, entry[1])
            return count

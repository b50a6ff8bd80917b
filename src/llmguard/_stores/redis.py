"""``RedisStore``: the three store roles on Redis or Redis Cluster, for many hosts.

- Every read-modify-write is one Lua script (``lua/``), loaded once per client and
  run by ``EVALSHA`` (redis-py's script object loads it again on ``NOSCRIPT``, on a
  cluster on every primary). A command is one round trip. A cache value needs no
  script: ``SET ... PX`` and a plain ``GET`` (a cache hit is one plain round trip).
- Time comes from the server: each script reads ``TIME``, and cache values expire by
  Redis's own clock, so clients with drifting clocks agree on windows, holds and
  TTLs. (Tests move the scripts' time with ``_test_clock``; see ``test_contract.py``
  for moving Redis's expiry along.)
- Every key of one budget scope, cache key or lock carries one hash tag, so a script
  only touches one slot; keys expire (``PEXPIRE``) once what they hold no longer
  counts. See ``_redis_keys`` for the layout. (The batched ledger commands take
  several scopes' keys in one script; on a cluster, when those sit in several slots,
  one script per key: see ``_redis_batch``.)
- Bounded failure: no answer within ``timeout`` (default 250 ms), a refused or cut
  connection, or any Redis error raises ``StoreUnavailable`` with the cause attached;
  an outage logs one warning; the next success ends it, with no restart. (How one
  command runs within the bound: ``_redis_bound``.)

redis-py's asyncio client runs on asyncio only: a ``RedisStore`` used under trio
raises ``ConfigurationError``. redis is imported only when a ``RedisStore`` is made.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import time
import weakref
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from ._deadline import Deadlines
from ._failure import DEFAULT_TIMEOUT, Outage, check_hold, check_timeout
from ._memory_ledger import _check_amount
from ._redis_batch import BatchRunner, check_reserve_entries, check_settle_entries
from ._redis_bound import bounded, check_loop, new_deadlines
from ._redis_client import SCRIPTS, build_client, build_cluster, import_redis, script_source
from ._redis_keys import DEFAULT_PREFIX, KeyLayout, WindowArgs
from ._redis_ttl import expiry_ms, ttl_arg
from ._roles import LedgerEntry, LedgerResult, Versioned, Window

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster
    from redis.commands.core import AsyncScript

__all__ = ["RedisStore"]

#: This host's wall clock: only a first guess of the server's (tests skew it).
wall_clock = time.time

#: Commands that sending twice could count twice: never retried after a dropped connection.
#: (Every other script is idempotent: by reservation id, by lock token, or by nature.)
_NOT_RETRYABLE = frozenset({"cas", "incr"})


class RedisStore:
    """A ``BudgetLedger``, ``CacheStore`` and ``SharedState`` on Redis (or a cluster).

    Build one with ``RedisStore.from_url("redis://host:6379/0")`` or
    ``RedisStore.cluster(["host1:7000", "host2:7000"])`` (or a cluster URL); both make
    and own a client bounded by ``timeout``. ``RedisStore(client)`` uses a
    ``redis.asyncio.Redis`` or ``RedisCluster`` you made (and leaves it open on
    ``aclose``); ``timeout`` still bounds every command, but set the client's own
    timeouts and retries to match.

    ``prefix`` (default ``"llmguard:"``, no braces) starts every key, so several
    applications can share a Redis. ``timeout`` bounds every command: without an
    answer by then it raises ``StoreUnavailable``. ``max_connections`` caps the pool
    (per node on a cluster) and the commands in flight: a command waits for its turn
    within its ``timeout``, so a burst against a Redis that hangs still gets every
    answer in time.

    Use it from one asyncio event loop (the one that first uses it). ``aclose()`` or
    ``async with`` closes what it owns.

    For tests only: set ``_test_clock`` to a callable returning epoch seconds, and
    the scripts use that instead of the server's ``TIME`` (cache values still expire
    by Redis's clock: a test moves it by shortening their ``PTTL``).
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        redis = import_redis()
        self._client = client
        self._cluster = isinstance(client, redis.asyncio.cluster.RedisCluster)
        self._keys = KeyLayout(prefix)
        self._timeout = check_timeout(timeout)
        self._owns_client = False
        self._max_in_flight: int | None = None
        self._in_flight: anyio.Semaphore | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._windows = WindowArgs()
        self._batch = BatchRunner(self, redis.crc.key_slot if self._cluster else None)
        self._skew = 0.0  # server clock minus ours, from the last ledger answer
        self._loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self._deadlines: Deadlines | None = None  # the bounds' one timer (_deadline.py)
        self._outage = Outage(f"RedisStore(prefix={prefix!r})")
        self._connection_error: type[BaseException] = redis.exceptions.ConnectionError
        self._errors: tuple[type[BaseException], ...] = (
            redis.exceptions.RedisError,
            redis.exceptions.RedisClusterException,
            OSError,
        )
        #: Test-only: epoch seconds to use instead of the server's ``TIME``.
        self._test_clock: Callable[[], float] | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = 50,
    ) -> RedisStore:
        """A store on the Redis at ``url`` (``redis://``, ``rediss://``, ``unix://``)."""
        timeout = check_timeout(timeout)
        client = build_client(url, timeout=timeout, max_connections=max_connections)
        store = cls(client, prefix=prefix, timeout=timeout)
        store._owns_client = True
        store._max_in_flight = max_connections
        return store

    @classmethod
    def cluster(
        cls,
        nodes: str | Sequence[str | tuple[str, int]],
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = 50,
    ) -> RedisStore:
        """A store on a Redis Cluster: a URL, or startup nodes as ``"host:port"``."""
        timeout = check_timeout(timeout)
        client = build_cluster(nodes, timeout=timeout, max_connections=max_connections)
        store = cls(client, prefix=prefix, timeout=timeout)
        store._owns_client = True
        store._max_in_flight = max_connections
        return store

    def __repr__(self) -> str:
        kind = "cluster" if self._cluster else "redis"
        return f"RedisStore({kind}, prefix={self._keys.prefix!r}, timeout={self._timeout!r})"

    async def __aenter__(self) -> RedisStore:
        try:
            await self.connect()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def connect(self) -> None:
        """Connect and load the scripts now, not on first use (``async with`` does this).

        On a cluster this also learns which node holds which slots. Bounded like any
        command: raises ``StoreUnavailable`` when Redis does not answer in time.
        """

        async def load() -> None:
            if self._cluster:
                await self._client.initialize()
            for name in SCRIPTS:
                script = self._script(name)
                script.sha = await self._client.script_load(script.script)

        await self._bounded(load, resend=False)

    async def aclose(self) -> None:
        """Close the client and its connections if this store made them."""
        self._check_loop()
        self._deadlines = None
        if self._owns_client:
            await self._client.aclose()

    # -- running a script --------------------------------------------------------------

    # ``_bounded`` (every command's path) and the event-loop check: ``_redis_bound``.
    _check_loop = check_loop
    _new_deadlines = new_deadlines
    _bounded = bounded

    def _script(self, name: str) -> AsyncScript:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self._client.register_script(script_source(name))
        return script

    def _now_arg(self) -> tuple[str, float]:
        """ARGV[1] (the time override, '' for the server's clock) and our best guess."""
        clock = self._test_clock
        if clock is not None:
            now = clock()
            return repr(now), now
        return "", wall_clock() + self._skew

    async def _eval(self, name: str, op: str, keys: list[str], args: list[Any]) -> Any:
        """Run script ``name`` (one round trip), within the bound."""
        run = functools.partial(self._script(name), keys=keys, args=args)
        return await self._bounded(run, resend=op not in _NOT_RETRYABLE)

    # -- BudgetLedger ------------------------------------------------------------------

    async def _ledger(
        self,
        op: str,
        key: str,
        reservation_id: str,
        amount: int,
        *,
        limit: int | None,
        window: Window,
        hold: float,
    ) -> LedgerResult:
        keys = self._keys.ledger(key, window)
        now_arg, at = self._now_arg()
        common = [op, reservation_id, str(int(amount)), "" if limit is None else str(int(limit))]
        for _ in range(3):
            args = [now_arg, *common, repr(hold), *self._windows.args(window, at)]
            status, used, reserved, reset_at, now = await self._eval("ledger", op, keys, args)
            server_now = float(now)
            if not now_arg:
                self._skew = server_now - wall_clock()
            if status != -1:
                return LedgerResult(
                    ok=status == 1,
                    used=int(used),
                    reserved=int(reserved),
                    limit=limit,
                    reset_at=float(reset_at),
                )
            at = server_now  # our guess of the server's time was off: use its own
        raise self._outage.failed(
            RuntimeError(f"window bounds kept missing the server's time {at!r}"),
            "the server's clock moved while the window was computed",
        )

    async def reserve(
        self, key: str, reservation_id: str, amount: int, *, limit: int, window: Window, hold: float
    ) -> LedgerResult:
        """Hold ``amount`` for ``hold`` seconds if it fits; see ``MemoryStore.reserve``."""
        _check_amount(amount)
        hold = check_hold(hold)
        return await self._ledger(
            "reserve", key, reservation_id, amount, limit=limit, window=window, hold=hold
        )

    async def extend(
        self, key: str, reservation_id: str, amount: int, *, limit: int, window: Window, hold: float
    ) -> LedgerResult:
        """Grow a reservation once per ``"<rid>/<step>"`` id; see ``MemoryStore.extend``."""
        _check_amount(amount)
        hold = check_hold(hold)
        return await self._ledger(
            "extend", key, reservation_id, amount, limit=limit, window=window, hold=hold
        )

    async def settle(
        self, key: str, reservation_id: str, amount: int, *, window: Window
    ) -> LedgerResult:
        """Close the reservation and count ``amount``; see ``MemoryStore.settle``."""
        _check_amount(amount)
        return await self._ledger(
            "settle", key, reservation_id, amount, limit=None, window=window, hold=0.0
        )

    async def release(self, key: str, reservation_id: str, *, window: Window) -> LedgerResult:
        """Close the reservation without counting; a no-op when unknown or closed."""
        return await self._ledger(
            "release", key, reservation_id, 0, limit=None, window=window, hold=0.0
        )

    async def usage(self, key: str, *, window: Window, limit: int | None = None) -> LedgerResult:
        """Used, reserved and reset time of ``key`` (``ok`` is always true)."""
        return await self._ledger("usage", key, "", 0, limit=limit, window=window, hold=0.0)

    # -- BatchLedger ------------------------------------------------------------------

    async def reserve_many(
        self, reservation_id: str, entries: Sequence[LedgerEntry], *, hold: float
    ) -> list[LedgerResult]:
        """``reserve`` every entry, all or none (see ``BatchLedger``): one script call
        (on a cluster, when the keys' slots differ, one per key; see ``_redis_batch``)."""
        check_reserve_entries(entries)
        return await self._batch.reserve_many(reservation_id, entries, check_hold(hold))

    async def settle_many(
        self, reservation_id: str, entries: Sequence[LedgerEntry]
    ) -> list[LedgerResult]:
        """``settle`` every entry (``release`` where ``amount`` is ``None``): one script
        call (on a cluster, when the keys' slots differ, one per key)."""
        check_settle_entries(entries)
        return await self._batch.settle_many(reservation_id, entries)

    # -- CacheStore --------------------------------------------------------------------
    # Values are plain commands, no script. They skip the cancellation check before
    # sending: a read, or a write of a valid value, sent for a caller that was just
    # cancelled is harmless, and the check costs more than the rest of a hit's work.

    async def get(self, key: str) -> bytes | None:
        """The value, or ``None`` when missing or expired: one plain ``GET``."""
        reply: Any = await self._bounded(self._client.get, self._keys.cache(key), checkpoint=False)
        return None if reply is None else bytes(reply)

    async def set(self, key: str, value: bytes, *, ttl: float | None) -> None:
        """Store ``value`` for ``ttl`` seconds (``None``: until deleted; ``<= 0``: delete).

        One ``SET`` (with ``PX``: Redis expires the value by its own clock), or a
        ``DEL`` for a TTL of zero or less.
        """
        ms = expiry_ms(ttl)
        name = self._keys.cache(key)
        if ms == 0:
            await self._bounded(self._client.delete, name, checkpoint=False)
        else:
            await self._bounded(self._client.set, name, bytes(value), None, ms, checkpoint=False)

    async def delete(self, key: str) -> None:
        """Remove the value if present (and the one an older llmguard kept, if any)."""
        keys = (self._keys.cache(key), self._keys.legacy_cache(key))
        await self._bounded(self._client.delete, *keys, checkpoint=False)

    async def acquire_lock(self, key: str, *, ttl: float) -> str | None:
        """Take the lock ``key`` for ``ttl`` seconds: a fresh token, or ``None`` if held."""
        token = secrets.token_hex(16)
        args = [self._now_arg()[0], "lock", token, ttl_arg(ttl, required=True)]
        reply = await self._eval("cache", "lock", [self._keys.lock(key)], args)
        return None if reply is None else token

    async def release_lock(self, key: str, token: str) -> bool:
        """Release the lock if ``token`` holds it and it has not expired."""
        args = [self._now_arg()[0], "unlock", token]
        return bool(await self._eval("cache", "unlock", [self._keys.lock(key)], args))

    # -- SharedState -------------------------------------------------------------------

    async def read(self, key: str) -> Versioned | None:
        """The value and its version, or ``None`` when missing or expired."""
        reply = await self._eval(
            "state", "read", [self._keys.value(key)], [self._now_arg()[0], "read"]
        )
        if reply is None:
            return None
        value, version = reply
        return Versioned(value=bytes(value), version=int(version))

    async def compare_and_set(
        self, key: str, version: int, value: bytes, *, ttl: float | None
    ) -> bool:
        """Write ``value`` if the stored version is ``version`` (0: missing or expired)."""
        args = [self._now_arg()[0], "cas", str(int(version)), bytes(value), ttl_arg(ttl)]
        return bool(await self._eval("state", "cas", [self._keys.value(key)], args))

    async def increment(self, key: str, amount: int, *, ttl: float | None) -> int:
        """Add ``amount`` to the counter ``key`` (missing or expired: 0); the new count.

        ``ttl`` applies when the increment creates the counter; later ones keep it.
        Not retried on a dropped connection (it would count twice).
        """
        args = [self._now_arg()[0], "incr", str(int(amount)), ttl_arg(ttl)]
        return int(await self._eval("state", "incr", [self._keys.counter(key)], args))

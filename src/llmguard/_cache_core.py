"""The machinery behind the cache layer and decorator: store access that fails open,
single flight in one process, an optional lock across processes. (The per-call options
live in ``_cache_options`` and are re-exported here.)

- **Fail open.** Every store command goes through ``CacheCore._ask``: an error
  (``StoreUnavailable``, or anything a store raises) makes the call go on uncached
  (``on_store_error="open"``, the default) or propagates (``"closed"``). An outage is
  logged once; for ``store_retry`` seconds after a failure the store is not asked at
  all (so a dead store adds no latency), then the next call tries it again.
- **Single flight.** Concurrent identical misses in one event loop share one upstream
  call: the first becomes the *leader*, the others wait for it (anyio primitives) and
  get its value, or its error (any ``Exception`` but ``BudgetExceeded``, which
  belongs to the leader's caller). When the leader ends without either (cancelled, or
  refused by its own budget) a waiting caller becomes the next leader.
- **Lock across processes** (``lock=True``): the leader takes a short store lock
  before calling upstream; a process that finds it held polls the store for the value
  and takes the lock itself when it is gone (its holder died: the lock expires after
  ``lock_ttl``), so a stampede over many processes makes one call, one more when a
  holder dies. A waiter waits at most two lock lives (the lock it found, then its next
  holder's), then calls by itself.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import anyio

from ._cache_options import (
    UNSET,
    CacheOptions,
    Unset,
    cache_options,
    current_options,
    use_options,
)
from ._clock import Clock
from ._errors import BudgetExceeded, ConfigurationError, StoreUnavailable
from ._state import current_call
from ._stores._roles import CacheStore, InstantCache, StoreErrorPolicy

__all__ = [
    "UNSET",
    "CacheCore",
    "CacheOptions",
    "Lead",
    "Unset",
    "cache_options",
    "current_options",
    "default_store",
    "use_options",
]

logger = logging.getLogger("llmguard.cache")

V = TypeVar("V")


class _Down(enum.Enum):
    DOWN = "DOWN"


_DOWN = _Down.DOWN
_RELEASE_GRACE_S = 2.0


def _note_down(reason: str) -> None:
    """Note on the call that the cache store could not be used (it goes uncached)."""
    state = current_call()
    if state is not None:
        state.extra["cache_store_error"] = reason


class _Flight:
    """One leader's work for one key; callers that find it wait on ``done()``."""

    __slots__ = ("_done", "error", "has_value", "value")

    def __init__(self) -> None:
        self._done: anyio.Event | None = None  # made by the first waiter: most have none
        self.has_value = False
        self.value: Any = None
        self.error: BaseException | None = None

    def done(self) -> anyio.Event:
        """The event set when the leader ends."""
        if self._done is None:
            self._done = anyio.Event()
        return self._done

    def land(self) -> None:
        """Let the waiters go."""
        if self._done is not None:
            self._done.set()


def default_store() -> CacheStore:
    """A new ``MemoryStore``, the default store (imported late: a layer does not
    import a concrete store)."""
    from ._stores.memory import MemoryStore

    return MemoryStore()


def shareable(error: BaseException) -> bool:
    """Whether waiting callers get the leader's error too (not its budget's refusal)."""
    return isinstance(error, Exception) and not isinstance(error, BudgetExceeded)


class Lead(Generic[V]):
    """A leader's duty: fill the entry, then ``await close()`` (always)."""

    __slots__ = ("_core", "_flight", "_flight_key", "_key", "_token")

    def __init__(self, core: CacheCore, flight_key: tuple[int, str], flight: _Flight) -> None:
        self._core = core
        self._flight_key = flight_key
        self._flight = flight
        self._key = flight_key[1]
        self._token: str | None = None

    def share(self, value: V) -> None:
        """Hand ``value`` to every caller waiting on this flight."""
        self._flight.value = value
        self._flight.has_value = True

    def fail(self, error: BaseException) -> None:
        """Hand ``error`` to the waiting callers, if it is theirs too."""
        if shareable(error) and not self._flight.has_value:
            self._flight.error = error

    async def close(self) -> None:
        """Let the waiting callers go, then release the store lock if held."""
        core = self._core
        core._land(self._flight_key, self._flight)
        token, self._token = self._token, None
        if token is not None:
            with anyio.CancelScope(shield=True) as scope:
                scope.deadline = anyio.current_time() + _RELEASE_GRACE_S
                await core._ask(core.store.release_lock, self._key + ":lock", token)


class CacheCore:
    """Store access, single flight and the cross-process lock for one cache."""

    __slots__ = (
        "_clock",
        "_down",
        "_down_reason",
        "_down_until",
        "_flights",
        "_instant",
        "_lock",
        "_lock_poll",
        "_lock_ttl",
        "_policy",
        "_single_flight",
        "_store_retry",
        "store",
    )

    def __init__(
        self,
        store: CacheStore,
        *,
        clock: Clock,
        on_store_error: StoreErrorPolicy,
        single_flight: bool,
        lock: bool,
        lock_ttl: float,
        lock_poll: float,
        store_retry: float,
    ) -> None:
        if not isinstance(store, CacheStore):
            raise ConfigurationError(
                f"{store!r} is not a cache store: it needs get, set, delete, "
                "acquire_lock and release_lock"
            )
        if on_store_error not in ("open", "closed"):
            raise ConfigurationError(
                f'on_store_error must be "open" or "closed", not {on_store_error!r}'
            )
        for name, value in (("lock_ttl", lock_ttl), ("lock_poll", lock_poll)):
            if not value > 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds")
        if not store_retry >= 0:
            raise ConfigurationError("store_retry must be a non-negative number of seconds")
        self.store = store
        # A store in this process's memory is read and written with plain calls.
        self._instant = (
            store if isinstance(store, InstantCache) and store.plain_calls("get", "set") else None
        )
        self._clock = clock
        self._policy = on_store_error
        self._single_flight = single_flight
        self._lock = lock
        self._lock_ttl = lock_ttl
        self._lock_poll = lock_poll
        self._store_retry = store_retry
        self._down = False
        self._down_until = 0.0
        self._down_reason = ""
        self._flights: dict[tuple[int, str], _Flight] = {}

    # -- the store, failing open -----------------------------------------------------

    async def _ask(self, command: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a store command; ``_DOWN`` when it failed (or the store is resting)."""
        if self._down and self._resting():
            return _DOWN
        try:
            result = await command(*args, **kwargs)
        except Exception as exc:
            self._failed(exc)
            return _DOWN
        if self._down:
            self._recovered()
        return result

    def _resting(self) -> bool:
        """Whether the store failed less than ``store_retry`` ago (then it is not asked)."""
        if self._clock.now() < self._down_until:
            _note_down(self._down_reason)
            return True
        return False

    def _recovered(self) -> None:
        self._down = False
        logger.info("llmguard: the cache store answers again; caching resumes")

    def _failed(self, exc: Exception) -> None:
        if self._policy == "closed":
            raise exc
        self._down_until = self._clock.now() + self._store_retry
        self._down_reason = type(exc).__name__
        _note_down(self._down_reason)
        if self._down:
            return
        self._down = True
        # A store that raises StoreUnavailable has logged the outage itself.
        level = logging.INFO if isinstance(exc, StoreUnavailable) else logging.WARNING
        logger.log(
            level,
            "llmguard: the cache store failed (%s: %s); calls go on uncached until it "
            "answers again",
            type(exc).__name__,
            exc,
        )

    async def read(self, key: str, decode: Callable[[bytes], V | None]) -> V | None:
        """The decoded value under ``key``; ``None`` when missing, unreadable or down.

        (``_ask`` inlined: this is the hit path, and every level of ``await`` costs
        when the store yields to the event loop.)
        """
        if self._down and self._resting():
            return None
        instant = self._instant
        try:
            data = instant.get_now(key) if instant is not None else await self.store.get(key)
        except Exception as exc:
            self._failed(exc)
            return None
        if self._down:
            self._recovered()
        return None if data is None else decode(data)

    async def write(self, key: str, data: bytes, ttl: float | None) -> None:
        """Store ``data`` (failing open)."""
        instant = self._instant
        if instant is None:
            await self._ask(self.store.set, key, data, ttl=ttl)
            return
        if self._down and self._resting():
            return
        try:
            instant.set_now(key, data, ttl=ttl)
        except Exception as exc:
            self._failed(exc)
            return
        if self._down:
            self._recovered()

    # -- single flight and the lock ----------------------------------------------------

    async def acquire(
        self, key: str, decode: Callable[[bytes], V | None], *, refresh: bool
    ) -> tuple[V, str] | Lead[V]:
        """A value for ``key`` and where it came from (``"exact"``: the store,
        ``"flight"``: a concurrent caller's read or call), or the duty to fill it.

        The first caller reads the store for everyone (concurrent identical lookups
        make one read), and on a miss goes on to fill it: a ``Lead``.
        """
        flight_key = (threading.get_ident(), key)
        flights = self._flights
        while True:
            flight = flights.get(flight_key)
            if flight is not None:
                await flight.done().wait()
                if flight.has_value:
                    return flight.value, "flight"
                if flight.error is not None:
                    raise flight.error
                continue  # its leader went without an answer: try again
            flight = _Flight()
            if self._single_flight:
                flights[flight_key] = flight
            token = None
            try:
                found = None if refresh else await self.read(key, decode)
                if found is None and self._lock:
                    token, found = await self._cross_process(key, decode)
            except BaseException:
                self._land(flight_key, flight)
                raise
            if found is None:
                lead: Lead[V] = Lead(self, flight_key, flight)
                lead._token = token
                return lead
            flight.value = found
            flight.has_value = True
            self._land(flight_key, flight)
            return found, "exact"

    def _land(self, flight_key: tuple[int, str], flight: _Flight) -> None:
        """End ``flight``: no new caller joins it, and its waiters go."""
        if self._flights.get(flight_key) is flight:
            del self._flights[flight_key]
        flight.land()

    async def _cross_process(
        self, key: str, decode: Callable[[bytes], V | None]
    ) -> tuple[str | None, V | None]:
        """Take the store lock, or wait for its holder's value: ``(token, value)``."""
        lock_key = key + ":lock"
        token = await self._ask(self.store.acquire_lock, lock_key, ttl=self._lock_ttl)
        if token is _DOWN:
            return None, None
        clock = self._clock
        # Two lock lives: the lock found here expires within one (its holder may be
        # dead), and the waiter that takes it next has its own whole life to answer.
        # One life would let every other waiter give up just as that one calls.
        give_up = clock.now() + 2 * self._lock_ttl
        while token is None:
            if clock.now() >= give_up:
                return None, None  # waited two locks' lives: call without it
            await clock.sleep(self._lock_poll)
            found = await self.read(key, decode)
            if found is not None:
                return None, found
            token = await self._ask(self.store.acquire_lock, lock_key, ttl=self._lock_ttl)
            if token is _DOWN:
                return None, None
            if token is not None:
                # Its holder may have stored the value and released the lock just now.
                found = await self.read(key, decode)
                if found is not None:
                    await self._ask(self.store.release_lock, lock_key, token)
                    return None, found
        return token, None

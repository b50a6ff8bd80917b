"""``CircuitBreaker``: fail fast while a provider (or model) is failing, probe, recover.

State lives in memory (per process, the default) or in a ``SharedState`` store, so all
workers share one circuit per key. The store is used through ``read`` and
``compare_and_set`` only, the same on ``MemoryStore``, ``SQLiteStore`` and
``RedisStore``: of several workers racing to change a circuit exactly one wins and the
others decide again on what it wrote.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal, ParamSpec, TypeVar

import anyio

from .._clock import Clock, SystemClock
from .._errors import CircuitOpen, ConfigurationError, StoreUnavailable
from .._layer import BaseLayer, Handler, StreamHandler, StreamOpener
from .._state import _CURRENT_CALL, current_call
from .._stores._roles import SharedState, StoreErrorPolicy
from .._targets import ROUTED_PROVIDER
from .._types import Request, Response
from .._wrap import Invocation, around
from ._breaker_records import _Ticket, _WallClock
from ._breaker_stream import open_stream
from ._circuit import Circuit, CircuitPolicy, CircuitState, Outcome, Transition
from ._classify import is_retryable

__all__ = ["CircuitBreaker", "CircuitState", "circuit_breaker"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_log = logging.getLogger("llmguard.breaker")
_CAS_TRIES = 64  # compare-and-set rounds before contention counts as a store failure
_SETTLE_GRACE_S = 1.0  # bound on writing a cancelled probe's outcome back


class CircuitBreaker(BaseLayer):
    """Fails fast with ``CircuitOpen`` while a provider or model keeps failing.

    - **Opens** after ``consecutive_failures`` failures in a row, or when the share of
      failures among the last ``window`` calls reaches ``failure_rate`` (once at least
      ``min_calls`` calls were counted; default: a full window). With neither given:
      five consecutive failures.
    - **Open**: every call raises ``CircuitOpen`` (``retry_at`` says when it
      half-opens) before anything is sent.
    - **Half-open** after ``reset_after`` seconds: ``probes`` calls are let through
      (at once: others keep failing fast); when all of them succeed the circuit
      closes, when one fails it opens again for another ``reset_after``.

    A *failure* is what ``failure`` says (default ``is_retryable``: timeouts,
    connection errors, 408/409/429/5xx, per-attempt deadlines). Other errors (a 400,
    a budget refusal) and cancellations count neither way; a probe that ends so frees
    its slot for another probe.

    One circuit per key: ``"provider/model"`` with ``per="model"`` (the default),
    ``"provider"`` with ``per="provider"``; the provider is the one the call goes to
    (a fallback target's, if a ``Fallback`` outside routed it elsewhere).

    Args:
        store: a ``SharedState`` (``MemoryStore``, ``SQLiteStore``, ``RedisStore``)
            to share circuits between workers; ``None`` keeps them in this process.
        on_store_error: when the store fails (``StoreUnavailable``): ``"open"`` (the
            default) decides on this process's own circuit for that call,
            ``"closed"`` raises the error.
        name: the namespace of this breaker's keys in the store.
        clock: time for ``reset_after``. Default: ``SystemClock`` in memory, wall-clock
            epoch seconds with a store (so hosts agree; keep their clocks in sync).
        on_change: called with ``(key, old_state, new_state)`` on every transition
            (keep it fast). Transitions are also logged on ``llmguard.breaker`` and
            noted in the call state (``CallState.extra["circuit"]`` as text,
            ``CallState.extra["circuit_transitions"]`` as ``(key, old, new)`` tuples).
    """

    def __init__(
        self,
        *,
        consecutive_failures: int | None = None,
        failure_rate: float | None = None,
        window: int = 20,
        min_calls: int | None = None,
        reset_after: float = 30.0,
        probes: int = 1,
        per: Literal["model", "provider"] = "model",
        failure: Callable[[BaseException], bool] | None = None,
        store: SharedState | None = None,
        on_store_error: StoreErrorPolicy = "open",
        name: str = "default",
        clock: Clock | None = None,
        on_change: Callable[[str, CircuitState, CircuitState], None] | None = None,
    ) -> None:
        self._policy = CircuitPolicy.build(
            consecutive_failures=consecutive_failures,
            failure_rate=failure_rate,
            window=window,
            min_calls=min_calls,
            reset_after=reset_after,
            probes=probes,
        )
        if per not in ("model", "provider"):
            raise ConfigurationError(f'per must be "model" or "provider", not {per!r}')
        if on_store_error not in ("open", "closed"):
            raise ConfigurationError(
                f'on_store_error must be "open" or "closed", not {on_store_error!r}'
            )
        if store is not None and not isinstance(store, SharedState):
            raise ConfigurationError(
                f"{store!r} is not a SharedState store (read, compare_and_set, increment)"
            )
        self._per_model = per == "model"
        self._failure = failure or is_retryable
        self._store = store
        self._on_store_error = on_store_error
        self._name = name
        self._clock: Clock = clock or (SystemClock() if store is None else _WallClock())
        self._on_change = on_change
        self._ttl = max(3600.0, 10 * self._policy.reset_after)
        # key -> (its circuit, the ticket every call that finds it closed gets)
        self._local: dict[str, tuple[Circuit, _Ticket]] = {}
        self._counts_successes = self._policy.failure_rate is not None
        self._lock = threading.Lock()

    # -- the two paths -------------------------------------------------------------

    async def complete(self, request: Request, call_next: Handler) -> Response:
        """Refuse at once while open; else call inward and count the outcome."""
        key = self._key(request)
        ticket = self._admit_local(key) if self._store is None else await self._admit(key)
        try:
            response = await call_next(request)
        except BaseException as exc:
            await self._settle(ticket, self._outcome(exc))
            raise
        circuit = ticket.circuit
        if (
            circuit is not None
            and ticket.verdict == "pass"
            and circuit.failures == 0
            and not self._counts_successes
        ):
            return response  # the happy path: nothing to count
        await self._settle(ticket, "success")
        return response

    def stream(self, request: Request, call_next: StreamHandler) -> StreamOpener:
        """Refuse on entering while open; count the stream's outcome when it is left."""
        return open_stream(self, request, call_next)

    async def guarded(self, key: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call()`` under the circuit ``key`` (what the decorator form does)."""
        ticket = await self._admit(key)
        try:
            result = await call()
        except BaseException as exc:
            await self._settle(ticket, self._outcome(exc))
            raise
        await self._settle(ticket, "success")
        return result

    async def state(self, key: str) -> CircuitState:
        """The state a call to ``key`` would meet now (``"half_open"`` once an open
        circuit's wait is over: the next call is a probe)."""
        now = self._clock.now()
        if self._store is not None:
            stored = await self._store.read(self._store_key(key))
            circuit = Circuit() if stored is None else Circuit.decode(stored.value)
        else:
            with self._lock:
                entry = self._local.get(key)
            circuit = Circuit() if entry is None else entry[0]
        return self._policy.effective_state(circuit, now)

    # -- admission and settling ----------------------------------------------------

    def _key(self, request: Request) -> str:
        routed = ROUTED_PROVIDER.get()
        if routed is not None:
            provider = routed.name
        else:
            state = _CURRENT_CALL.get()
            provider = state.provider if state is not None else ""
        return f"{provider}/{request.model}" if self._per_model else provider

    def _store_key(self, key: str) -> str:
        return f"llmguard:circuit:{self._name}:{key}"

    def _outcome(self, error: BaseException) -> Outcome:
        if isinstance(error, Exception) and not isinstance(error, CircuitOpen):
            return "failure" if self._failure(error) else "neutral"
        return "neutral"

    async def _admit(self, key: str) -> _Ticket:
        if self._store is not None:
            try:
                return await self._admit_shared(key)
            except StoreUnavailable:
                if self._on_store_error == "closed":
                    raise
                _log.warning("circuit store unavailable; deciding on the local circuit %s", key)
        return self._admit_local(key)

    def _admit_local(self, key: str) -> _Ticket:
        entry = self._local.get(key)
        if entry is not None and entry[0].state == "closed":
            return entry[1]  # the happy path: nothing to decide, nothing to lock
        with self._lock:
            entry = self._local.get(key)
            if entry is None:
                circuit = Circuit()
                entry = self._local[key] = (circuit, _Ticket(key, "pass", circuit, True))
            circuit = entry[0]
            if circuit.state == "closed":
                return entry[1]
            verdict, _, transition = self._policy.admit(circuit, self._clock.now())
            retry_at = self._policy.retry_at(circuit)
        self._announce(key, transition)
        if verdict == "reject":
            self._rejected(key)
            raise CircuitOpen(key, retry_at=retry_at)
        return _Ticket(key, verdict, circuit, True)

    async def _admit_shared(self, key: str) -> _Ticket:
        assert self._store is not None
        store, skey = self._store, self._store_key(key)
        for _ in range(_CAS_TRIES):
            stored = await store.read(skey)
            version = 0 if stored is None else stored.version
            circuit = Circuit() if stored is None else Circuit.decode(stored.value)
            verdict, changed, transition = self._policy.admit(circuit, self._clock.now())
            if changed and not await store.compare_and_set(
                skey, version, circuit.encode(), ttl=self._ttl
            ):
                continue  # another worker changed it first: decide again on what it wrote
            self._announce(key, transition)
            if verdict == "reject":
                self._rejected(key)
                raise CircuitOpen(key, retry_at=self._policy.retry_at(circuit))
            return _Ticket(key, verdict, None, circuit.failures == 0)
        raise StoreUnavailable(repr(store), f"circuit {key!r} kept changing under contention")

    def _nothing_to_count(self, ticket: _Ticket, outcome: Outcome) -> bool:
        """True when settling would change nothing (the happy path: no lock, no store).

        A success resets the consecutive-failure count; one that finds it at zero has
        nothing to do, unless a failure-rate window counts successes too. (A stored
        circuit is judged by what was read at admission, which saves a round trip per
        call: a success racing with another worker's failure may leave that failure
        counted.)
        """
        if ticket.verdict != "pass":
            return False
        if outcome == "neutral":
            return True
        if outcome == "failure" or self._policy.failure_rate is not None:
            return False
        circuit = ticket.circuit
        if circuit is None:
            return ticket.clean
        return circuit.failures == 0 and circuit.state == "closed"

    async def _settle(self, ticket: _Ticket, outcome: Outcome) -> None:
        if self._nothing_to_count(ticket, outcome):
            return
        circuit = ticket.circuit
        if circuit is not None:
            now = self._clock.now()
            with self._lock:
                _, transition = self._policy.settle(circuit, ticket.verdict, outcome, now)
            self._announce(ticket.key, transition)
            return
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = anyio.current_time() + _SETTLE_GRACE_S
            try:
                await self._settle_shared(ticket, outcome)
            except StoreUnavailable:
                _log.warning("circuit store unavailable; the outcome of %s is lost", ticket.key)

    async def _settle_shared(self, ticket: _Ticket, outcome: Outcome) -> None:
        assert self._store is not None
        store, skey = self._store, self._store_key(ticket.key)
        for _ in range(_CAS_TRIES):
            stored = await store.read(skey)
            version = 0 if stored is None else stored.version
            circuit = Circuit() if stored is None else Circuit.decode(stored.value)
            changed, transition = self._policy.settle(
                circuit, ticket.verdict, outcome, self._clock.now()
            )
            if not changed:
                return
            if await store.compare_and_set(skey, version, circuit.encode(), ttl=self._ttl):
                self._announce(ticket.key, transition)
                return
        raise StoreUnavailable(
            repr(store), f"circuit {ticket.key!r} kept changing under contention"
        )

    def _announce(self, key: str, transition: Transition) -> None:
        if transition is None:
            return
        old, new = transition
        level = logging.WARNING if new == "open" else logging.INFO
        _log.log(level, "circuit %s: %s -> %s", key, old, new)
        state = current_call()
        if state is not None:
            state.extra.setdefault("circuit", []).append(f"{key}: {old} -> {new}")
            state.extra.setdefault("circuit_transitions", []).append((key, old, new))
        if self._on_change is not None:
            try:
                self._on_change(key, old, new)
            except Exception:
                _log.exception("llmguard: a CircuitBreaker on_change callback raised")

    def _rejected(self, key: str) -> None:
        state = current_call()
        if state is not None:
            state.extra.setdefault("circuit", []).append(f"{key}: open, failed fast")

    def __repr__(self) -> str:
        policy = self._policy
        where = "memory" if self._store is None else repr(self._store)
        return (
            f"CircuitBreaker(consecutive_failures={policy.consecutive_failures!r}, "
            f"failure_rate={policy.failure_rate!r}, window={policy.window}, "
            f"reset_after={policy.reset_after:g}, probes={policy.probes}, state={where})"
        )


def circuit_breaker(
    *,
    consecutive_failures: int | None = None,
    failure_rate: float | None = None,
    window: int = 20,
    min_calls: int | None = None,
    reset_after: float = 30.0,
    probes: int = 1,
    failure: Callable[[BaseException], bool] | None = None,
    store: SharedState | None = None,
    on_store_error: StoreErrorPolicy = "open",
    name: str | None = None,
    clock: Clock | None = None,
    on_change: Callable[[str, CircuitState, CircuitState], None] | None = None,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """A circuit breaker on any ``async def`` (the ``CircuitBreaker`` layer's rules).

    One circuit per decorated function, keyed by ``name`` (default: the function's
    qualified name), shared through ``store`` when given.

    >>> @circuit_breaker(consecutive_failures=3, reset_after=10)
    ... async def embed(text: str) -> list[float]:
    ...     return [0.0]
    """
    breaker = CircuitBreaker(
        consecutive_failures=consecutive_failures,
        failure_rate=failure_rate,
        window=window,
        min_calls=min_calls,
        reset_after=reset_after,
        probes=probes,
        failure=failure,
        store=store,
        on_store_error=on_store_error,
        name="decorator",
        clock=clock,
        on_change=on_change,
    )

    async def advice(call: Invocation[T]) -> T:
        return await breaker.guarded(name or call.name, call.proceed)

    return around(advice)

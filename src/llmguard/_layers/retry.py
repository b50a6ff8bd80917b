"""``Retry``: try a failed call again when that may help, with backoff, within bounds.

The happy path is one ``try``: no tenacity object is built and no strategy is called
until an attempt has failed. After a failure, the decision follows tenacity's order
(retry predicate, wait, stop) with tenacity's own strategy objects, on a
``RetryCallState`` that llmguard stamps with its injected clock.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import anyio

from .._clock import Clock, SystemClock
from .._errors import ConfigurationError
from .._layer import BaseLayer, EventStream, Handler, StreamHandler, StreamOpener
from .._retry_after import DEFAULT_MAX_RETRY_AFTER, decide
from .._timeouts import effective_deadline
from .._types import Request, Response
from .._wrap import Invocation, around
from ._classify import NEVER_RETRIED
from ._switching import SwitchingStream

if TYPE_CHECKING:
    from tenacity import RetryCallState
    from tenacity.retry import RetryBaseT
    from tenacity.stop import StopBaseT
    from tenacity.wait import WaitBaseT

__all__ = ["Retry", "retry"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_log = logging.getLogger("llmguard.retry")


class Retry(BaseLayer):
    """Tries a failed call again, only when that may help, with backoff, within bounds.

    - **What**: ``retry=`` decides (default ``retry_if_retryable()``: timeouts,
      connection errors, 408/409/429/5xx; never 400/401/403/404/422). A budget
      refusal (``BudgetExceeded``, ``UnknownPrice``), a validation error and a
      configuration error are never retried, whatever ``retry=`` says.
    - **How long to wait**: an advertised ``Retry-After``/``retry-after-ms`` in
      ``(0, max_retry_after]`` is waited exactly; above ``max_retry_after`` the call
      is not retried (a fallback can take over at once); otherwise ``wait=`` decides
      (default ``wait_full_jitter(0.5, 8.0)``: exponential backoff, full jitter).
      The rules follow the openai SDK's.
    - **How often**: at most ``attempts`` attempts in all, and none that would start
      more than ``total`` seconds after the first (``stop_after_total``); ``stop=``
      adds a condition of your own (tenacity's ``stop_after_delay`` and friends).
      A wait that would end after the call's deadline (the Guard's ``timeout``) is
      not started either: the error is raised at once.
    - **Streams** are retried only when they failed before their first event; once
      an event has reached you, an error passes through.

    When it gives up, the last error is raised as it is (not wrapped).

    Args:
        attempts: the most attempts in all, the first included (at least 1).
        total: seconds from the first attempt's start after which no attempt starts
            (``None``: no bound of this kind).
        stop, wait, retry: tenacity strategy objects (or plain callables taking a
            ``RetryCallState``), combined with ``|`` and ``&`` as in tenacity.
        max_retry_after: the longest advertised wait honoured (the SDK's 120 s).
        clock: where time is read and slept (default ``SystemClock``); pass a
            ``ManualClock`` in tests.
    """

    __slots__ = (
        "_attempts",
        "_clock",
        "_max_retry_after",
        "_retry",
        "_stop",
        "_tenacity",
        "_total",
        "_wait",
    )

    def __init__(
        self,
        *,
        attempts: int = 3,
        total: float | None = 30.0,
        stop: StopBaseT | None = None,
        wait: WaitBaseT | None = None,
        retry: RetryBaseT | None = None,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        clock: Clock | None = None,
    ) -> None:
        from tenacity import AsyncRetrying, stop_after_attempt

        from .retry_strategies import retry_if_retryable, stop_after_total, wait_full_jitter

        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ConfigurationError(f"attempts must be an int of at least 1, not {attempts!r}")
        if total is not None and not total > 0:
            raise ConfigurationError(f"total must be positive seconds or None, not {total!r}")
        if not max_retry_after >= 0:
            raise ConfigurationError(f"max_retry_after must be >= 0, not {max_retry_after!r}")
        for name, strategy in (("stop", stop), ("wait", wait), ("retry", retry)):
            if strategy is not None and not callable(strategy):
                raise ConfigurationError(f"{name}= must be a tenacity strategy, not {strategy!r}")
        combined: Any = stop_after_attempt(attempts)
        if total is not None:
            combined = combined | stop_after_total(total)
        if stop is not None:
            combined = combined | stop
        self._attempts = attempts
        self._total = total
        self._stop: Callable[[RetryCallState], bool] = combined
        self._wait: Callable[[RetryCallState], float] = wait or wait_full_jitter()
        self._retry: Callable[[RetryCallState], bool] = retry or retry_if_retryable()
        self._max_retry_after = float(max_retry_after)
        self._clock: Clock = clock or SystemClock()
        # Strategies that look at ``retry_state.retry_object`` find the configuration
        # here; llmguard runs its own loop and never calls this object.
        self._tenacity = AsyncRetrying(
            stop=combined, wait=self._wait, retry=self._retry, sleep=self._clock.sleep
        )

    async def complete(self, request: Request, call_next: Handler) -> Response:
        """Call inward; after a failure worth retrying, wait and call again."""
        started = self._clock.now()
        try:
            return await call_next(request)
        except Exception as exc:
            failure = exc
        tries = _Tries(self, started)
        while True:
            await tries.pause(failure)
            try:
                return await call_next(request)
            except Exception as exc:
                failure = exc

    def stream(self, request: Request, call_next: StreamHandler) -> StreamOpener:
        """Open the stream; if it fails before its first event, wait and open it again."""
        return _RetryingStream(_Tries(self, self._clock.now()), request, call_next)

    def __repr__(self) -> str:
        return (
            f"Retry(attempts={self._attempts}, total={self._total!r}, wait={self._wait!r}, "
            f"retry={self._retry!r}, max_retry_after={self._max_retry_after:g})"
        )


class _Tries:
    """The retry bookkeeping of one call (built only once an attempt has failed)."""

    __slots__ = ("_layer", "_started", "_state")

    def __init__(self, layer: Retry, started: float) -> None:
        self._layer = layer
        self._started = started
        self._state: RetryCallState | None = None

    async def pause(self, failure: Exception) -> None:
        """Wait before the next attempt, or raise ``failure`` when it should not happen."""
        from tenacity import RetryCallState

        layer = self._layer
        clock = layer._clock
        state = self._state
        if state is None:
            state = self._state = RetryCallState(layer._tenacity, None, (), {})
            state.start_time = self._started
        state.set_exception((type(failure), failure, failure.__traceback__))
        state.outcome_timestamp = clock.now()
        if isinstance(failure, NEVER_RETRIED) or not layer._retry(state):
            raise failure
        advised = getattr(failure, "retry_after", None)
        if not isinstance(advised, int | float):
            advised = None
        kind, seconds = decide(advised, cap=layer._max_retry_after)
        if kind == "give_up":
            _log.debug("not retrying: the provider asked for %s s (above the cap)", advised)
            raise failure
        delay = seconds if kind == "wait" else max(0.0, float(layer._wait(state)))
        state.upcoming_sleep = delay
        if layer._stop(state):
            raise failure
        deadline = effective_deadline()
        if deadline != math.inf and anyio.current_time() + delay >= deadline:
            _log.debug("not retrying: a %.3f s wait would outlast the call's deadline", delay)
            raise failure
        _log.debug(
            "retrying after %s (attempt %d) in %.3f s",
            type(failure).__name__,
            state.attempt_number + 1,
            delay,
        )
        await clock.sleep(delay)
        state.idle_for += delay
        state.prepare_for_next_attempt()


class _RetryingStream(SwitchingStream):
    __slots__ = ("_call_next", "_request", "_tries")

    def __init__(self, tries: _Tries, request: Request, call_next: StreamHandler) -> None:
        super().__init__()
        self._tries = tries
        self._request = request
        self._call_next = call_next

    async def _open(self) -> tuple[StreamOpener, EventStream]:
        opener = self._call_next(self._request)
        return opener, await opener.__aenter__()

    async def _recover(self, failure: Exception) -> None:
        await self._tries.pause(failure)


def retry(
    *,
    attempts: int = 3,
    total: float | None = 30.0,
    stop: StopBaseT | None = None,
    wait: WaitBaseT | None = None,
    retry: RetryBaseT | None = None,
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
    clock: Clock | None = None,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Retry any ``async def`` the way the ``Retry`` layer does (same arguments).

    >>> @retry(attempts=3)
    ... async def embed(text: str) -> list[float]:
    ...     return [0.0]
    """
    layer = Retry(
        attempts=attempts,
        total=total,
        stop=stop,
        wait=wait,
        retry=retry,
        max_retry_after=max_retry_after,
        clock=clock,
    )

    async def advice(call: Invocation[T]) -> T:
        started = layer._clock.now()
        try:
            return await call.proceed()
        except Exception as exc:
            failure = exc
        tries = _Tries(layer, started)
        while True:
            await tries.pause(failure)
            try:
                return await call.proceed()
            except Exception as exc:
                failure = exc

    return around(advice)

"""llmguard's retry strategies, built on tenacity's bases so ``|`` and ``&`` compose.

- ``retry_if_retryable()``: what is worth trying again (see ``is_retryable``);
- ``retry_if_status(429, 503)``: a ``ProviderError`` with one of these HTTP statuses;
- ``stop_after_total(seconds)``: stop when the next attempt would start more than
  ``seconds`` after the first one started, on the retry layer's injected clock;
- ``wait_full_jitter(initial, max, random=)``: exponential backoff with full jitter
  and injectable randomness.

This module imports tenacity (about 17 ms), so ``llmguard`` loads it only when one of
these names is first used or a ``Retry`` is built.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable

from tenacity import RetryCallState
from tenacity.retry import retry_base
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from .._errors import ConfigurationError, ProviderError
from ._classify import is_retryable

__all__ = ["retry_if_retryable", "retry_if_status", "stop_after_total", "wait_full_jitter"]


class retry_if_retryable(retry_base):
    """Retry what is worth retrying: a ``ProviderError`` marked ``retryable`` (timeouts,
    connection errors, 408/409/429/5xx), a ``DeadlineExceeded`` raised inside the retry
    (a per-attempt deadline), and the builtin ``TimeoutError`` and ``ConnectionError``.

    >>> from tenacity import retry_if_exception_type
    >>> either = retry_if_retryable() | retry_if_exception_type(KeyError)
    """

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        if outcome is None or not outcome.failed:
            return False
        error = outcome.exception()
        return error is not None and is_retryable(error)

    def __repr__(self) -> str:
        return "retry_if_retryable()"


class retry_if_status(retry_base):
    """Retry a ``ProviderError`` whose HTTP status is one of ``codes``.

    >>> only_overload = retry_if_status(429, 503)
    """

    def __init__(self, *codes: int) -> None:
        if not codes:
            raise ConfigurationError("retry_if_status needs at least one status code")
        self.codes = frozenset(codes)

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        if outcome is None or not outcome.failed:
            return False
        error = outcome.exception()
        return isinstance(error, ProviderError) and error.status_code in self.codes

    def __repr__(self) -> str:
        return f"retry_if_status({', '.join(map(str, sorted(self.codes)))})"


class stop_after_total(stop_base):
    """Stop when the next attempt would start more than ``seconds`` after the first.

    It counts the wait about to be slept (``upcoming_sleep``), so no wait is started
    that would end past the bound. Time is read from the retry state, which llmguard's
    ``Retry`` stamps with its injected clock (tenacity's own loop stamps
    ``time.monotonic()``; this stop works with either).

    >>> bounded = stop_after_total(30.0)
    """

    def __init__(self, seconds: float) -> None:
        if not seconds > 0:
            raise ConfigurationError(f"stop_after_total needs positive seconds, not {seconds!r}")
        self.seconds = float(seconds)

    def __call__(self, retry_state: RetryCallState) -> bool:
        elapsed = retry_state.seconds_since_start or 0.0
        return elapsed + retry_state.upcoming_sleep > self.seconds

    def __repr__(self) -> str:
        return f"stop_after_total({self.seconds:g})"


class wait_full_jitter(wait_base):
    """Exponential backoff with full jitter: before retry ``n`` (1, 2, …), wait a uniform
    random time in ``[0, min(max, initial * 2 ** (n - 1))]``.

    ``random`` returns a float in ``[0, 1)`` (default ``random.random``); pass a seeded
    ``random.Random(seed).random`` for reproducible waits.

    >>> import random
    >>> wait = wait_full_jitter(0.5, 8.0, random=random.Random(7).random)
    """

    def __init__(
        self,
        initial: float = 0.5,
        max: float = 8.0,  # tenacity's parameter name
        *,
        random: Callable[[], float] | None = None,
    ) -> None:
        if not initial > 0 or not max >= initial:
            raise ConfigurationError(
                f"wait_full_jitter needs 0 < initial <= max, not initial={initial!r}, max={max!r}"
            )
        self.initial = float(initial)
        self.max = float(max)
        self.random = random or _random.random

    def ceiling(self, retry_number: int) -> float:
        """The upper bound of the wait before retry ``retry_number`` (from 1)."""
        exponent = min(retry_number - 1, 1000)  # 2.0 ** 1000 is still a float
        return min(self.max, self.initial * 2.0**exponent)

    def __call__(self, retry_state: RetryCallState) -> float:
        return self.random() * self.ceiling(retry_state.attempt_number)

    def __repr__(self) -> str:
        return f"wait_full_jitter({self.initial:g}, {self.max:g})"


for _cls in (retry_if_retryable, retry_if_status, stop_after_total, wait_full_jitter):
    _cls.__module__ = "llmguard"
del _cls

"""Bounded failure for the shared stores: one error class, one warning per outage.

``SQLiteStore`` and ``RedisStore`` translate every failure of their backend (an
``sqlite3.Error``, a ``RedisError``, no answer within ``timeout``) into
``StoreUnavailable`` at one boundary, ``raise ... from exc``. ``Outage`` remembers
whether the store is down, so an outage logs one warning on the ``llmguard.stores``
logger (not one per call), and the first success afterwards logs that it is over.
"""

from __future__ import annotations

import logging
import math
import threading

from .._errors import ConfigurationError, StoreUnavailable

__all__ = ["DEFAULT_TIMEOUT", "Outage", "check_hold", "check_timeout", "logger"]

logger = logging.getLogger("llmguard.stores")

#: How long a shared store may take to answer before it is declared unavailable.
DEFAULT_TIMEOUT = 0.25


def check_timeout(timeout: float) -> float:
    """``timeout`` as a float, refusing what is not a positive, finite number of seconds."""
    value = float(timeout)
    if not 0 < value < math.inf:
        raise ConfigurationError(
            f"timeout must be a positive, finite number of seconds, not {timeout!r}"
        )
    return value


def check_hold(hold: float) -> float:
    """``hold`` as a float; a reservation must expire some time (finite, not negative)."""
    value = float(hold)
    if not 0 <= value < math.inf:
        raise ValueError(f"hold must be a finite, non-negative number of seconds, not {hold!r}")
    return value


class Outage:
    """Whether one store is down; turns failures into ``StoreUnavailable``.

    ``failed`` builds the error (the caller raises it ``from`` the cause) and logs a
    warning only for the first failure of an outage; ``succeeded`` ends the outage.
    """

    def __init__(self, store: str) -> None:
        self.store = store
        self._down = False
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        """True between a failure and the next success."""
        return self._down

    def failed(self, cause: BaseException, message: str) -> StoreUnavailable:
        """The ``StoreUnavailable`` to raise for ``cause``; warns once per outage."""
        with self._lock:
            first, self._down = not self._down, True
        if first:
            logger.warning(
                "store %s is unavailable (%s: %s); calls raise StoreUnavailable until it "
                "answers again",
                self.store,
                type(cause).__name__,
                cause,
            )
        return StoreUnavailable(self.store, f"{message} ({type(cause).__name__}: {cause})")

    def succeeded(self) -> None:
        """Note an answer; ends the outage (and says so) if there was one."""
        if self._down:
            with self._lock:
                was, self._down = self._down, False
            if was:
                logger.info("store %s answers again", self.store)

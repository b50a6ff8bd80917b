"""Time, injected: a ``Clock`` gives ``now()`` and ``sleep()``.

The default reads the event loop's own clock (``anyio.current_time``), so tests on
trio's ``MockClock`` see virtual time everywhere; ``llmguard.testing.ManualClock``
is a clock a test moves by hand.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

import anyio

__all__ = ["AnyioClock", "Clock"]


@runtime_checkable
class Clock(Protocol):
    """A source of time: monotonic seconds and a way to wait."""

    def now(self) -> float:
        """Monotonic seconds; only differences matter."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class AnyioClock:
    """The event loop's clock: ``anyio.current_time()`` and ``anyio.sleep()``.

    Outside a running loop ``now()`` falls back to ``time.monotonic()``.
    """

    __slots__ = ()

    def now(self) -> float:
        try:
            return anyio.current_time()
        except RuntimeError:  # pragma: no cover - only outside an event loop
            return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    def __repr__(self) -> str:
        return "AnyioClock()"

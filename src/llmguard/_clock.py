"""Time, injected: a ``Clock`` gives ``now()`` and ``sleep()``.

The default, ``SystemClock``, reads ``time.monotonic()`` (cheap: it is read several
times per call) and sleeps with ``anyio.sleep``. ``AnyioClock`` reads the event
loop's own clock instead, so code on trio's ``MockClock`` sees virtual time in its
records too; ``llmguard.testing.ManualClock`` is a clock a test moves by hand.
Deadlines always run on the event loop's clock (they are anyio cancel scopes).
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

import anyio

__all__ = ["AnyioClock", "Clock", "SystemClock"]


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


class SystemClock:
    """``time.monotonic()`` for reading time, ``anyio.sleep()`` for waiting (the default)."""

    __slots__ = ()

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"

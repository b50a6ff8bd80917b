"""Helpers for the degradation layers' tests: clocks that log their sleeps."""

from __future__ import annotations

import anyio

from llmguard.testing import ManualClock


class LoggingClock(ManualClock):
    """A ``ManualClock`` that jumps forward on every sleep and logs how long each was."""

    def __init__(self, start: float = 0.0) -> None:
        super().__init__(start, autojump=True)
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await super().sleep(seconds)


async def until_sleepers(clock: ManualClock, count: int) -> None:
    """Let other tasks run until ``count`` of them sleep on ``clock``."""
    for _ in range(10_000):
        if clock.sleepers >= count:
            return
        await anyio.lowlevel.checkpoint()
    raise AssertionError(f"expected {count} sleepers, saw {clock.sleepers}")


async def settle() -> None:
    """Let every runnable task run until it blocks again."""
    for _ in range(20):
        await anyio.lowlevel.checkpoint()

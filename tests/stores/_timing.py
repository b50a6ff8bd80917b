"""Checking a time bound on a shared, loaded machine.

A store promises an answer within its ``timeout``. On a busy 2-core CI box the test
process itself can go unscheduled for hundreds of milliseconds, and no store can
answer while nobody runs it. ``StarvationMeter`` measures that: an OS thread sleeps
2 ms at a time and notes how late it wakes. Time the whole process was not running
is excused from a call's elapsed time; time the event loop was blocked while the
process ran is not (the thread keeps waking on time then), so a store that blocked
its event loop would still fail the bound.
"""

from __future__ import annotations

import bisect
import threading
import time
from types import TracebackType

TICK = 0.002


class StarvationMeter:
    def __init__(self) -> None:
        self._wakes: list[float] = []  # when the thread woke up late...
        self._lags: list[float] = []  # ...and by how much
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="starvation-meter", daemon=True)

    def __enter__(self) -> StarvationMeter:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            before = time.monotonic()
            time.sleep(TICK)
            woke = time.monotonic()
            lag = woke - before - TICK
            if lag > 0.001:
                self._wakes.append(woke)
                self._lags.append(lag)

    def starved(self, start: float, end: float) -> float:
        """Seconds within ``[start, end]`` during which the process did not run."""
        total = 0.0
        first = bisect.bisect_left(self._wakes, start)
        for index in range(first, len(self._wakes)):
            woke, lag = self._wakes[index], self._lags[index]
            if woke - lag > end:
                break
            total += max(0.0, min(end, woke) - max(start, woke - lag))
        return total

    @property
    def worst(self) -> float:
        return max(self._lags, default=0.0)

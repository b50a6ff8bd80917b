"""The ``CircuitBreaker``'s small records: one call's admission ticket, and the wall
clock that circuits kept in a store are timed by."""

from __future__ import annotations

import time

import anyio

from ._circuit import Circuit, Verdict


class _WallClock:
    """Epoch seconds: what workers on different hosts can compare."""

    __slots__ = ()

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:  # pragma: no cover - never used here
        await anyio.sleep(seconds)


class _Ticket:
    """One call's admission: what to settle, and where.

    ``circuit`` is the in-memory circuit (``None`` when it lives in a store);
    ``clean`` says the stored circuit had no failures counted when the call started.
    """

    __slots__ = ("circuit", "clean", "key", "verdict")

    def __init__(self, key: str, verdict: Verdict, circuit: Circuit | None, clean: bool) -> None:
        self.key = key
        self.verdict = verdict
        self.circuit = circuit
        self.clean = clean

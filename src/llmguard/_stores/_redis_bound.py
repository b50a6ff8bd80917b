"""How ``RedisStore`` runs one command: on its event loop, within its bound.

``bounded`` is every command's path (a cache hit's too): the store's one deadline
timer (``_deadline``), the cap on commands in flight, one resend on a dropped pooled
connection, and every failure turned into ``StoreUnavailable`` (the store's outage
logs it). ``check_loop`` refuses trio, and a second event loop while the first lives.

These are ``RedisStore`` methods (``_bounded``, ``_check_loop``, ``_new_deadlines``),
defined here to keep ``redis.py`` to the commands.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.lowlevel

from .._errors import ConfigurationError
from ._deadline import Deadlines

if TYPE_CHECKING:
    from .redis import RedisStore

__all__ = ["bounded", "check_loop", "new_deadlines"]

T = TypeVar("T")


def check_loop(self: RedisStore) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise ConfigurationError(
            "RedisStore runs on asyncio only (redis-py's client is asyncio-only); "
            "under trio use SQLiteStore or MemoryStore"
        ) from None
    if self._loop is None or self._loop() is None or self._loop() is loop:
        self._loop = weakref.ref(loop)
        return
    raise ConfigurationError(
        "this RedisStore is bound to the event loop that first used it (its "
        "connections belong to that loop); make one RedisStore per event loop"
    )


def new_deadlines(self: RedisStore) -> Deadlines:
    """The bounds' timer for the running loop, on first use or on another loop
    (which ``_check_loop`` refuses unless the first one is gone)."""
    self._check_loop()
    deadlines = self._deadlines = Deadlines(asyncio.get_running_loop(), self._timeout)
    return deadlines


async def bounded(
    self: RedisStore,
    command: Callable[..., Awaitable[T]],
    *args: Any,
    resend: bool = True,
    checkpoint: bool = True,
) -> T:
    """``await command(*args)`` within the bound; every failure becomes
    ``StoreUnavailable``. With ``resend``, sent once more on a fresh connection when
    a pooled one turns out dropped (say, after a Redis restart). With
    ``checkpoint``, a caller already cancelled stops before sending anything.

    (This is every cache hit's path: kept flat, one frame, no timer of its own.)
    """
    deadlines = self._deadlines
    if deadlines is None or deadlines.loop is not _running_loop():
        deadlines = self._new_deadlines()
    deadline = deadlines.enter()  # the bound runs from the call
    try:
        try:
            if checkpoint:
                await anyio.lowlevel.checkpoint_if_cancelled()
            in_flight = self._in_flight
            if in_flight is None and self._max_in_flight is not None:
                in_flight = self._in_flight = anyio.Semaphore(
                    self._max_in_flight, fast_acquire=True
                )
            if in_flight is not None:
                try:
                    in_flight.acquire_nowait()
                except anyio.WouldBlock:
                    await in_flight.acquire()  # wait for a turn, within the bound
            try:
                try:
                    result = await command(*args)
                except self._connection_error:
                    # A pooled connection the server dropped (say, after a
                    # restart): once more on a fresh one, if sending it twice
                    # cannot count it twice.
                    if not resend:
                        raise
                    result = await command(*args)
            finally:
                if in_flight is not None:
                    in_flight.release()
        except BaseException as exc:
            deadlines.leave(deadline, exc)  # TimeoutError if the bound cut it short
            raise
        deadlines.leave(deadline, None)
    except TimeoutError as exc:
        ms = round(self._timeout * 1000)
        raise self._outage.failed(exc, f"no answer within {ms} ms") from exc
    except self._errors as exc:
        raise self._outage.failed(exc, "Redis failed") from exc
    self._outage.succeeded()
    return result


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # not on asyncio (trio): _check_loop says so
        return None

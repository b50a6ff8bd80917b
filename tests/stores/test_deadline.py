"""``Deadlines``: the one timer behind every ``RedisStore`` command's bound.

asyncio only, like ``RedisStore``: each test runs its own loop with ``asyncio.run``.
The bounds are short and the tests assert what happened, never how long it took.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import pytest

from llmguard._stores._deadline import Deadlines

T = TypeVar("T")


async def bounded(deadlines: Deadlines, work: Callable[[], Awaitable[T]]) -> T:
    """``work()`` under one bound, the way ``RedisStore._bounded`` runs a command."""
    deadline = deadlines.enter()
    try:
        result = await work()
    except BaseException as exc:
        deadlines.leave(deadline, exc)
        raise
    deadlines.leave(deadline, None)
    return result


async def forever() -> None:
    await anyio.Event().wait()


async def quick() -> str:
    await anyio.lowlevel.checkpoint()
    return "done"


def test_a_command_past_its_bound_raises_timeout_error() -> None:
    async def scenario() -> None:
        deadlines = Deadlines(asyncio.get_running_loop(), 0.02)
        with pytest.raises(TimeoutError):
            await bounded(deadlines, forever)
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
        assert await bounded(deadlines, quick) == "done"  # the task goes on as usual

    asyncio.run(scenario())


def test_one_timer_serves_every_command_and_rearms_for_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        timers: list[float] = []
        call_at = loop.call_at

        def counting(when: float, callback: Any, *args: Any, **kwargs: Any) -> Any:
            timers.append(when)
            return call_at(when, callback, *args, **kwargs)

        monkeypatch.setattr(loop, "call_at", counting)
        roomy = Deadlines(loop, 60.0)
        for _ in range(200):  # commands that end in time: one timer, set by the first
            assert await bounded(roomy, quick) == "done"
        assert len(timers) == 1
        assert not roomy._in_flight

        # A slow command right after a quick one: the quick one's timer is still set,
        # fires before the slow one is due and sets itself again for it (or, on a
        # machine that stalled past both, expires it at once).
        deadlines = Deadlines(loop, 0.05)
        assert await bounded(deadlines, quick) == "done"
        with pytest.raises(TimeoutError):
            await bounded(deadlines, forever)

        results: list[str] = []  # concurrent commands: each one bounded on its own

        async def one(work: Callable[[], Awaitable[Any]]) -> None:
            try:
                results.append(await bounded(deadlines, work))
            except TimeoutError:
                results.append("timeout")

        async with anyio.create_task_group() as group:
            for work in (forever, quick, forever, quick):
                group.start_soon(one, work)
        assert sorted(results) == ["done", "done", "timeout", "timeout"]
        assert not deadlines._in_flight

    asyncio.run(scenario())


def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    async def scenario() -> None:
        deadlines = Deadlines(asyncio.get_running_loop(), 10.0)
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as group:
                group.start_soon(lambda: bounded(deadlines, forever))
                await anyio.lowlevel.checkpoint()
                scope.cancel()
        assert scope.cancelled_caught
        with anyio.move_on_after(0.01) as scope:  # an outer deadline shorter than ours
            await bounded(deadlines, forever)
        assert scope.cancelled_caught
        assert not deadlines._in_flight

    asyncio.run(scenario())


def test_a_cancellation_landing_with_the_bound_is_not_swallowed() -> None:
    """The bound expires and someone else cancels the task in the same iteration: the
    task must see its cancellation (as with ``asyncio.timeout``), not a timeout."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        deadlines = Deadlines(loop, 10.0)
        deadline = deadlines.enter()

        def both() -> None:
            deadline.at = loop.time()  # due now
            deadlines._fire()
            task.cancel()  # and another cancel request

        loop.call_soon(both)
        with pytest.raises(asyncio.CancelledError):
            try:
                await forever()
            except BaseException as exc:
                deadlines.leave(deadline, exc)
                raise
        assert deadline.expired
        assert task.uncancel() == 0  # the other request was still pending: ours is gone

    asyncio.run(scenario())

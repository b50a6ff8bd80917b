"""``llmguard.testing.ManualClock``: time that moves only when a test says so."""

from __future__ import annotations

import anyio
import pytest

import llmguard
from llmguard.testing import ManualClock


async def settle() -> None:
    """Let every runnable task run until it blocks again (a few scheduler passes)."""
    for _ in range(10):
        await anyio.lowlevel.checkpoint()


async def until_sleepers(clock: ManualClock, count: int) -> None:
    while clock.sleepers < count:
        await anyio.lowlevel.checkpoint()


def test_now_and_advance() -> None:
    clock = ManualClock()
    assert clock.now() == 0.0
    assert isinstance(clock.now(), float)
    clock.advance(5)
    assert clock.now() == 5.0
    clock.advance(0.25)
    assert clock.now() == 5.25
    clock.advance(0)
    assert clock.now() == 5.25


def test_start() -> None:
    clock = ManualClock(start=100)
    assert clock.now() == 100.0
    assert isinstance(clock.now(), float)
    clock.advance(5)
    assert clock.now() == 105.0


def test_negative_advance_raises_and_leaves_time_alone() -> None:
    clock = ManualClock(start=10)
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1)
    assert clock.now() == 10.0


def test_repr_and_defaults() -> None:
    clock = ManualClock(start=2)
    assert repr(clock) == "ManualClock(now=2.0, sleepers=0)"
    assert clock.autojump is False
    assert clock.sleepers == 0
    assert ManualClock(autojump=True).autojump is True


def test_is_a_clock() -> None:
    clock = ManualClock()
    assert isinstance(clock, llmguard.Clock)
    llmguard.Guard(llmguard.testing.FakeProvider(), model="m", clock=clock)


@pytest.mark.anyio
@pytest.mark.parametrize("seconds", [0, -3])
async def test_sleep_zero_or_negative_returns_at_once(seconds: float) -> None:
    clock = ManualClock(start=1)
    await clock.sleep(seconds)
    assert clock.now() == 1.0
    assert clock.sleepers == 0


@pytest.mark.anyio
async def test_sleep_zero_is_still_a_checkpoint() -> None:
    clock = ManualClock()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await clock.sleep(0)
        raise AssertionError("sleep(0) did not check for cancellation")
    assert scope.cancelled_caught


@pytest.mark.anyio
async def test_sleepers_wake_in_order_when_due_and_not_before() -> None:
    clock = ManualClock()
    woken: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woken.append((name, clock.now()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper, "three", 3)
        tg.start_soon(sleeper, "one", 1)
        tg.start_soon(sleeper, "two", 2)
        await until_sleepers(clock, 3)
        assert repr(clock) == "ManualClock(now=0.0, sleepers=3)"

        clock.advance(0.5)
        await settle()
        assert woken == []
        assert clock.sleepers == 3

        clock.advance(0.5)  # exactly due: wakes
        assert clock.sleepers == 2
        await settle()
        assert woken == [("one", 1.0)]

        clock.advance(0.75)
        await settle()
        assert woken == [("one", 1.0)]

        clock.advance(0.25)
        await settle()
        assert [name for name, _ in woken] == ["one", "two"]

        clock.advance(10)  # past due: wakes, and sees the time moved to
        assert clock.sleepers == 0
    assert woken[2] == ("three", 12.0)
    assert clock.sleepers == 0


@pytest.mark.anyio
async def test_one_advance_wakes_every_due_sleeper_at_once() -> None:
    clock = ManualClock()
    woken: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woken.append(name)

    async with anyio.create_task_group() as tg:
        for name, seconds in [("a", 1), ("b", 2), ("c", 3), ("late", 100)]:
            tg.start_soon(sleeper, name, seconds)
        await until_sleepers(clock, 4)
        clock.advance(3)
        assert clock.sleepers == 1
        await settle()
        assert sorted(woken) == ["a", "b", "c"]
        clock.advance(97)
    assert sorted(woken) == ["a", "b", "c", "late"]


@pytest.mark.anyio
async def test_sleepers_with_the_same_due_time_all_wake() -> None:
    clock = ManualClock()
    woken: list[int] = []

    async def sleeper(index: int) -> None:
        await clock.sleep(5)
        woken.append(index)

    async with anyio.create_task_group() as tg:
        for index in range(3):
            tg.start_soon(sleeper, index)
        await until_sleepers(clock, 3)
        clock.advance(5)
    assert sorted(woken) == [0, 1, 2]


@pytest.mark.anyio
async def test_a_sleep_counts_from_when_it_started() -> None:
    clock = ManualClock(start=50)
    clock.advance(10)
    done: list[float] = []

    async def sleeper() -> None:
        await clock.sleep(5)
        done.append(clock.now())

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper)
        await until_sleepers(clock, 1)
        clock.advance(4.5)
        await settle()
        assert done == []
        clock.advance(0.5)
    assert done == [65.0]


@pytest.mark.anyio
async def test_autojump_moves_time_without_waiting() -> None:
    clock = ManualClock(start=1, autojump=True)
    await clock.sleep(5)
    assert clock.now() == 6.0
    await clock.sleep(0.5)
    assert clock.now() == 6.5
    await clock.sleep(0)
    assert clock.now() == 6.5
    assert clock.sleepers == 0


@pytest.mark.anyio
async def test_autojump_wakes_sleepers_that_were_waiting() -> None:
    clock = ManualClock()
    woken: list[float] = []

    async def sleeper() -> None:
        await clock.sleep(2)
        woken.append(clock.now())

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper)
        await until_sleepers(clock, 1)
        clock.autojump = True
        await clock.sleep(5)  # jumps to 5, passing the sleeper's wake-up at 2
        assert clock.sleepers == 0
    assert woken == [5.0]
    assert clock.now() == 5.0


@pytest.mark.anyio
async def test_autojump_sleep_is_a_checkpoint() -> None:
    clock = ManualClock(autojump=True)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await clock.sleep(1)
        raise AssertionError("an autojump sleep did not check for cancellation")
    assert scope.cancelled_caught


@pytest.mark.anyio
async def test_a_sleeper_can_be_cancelled() -> None:
    clock = ManualClock()
    finished: list[bool] = []

    async def sleeper() -> None:
        await clock.sleep(10)
        finished.append(True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper)
        await until_sleepers(clock, 1)
        tg.cancel_scope.cancel()
    assert finished == []
    clock.advance(20)  # waking a cancelled sleeper's entry is harmless
    assert clock.sleepers == 0


@pytest.mark.anyio
async def test_a_cancelled_sleeper_is_no_longer_counted() -> None:
    clock = ManualClock()
    with anyio.move_on_after(0):
        await clock.sleep(10)
    assert clock.sleepers == 0

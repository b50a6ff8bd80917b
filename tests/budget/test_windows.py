"""Windows through the Budget layer, on every store, with the store's clock in hand:
fixed boundaries, sliding arithmetic, reset_at, calendar months, and a rollover
under 200 concurrent settles that loses nothing."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest

import llmguard
from llmguard import (
    Budget,
    BudgetExceeded,
    FunctionProvider,
    Guard,
    Limit,
    Pricing,
    Request,
    Response,
    Usage,
)

from .conftest import START, Harness

pytestmark = pytest.mark.anyio

ASK = Request.create(model="m", user="hello there", max_output_tokens=10)
WORST = 6 + 10  # 3 + 11/4 input tokens (heuristic) and 10 of output
EXACT = Usage(input_tokens=6, output_tokens=10)  # each call uses exactly its worst case


def guard_for(harness: Harness, *limits: Limit, provider: Any = None) -> tuple[Guard, Budget]:
    budget = Budget(
        *limits, store=harness.store, pricing=Pricing(database=False), input_tokens="heuristic"
    )
    fake = provider or llmguard.testing.FakeProvider(
        default=llmguard.testing.FakeReply.of_text("ok", usage=EXACT)
    )
    return Guard(fake, [budget], model="m", timeout=None), budget


def at(text: str, tz: str = "UTC") -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


async def test_a_fixed_window_resets_at_its_boundary(harness: Harness) -> None:
    guard, budget = guard_for(harness, Limit(tokens=2 * WORST, per="hour", name="h"))
    harness.clock.t = START + 3599  # 12:59:59
    await guard.complete(ASK)
    await guard.complete(ASK)
    with pytest.raises(BudgetExceeded) as refused:
        await guard.complete(ASK)
    assert refused.value.reset_at is not None
    assert refused.value.reset_at.timestamp() == START + 3600
    (status,) = await budget.status()
    assert (status.used, status.remaining) == (2 * WORST, 0)
    harness.clock.t = START + 3600  # 13:00:00, a new window
    await guard.complete(ASK)
    (status,) = await budget.status()
    assert (status.used, status.reserved, status.remaining) == (WORST, 0, WORST)
    assert status.reset_at is not None and status.reset_at.timestamp() == START + 7200


async def test_sliding_window_arithmetic(harness: Harness) -> None:
    guard, budget = guard_for(harness, Limit(tokens=3 * WORST + 2, per=60, sliding=True, name="s"))
    for offset in (0, 20, 40):
        harness.clock.t = START + offset
        await guard.complete(ASK)
    harness.clock.t = START + 50
    with pytest.raises(BudgetExceeded) as refused:
        await guard.complete(ASK)
    assert refused.value.used == 3 * WORST
    assert refused.value.reset_at is not None and refused.value.reset_at.timestamp() == START + 60
    harness.clock.t = START + 59.5
    (status,) = await budget.status()
    assert status.used == 3 * WORST
    harness.clock.t = START + 60  # the call at 0 slides out: 60 seconds have passed
    (status,) = await budget.status()
    assert status.used == 2 * WORST
    assert status.reset_at is not None and status.reset_at.timestamp() == START + 80
    await guard.complete(ASK)
    harness.clock.t = START + 200  # everything slid out
    (status,) = await budget.status()
    assert (status.used, status.remaining) == (0, 3 * WORST + 2)


@pytest.mark.parametrize(
    ("last_moment", "first_of_next"),
    [
        ("2026-01-31T23:59:59", "2026-02-01T00:00:00"),  # 31 days
        ("2026-02-28T23:59:59", "2026-03-01T00:00:00"),  # 28 days
        ("2028-02-29T23:59:59", "2028-03-01T00:00:00"),  # 29 days (a leap year)
        ("2026-04-30T23:59:59", "2026-05-01T00:00:00"),  # 30 days
        ("2026-12-31T23:59:59", "2027-01-01T00:00:00"),  # the year turns
    ],
)
async def test_month_windows_across_month_lengths(
    harness: Harness, last_moment: str, first_of_next: str
) -> None:
    tz = "America/New_York"
    guard, budget = guard_for(harness, Limit(tokens=10 * WORST, per="month", tz=tz, name="mo"))
    start_of_month = last_moment[:8] + "01T00:00:00"
    harness.clock.t = at(start_of_month, tz)
    await guard.complete(ASK)
    harness.clock.t = at(last_moment, tz)
    await guard.complete(ASK)
    (status,) = await budget.status()
    assert status.used == 2 * WORST  # the first and the last second of the month
    assert status.reset_at is not None and status.reset_at.timestamp() == at(first_of_next, tz)
    harness.clock.t = at(first_of_next, tz)
    (status,) = await budget.status()
    assert status.used == 0


class SettleRecorder:
    """A ledger that keeps every settle's answer: its window's running total and end."""

    def __init__(self, harness: Harness) -> None:
        self.inner = harness.store
        self.answers: list[tuple[float, int]] = []

    async def reserve(self, *args: Any, **kwargs: Any) -> Any:
        return await self.inner.reserve(*args, **kwargs)

    async def extend(self, *args: Any, **kwargs: Any) -> Any:
        return await self.inner.extend(*args, **kwargs)

    async def release(self, *args: Any, **kwargs: Any) -> Any:
        return await self.inner.release(*args, **kwargs)

    async def usage(self, *args: Any, **kwargs: Any) -> Any:
        return await self.inner.usage(*args, **kwargs)

    async def settle(self, *args: Any, **kwargs: Any) -> Any:
        result = await self.inner.settle(*args, **kwargs)
        self.answers.append((result.reset_at, result.used))
        return result


async def test_a_rollover_under_200_concurrent_settles_loses_nothing(harness: Harness) -> None:
    calls = 200
    go = anyio.Event()
    admitted = 0

    async def answer(request: Request) -> Response:
        nonlocal admitted
        admitted += 1
        if admitted == calls:
            harness.clock.jump_after(calls // 2, START + 3600.5)  # about half read the old hour
            go.set()
        await go.wait()  # all 200 settle at once
        return Response(text="ok", usage=EXACT)

    harness.clock.t = START + 3599.5  # half a second before the hour turns
    recorder = SettleRecorder(harness)
    budget = Budget(
        Limit(tokens=calls * WORST, per="hour", name="h", alerts=()),
        store=recorder,
        pricing=Pricing(database=False),
        input_tokens="heuristic",
    )
    guard = Guard(FunctionProvider(answer), [budget], model="m", timeout=None)
    async with anyio.create_task_group() as tg:
        for _ in range(calls):
            tg.start_soon(guard.complete, ASK)
    assert len(recorder.answers) == calls
    ends = {end for end, _ in recorder.answers}
    assert ends == {START + 3600, START + 7200}, "the hour turned while the settles ran"
    # Each answer is its window's running total: the largest is the window's total.
    old_hour = max(used for end, used in recorder.answers if end == START + 3600)
    new_hour = max(used for end, used in recorder.answers if end == START + 7200)
    assert old_hour + new_hour == calls * WORST  # nothing lost, nothing counted twice
    (status,) = await budget.status()
    assert (status.used, status.reserved) == (new_hour, 0)

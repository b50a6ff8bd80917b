"""``Bound``: cancel scopes cancelled ``seconds`` after entry (one loop timer per Bound on
asyncio, a timed ``CancelScope`` on trio), and ``effective_deadline()``.

On trio the clock is trio's ``MockClock`` (time passes when everything sleeps); on asyncio
the bounds are real and short. The tests assert which scopes were cancelled, never how
long anything took.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import threading

import anyio
import anyio.lowlevel
import pytest
import trio
from trio.testing import MockClock

from llmguard import _timeouts
from llmguard._timeouts import Bound, effective_deadline

SHORT = 0.05  # a bound the tests wait out (real seconds on asyncio)
LONG = 60.0  # a bound never reached

both = pytest.mark.parametrize(
    "anyio_backend",
    [
        pytest.param("asyncio", id="asyncio"),
        pytest.param(("trio", {"clock": MockClock(autojump_threshold=0)}), id="trio"),
    ],
)
asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])


def on_asyncio() -> bool:
    return anyio.get_current_task() is not None and _timeouts._running_asyncio_loop() is not None


@pytest.mark.anyio
@both
async def test_a_scope_outliving_its_bound_is_cancelled() -> None:
    bound = Bound(SHORT)
    with bound.scope() as scope:
        await anyio.sleep_forever()
    assert scope.cancelled_caught


@pytest.mark.anyio
@both
async def test_a_scope_done_in_time_is_not_cancelled() -> None:
    bound = Bound(LONG)
    with bound.scope() as scope:
        await anyio.lowlevel.checkpoint()
    assert not scope.cancel_called and not scope.cancelled_caught
    with bound.scope() as again:  # and again, the same Bound
        await anyio.lowlevel.checkpoint()
    assert not again.cancel_called


@pytest.mark.anyio
@both
async def test_the_scope_is_an_anyio_cancel_scope() -> None:
    with Bound(LONG).scope() as scope:
        assert isinstance(scope, anyio.CancelScope)
        assert not scope.shield
    with Bound(LONG, shield=True).scope() as shielded:
        assert shielded.shield


@pytest.mark.anyio
@both
async def test_concurrent_scopes_of_one_bound_are_cancelled_in_order_of_entry() -> None:
    bound = Bound(SHORT)
    entered: list[str] = []
    cancelled: list[str] = []
    finished: list[str] = []

    async def call(name: str, ready: anyio.Event) -> None:
        with bound.scope() as scope:
            entered.append(name)
            ready.set()
            if name == "quick":
                await anyio.lowlevel.checkpoint()
            else:
                await anyio.sleep_forever()
        (cancelled if scope.cancelled_caught else finished).append(name)

    async with anyio.create_task_group() as group:
        for name in ("a", "b", "quick", "c", "d"):
            ready = anyio.Event()
            group.start_soon(call, name, ready)
            await ready.wait()
            await anyio.sleep(SHORT / 20)  # the next one enters a little later
    assert entered == ["a", "b", "quick", "c", "d"]
    assert cancelled == ["a", "b", "c", "d"]
    assert finished == ["quick"]


@pytest.mark.anyio
@both
async def test_a_scope_left_early_is_forgotten() -> None:
    bound = Bound(SHORT)
    with bound.scope() as early:
        await anyio.lowlevel.checkpoint()
    # While the timer set for `early` comes due, an unrelated scope is not touched.
    with anyio.CancelScope() as unrelated:
        await anyio.sleep(SHORT * 3)
    assert not early.cancel_called
    assert not unrelated.cancel_called
    # Many scopes, left in time, by an error, or cancelled: the timer keeps none of them.
    for _ in range(1000):
        with bound.scope():
            await anyio.lowlevel.checkpoint()
    for _ in range(10):
        with pytest.raises(KeyError), bound.scope():
            raise KeyError("left by an error")
    with bound.scope() as late:
        await anyio.sleep_forever()
    assert late.cancelled_caught
    if on_asyncio():
        assert bound._timer is not None and bound._timer.open == {}
    else:
        assert bound._timer is None  # trio: plain timed scopes, no timer


@pytest.mark.anyio
@asyncio_only
async def test_the_timer_set_for_a_scope_left_early_rearms_for_the_next() -> None:
    bound = Bound(0.2)
    with bound.scope():
        pass
    timer = bound._timer
    assert timer is not None
    first = timer._handle  # set for the scope just left
    assert first is not None
    await anyio.sleep(0.1)
    with bound.scope() as second:
        while timer._handle is first:  # noqa: ASYNC110 - until the first timer came due
            await anyio.sleep(0.01)
        assert not second.cancel_called  # its own time is not up yet
        assert timer._handle is not None
        await anyio.sleep_forever()
    assert second.cancelled_caught
    assert timer.open == {} and timer._handle is None


@pytest.mark.anyio
@both
async def test_a_shielded_scope_ignores_outer_cancellation_but_not_its_bound() -> None:
    bound = Bound(SHORT, shield=True)
    reached = False
    with anyio.CancelScope() as outer:
        outer.cancel()
        with bound.scope() as inner:
            await anyio.lowlevel.checkpoint()  # not cancelled from outside
            reached = True
            await anyio.sleep_forever()  # cancelled by its own bound
        await anyio.lowlevel.checkpoint()  # the outer cancellation arrives here
        pytest.fail("the outer scope was cancelled")  # pragma: no cover
    assert reached
    assert inner.cancelled_caught
    assert outer.cancelled_caught


@pytest.mark.anyio
@both
async def test_nested_bounds_the_shorter_one_fires() -> None:
    with Bound(SHORT).scope() as outer:
        with Bound(LONG).scope() as inner:
            await anyio.sleep_forever()
        pytest.fail("the outer scope was cancelled")  # pragma: no cover
    assert outer.cancelled_caught and not inner.cancelled_caught
    after = False
    with Bound(LONG).scope() as outer:
        with Bound(SHORT).scope() as inner:
            await anyio.sleep_forever()
        after = True
        await anyio.lowlevel.checkpoint()
    assert inner.cancelled_caught and after
    assert not outer.cancel_called and not outer.cancelled_caught


@pytest.mark.anyio
@both
async def test_effective_deadline_counts_the_bound_and_is_restored() -> None:
    assert effective_deadline() == math.inf
    before = anyio.current_time()
    with Bound(10).scope():
        after = anyio.current_time()
        deadline = effective_deadline()
        assert before + 10 <= deadline <= after + 10
        with Bound(20).scope():  # longer: the outer one still binds
            assert effective_deadline() == deadline
        with Bound(5).scope():  # shorter: it binds, then the outer again
            inner = effective_deadline()
            assert inner <= anyio.current_time() + 5 and inner < deadline
        assert effective_deadline() == deadline
        with anyio.CancelScope(deadline=anyio.current_time() + 1) as timed:  # noqa: ASYNC100
            assert effective_deadline() == timed.deadline  # anyio's own deadlines count
        with Bound(30, shield=True).scope():  # shielded: the outer bound does not apply
            start = anyio.current_time()
            shielded = effective_deadline()
            assert after + 30 <= shielded <= start + 30
        assert effective_deadline() == deadline
    assert effective_deadline() == math.inf
    with Bound(30, shield=True).scope():
        shielded = effective_deadline()
        assert shielded <= anyio.current_time() + 30
    assert effective_deadline() == math.inf


@pytest.mark.anyio
@both
async def test_effective_deadline_of_concurrent_tasks_is_their_own() -> None:
    bound = Bound(10)
    seen: dict[str, tuple[float, float, float, float]] = {}

    async def task(name: str, wait: float) -> None:
        await anyio.sleep(wait)
        start = anyio.current_time()
        with bound.scope():
            entered = anyio.current_time()
            deadline = effective_deadline()
            await anyio.sleep(0.02)
            assert effective_deadline() == deadline
        seen[name] = (start, entered, deadline, effective_deadline())

    async with anyio.create_task_group() as group:
        group.start_soon(task, "a", 0)
        group.start_soon(task, "b", 0.01)
    assert sorted(seen) == ["a", "b"]
    for start, entered, deadline, after in seen.values():
        assert start + 10 <= deadline <= entered + 10  # its own entry, not the other's
        assert after == math.inf


@pytest.mark.anyio
@asyncio_only
async def test_the_running_loop_is_seen_only_in_a_task() -> None:
    loop = asyncio.get_running_loop()
    assert _timeouts._running_asyncio_loop() is loop
    outside: list[object] = []
    done = anyio.Event()

    def callback() -> None:  # a loop callback: no task
        outside.append(_timeouts._running_asyncio_loop())
        done.set()

    loop.call_soon(callback)
    await done.wait()
    assert outside == [None]


def test_no_loop_when_asyncio_is_not_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_timeouts, "_modules", {})
    assert _timeouts._running_asyncio_loop() is None


def test_no_loop_outside_any_event_loop() -> None:
    assert _timeouts._running_asyncio_loop() is None


# -- one Bound, several loops ------------------------------------------------------------


async def _round(bound: Bound, tasks: int = 3) -> list[tuple[bool, bool]]:
    """``tasks`` concurrent pairs: a scope left in time, then one outliving the bound."""
    results: list[tuple[bool, bool]] = []

    async def pair() -> None:
        with bound.scope() as quick:
            await anyio.lowlevel.checkpoint()
        with bound.scope() as slow:
            await anyio.sleep_forever()
        results.append((quick.cancelled_caught, slow.cancelled_caught))

    async with anyio.create_task_group() as group:
        for _ in range(tasks):
            group.start_soon(pair)
    return results


def test_one_bound_serves_one_loop_after_another() -> None:
    bound = Bound(SHORT)
    assert asyncio.run(_round(bound)) == [(False, True)] * 3
    first = bound._timer
    assert asyncio.run(_round(bound)) == [(False, True)] * 3
    assert bound._timer is not first and bound._timer is not None  # the new loop's
    assert bound._timer.open == {}


def test_one_bound_serves_loops_in_threads_at_once() -> None:
    bound = Bound(SHORT)
    rounds = 4
    start = threading.Barrier(3)
    results: dict[str, list[tuple[bool, bool]]] = {}
    errors: list[BaseException] = []

    async def many() -> list[tuple[bool, bool]]:
        out: list[tuple[bool, bool]] = []
        for _ in range(rounds):
            out += await _round(bound)
        return out

    def run(name: str) -> None:
        try:
            start.wait()
            if name == "trio":
                results[name] = trio.run(many)
            else:
                results[name] = asyncio.run(many())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(name,)) for name in ("one", "two", "trio")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert results == {name: [(False, True)] * 3 * rounds for name in ("one", "two", "trio")}


def test_import_llmguard_does_not_import_asyncio() -> None:
    code = "import llmguard, sys; assert 'asyncio' not in sys.modules, 'asyncio imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

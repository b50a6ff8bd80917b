"""Single flight in one process: concurrent identical misses make one upstream call."""

from __future__ import annotations

import anyio
import pytest

import llmguard
from llmguard import (
    BudgetExceeded,
    Cache,
    FunctionProvider,
    Guard,
    MemoryStore,
    Observe,
    RateLimited,
    Request,
    Response,
)
from llmguard.testing import FakeProvider, capture_records

pytestmark = pytest.mark.anyio


class Gated:
    """A provider whose calls wait until the test opens the gate; counts calls."""

    def __init__(self) -> None:
        self.gate = anyio.Event()
        self.calls: list[str | None] = []  # the caller's user, per call
        self.failures: list[BaseException] = []

    async def __call__(self, request: Request) -> Response:
        self.calls.append(llmguard.current_context().user)
        await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        return Response(text=f"answer #{len(self.calls)}", finish_reason="stop")


async def run_many(guard: Guard, n: int, results: list[object], users: bool = False) -> None:
    async def one(i: int) -> None:
        with llmguard.context(user=f"user-{i}" if users else None):
            try:
                results.append(await guard.complete(user="the same question"))
            except Exception as exc:
                results.append(exc)

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)


async def open_gate_when_all_wait(provider: Gated) -> None:
    await anyio.wait_all_tasks_blocked()
    provider.gate.set()


async def test_a_hundred_identical_requests_make_one_upstream_call() -> None:
    provider = Gated()
    guard = Guard(FunctionProvider(provider), [Observe(), Cache()], model="m")
    results: list[object] = []
    with capture_records() as records:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_many, guard, 100, results, True)
            tg.start_soon(open_gate_when_all_wait, provider)
    assert len(provider.calls) == 1
    (leader,) = [r for r in records if r.cache == "miss"]
    assert provider.calls == [leader.user]  # the leader's own context reached the provider
    assert {r.text for r in results if isinstance(r, Response)} == {"answer #1"}
    assert len(results) == 100
    assert sum(r.cached for r in results if isinstance(r, Response)) == 99
    assert sorted(r.cache or "" for r in records) == ["hit"] * 99 + ["miss"]
    assert sum(r.attempts for r in records) == 1


async def test_followers_share_the_leaders_error() -> None:
    provider = Gated()
    provider.failures.append(RateLimited(retry_after=3))
    guard = Guard(FunctionProvider(provider), [Observe(), Cache()], model="m")
    results: list[object] = []
    with capture_records() as records:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_many, guard, 100, results)
            tg.start_soon(open_gate_when_all_wait, provider)
    assert len(provider.calls) == 1
    assert len(results) == 100
    assert all(isinstance(r, RateLimited) and r.retry_after == 3 for r in results)
    assert {(r.cache, r.error) for r in records} == {("miss", "RateLimited")}
    assert sum(r.attempts for r in records) == 1
    # Errors are never stored: the next call goes upstream.
    provider.gate.set()
    assert (await guard.complete(user="the same question")).text == "answer #2"


async def test_a_cancelled_leader_does_not_strand_its_followers() -> None:
    provider = Gated()
    guard = Guard(FunctionProvider(provider), [Cache()], model="m")
    results: list[object] = []
    leader = anyio.CancelScope()

    async def leader_call() -> None:
        with leader:
            await guard.complete(user="the same question")

    async with anyio.create_task_group() as tg:
        tg.start_soon(leader_call)
        await anyio.wait_all_tasks_blocked()  # the leader waits upstream
        tg.start_soon(run_many, guard, 20, results)
        await anyio.wait_all_tasks_blocked()  # its followers wait for it
        leader.cancel()
        await anyio.wait_all_tasks_blocked()  # one of them leads now
        provider.gate.set()
    assert leader.cancelled_caught
    assert len(results) == 20
    assert {r.text for r in results if isinstance(r, Response)} == {"answer #2"}
    assert len(provider.calls) == 2


async def test_a_budget_refusal_of_the_leader_is_not_shared() -> None:
    provider = Gated()
    provider.failures.append(
        BudgetExceeded(scope="user:a", limit=1, used=1, remaining=0, unit="tokens", reset_at=None)
    )
    guard = Guard(FunctionProvider(provider), [Cache()], model="m")
    results: list[object] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_many, guard, 10, results, True)
        tg.start_soon(open_gate_when_all_wait, provider)
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    answered = [r for r in results if isinstance(r, Response)]
    assert len(refused) == 1 and len(answered) == 9
    assert len(provider.calls) == 2  # the refused leader, then one more for everyone
    assert {r.text for r in answered} == {"answer #2"}


async def test_without_single_flight_every_miss_goes_upstream() -> None:
    provider = Gated()
    guard = Guard(FunctionProvider(provider), [Cache(single_flight=False)], model="m")
    results: list[object] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_many, guard, 10, results)
        tg.start_soon(open_gate_when_all_wait, provider)
    assert len(provider.calls) == 10


async def test_the_store_lock_in_one_process() -> None:
    """With ``lock=True`` a caller that finds the store lock held waits for the value."""
    provider = Gated()
    store = MemoryStore()
    guard = Guard(FunctionProvider(provider), [Cache(store, lock=True, lock_poll=0.001)], model="m")
    other = Guard(FunctionProvider(provider), [Cache(store, lock=True, lock_poll=0.001)], model="m")
    results: list[object] = []

    async def through_other() -> None:
        results.append(await other.complete(user="the same question"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_many, guard, 5, results)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(through_other)  # another Cache layer: another "process"
        await anyio.sleep(0.01)
        provider.gate.set()
    assert len(provider.calls) == 1
    assert {r.text for r in results if isinstance(r, Response)} == {"answer #1"}
    assert len(results) == 6


async def test_a_waiter_gives_up_on_a_lock_after_two_lock_lives_and_calls_itself() -> None:
    from llmguard.testing import ManualClock

    store = MemoryStore()
    clock = ManualClock(autojump=True)  # the waits pass at once, in manual time
    fake = FakeProvider(default="mine")
    cache = Cache(store, lock=True, lock_ttl=1.0, lock_poll=0.1, clock=clock)
    guard = Guard(fake, [Observe(), cache], model="m")
    key = cache.key_for(guard.build_request(user="q"), provider="fake")
    assert key is not None
    assert await store.acquire_lock(key + ":lock", ttl=3600) is not None  # held elsewhere
    with capture_records() as records:
        assert (await guard.complete(user="q")).text == "mine"
    assert 2.0 <= clock.now() < 2.2 and len(fake.requests) == 1
    assert records[0].cache == "miss"
    assert (await guard.complete(user="q")).cached  # and it stored its answer


async def test_after_a_dead_holder_the_next_holder_answers_every_waiter() -> None:
    """Two "processes" wait on a lock whose holder died; the lock expires, one of them
    takes it and calls for almost a whole lock life: the other waits for that answer
    instead of giving up when the dead holder's lock life ends (one call, not two)."""
    from llmguard.testing import ManualClock

    clock = ManualClock()
    store = MemoryStore(clock=clock.now)
    calls: list[float] = []

    async def upstream(request: Request) -> Response:
        calls.append(clock.now())
        await clock.sleep(0.95)  # inside the new holder's lock life (1.0)
        return Response(text=f"answer #{len(calls)}", finish_reason="stop")

    def process() -> tuple[Guard, Cache]:  # a Cache of its own: no shared single flight
        cache = Cache(store, lock=True, lock_ttl=1.0, lock_poll=0.05, clock=clock)
        return Guard(FunctionProvider(upstream), [cache], model="m", timeout=None), cache

    (first, cache), (second, _) = process(), process()
    key = cache.key_for(first.build_request(user="q"), provider="upstream")
    assert key is not None
    assert await store.acquire_lock(key + ":lock", ttl=1.0) is not None  # its holder dies
    answers: list[str] = []

    async def ask(guard: Guard, start: float) -> None:
        await clock.sleep(start)
        answers.append((await guard.complete(user="q")).text)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ask, first, 0.9)
        tg.start_soon(ask, second, 0.9)
        for _ in range(100):  # manual time, one lock poll (50 ms) a step, up to 5 s
            for _ in range(10):  # the woken tasks run on (asyncio's wait below polls slowly)
                await anyio.lowlevel.checkpoint()
            await anyio.wait_all_tasks_blocked()
            if len(answers) == 2:
                break
            clock.advance(0.05)
    assert answers == ["answer #1", "answer #1"]
    assert len(calls) == 1 and 1.0 <= calls[0] < 1.1

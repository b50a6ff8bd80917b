"""``CircuitBreaker`` and ``llmguard.circuit_breaker``: opening, failing fast, probing,
closing, and one circuit shared by several Guards through a store."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import anyio
import pytest

import llmguard
from _redis_ping import require_redis
from llmguard import (
    CircuitBreaker,
    CircuitOpen,
    ConfigurationError,
    Guard,
    MemoryStore,
    ProviderError,
    Request,
    Response,
    SharedState,
    StoreUnavailable,
    TextDelta,
    Versioned,
)
from llmguard.testing import FakeProvider, FakeReply, ManualClock

from ._helpers import settle

pytestmark = pytest.mark.anyio

OK = "fine"
DOWN = FakeReply.server_error(503)


class Changes:
    """Collects ``on_change`` calls."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def __call__(self, key: str, old: str, new: str) -> None:
        self.seen.append((key, old, new))

    def count(self, old: str, new: str) -> int:
        return sum(1 for _, o, n in self.seen if (o, n) == (old, new))


def breaker_guard(fake: FakeProvider, breaker: CircuitBreaker) -> Guard:
    return Guard(fake, [breaker], model="m", timeout=None)


async def outcome(guard: Guard) -> str:
    """ "ok", "failed" or "open" for one call."""
    try:
        await guard.complete(user="hi")
    except CircuitOpen:
        return "open"
    except ProviderError:
        return "failed"
    return "ok"


# -- opening -----------------------------------------------------------------------


async def test_failure_rate_opens_at_exactly_three_of_five() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(failure_rate=0.5, window=5, reset_after=30, clock=clock)
    fake = FakeProvider([OK, OK, DOWN, DOWN])
    guard = breaker_guard(fake, breaker)
    assert [await outcome(guard) for _ in range(4)] == ["ok", "ok", "failed", "failed"]
    assert await breaker.state("fake/m") == "closed"  # 2 of 4: fewer calls than the window
    fake.add(DOWN)
    assert await outcome(guard) == "failed"  # 3 of 5: opens with this call
    assert await breaker.state("fake/m") == "open"
    assert await outcome(guard) == "open"
    assert len(fake.requests) == 5


async def test_two_of_five_stays_closed_and_the_window_slides() -> None:
    breaker = CircuitBreaker(failure_rate=0.5, window=5, clock=ManualClock())
    fake = FakeProvider([DOWN, DOWN, OK, OK, OK, DOWN, DOWN])
    guard = breaker_guard(fake, breaker)
    for _ in range(7):  # F F S S S | F F: the last five hold two failures
        await outcome(guard)
    assert await breaker.state("fake/m") == "closed"
    fake.add(DOWN)  # S S F F F: three of the last five
    assert await outcome(guard) == "failed"
    assert await breaker.state("fake/m") == "open"


async def test_min_calls_lets_a_partial_window_decide() -> None:
    breaker = CircuitBreaker(failure_rate=0.5, window=10, min_calls=4, clock=ManualClock())
    guard = breaker_guard(FakeProvider([OK, DOWN, OK, DOWN]), breaker)
    for _ in range(4):
        await outcome(guard)
    assert await breaker.state("fake/m") == "open"  # 2 of 4 >= 50 %


async def test_consecutive_failures_open_and_a_success_resets_the_count() -> None:
    breaker = CircuitBreaker(consecutive_failures=3, clock=ManualClock())
    fake = FakeProvider([DOWN, DOWN, OK, DOWN, DOWN])
    guard = breaker_guard(fake, breaker)
    for _ in range(5):
        await outcome(guard)
    assert await breaker.state("fake/m") == "closed"
    fake.add(DOWN)
    await outcome(guard)
    assert await breaker.state("fake/m") == "open"


async def test_the_default_is_five_consecutive_failures() -> None:
    breaker = CircuitBreaker(clock=ManualClock())
    guard = breaker_guard(FakeProvider(default=DOWN), breaker)
    assert [await outcome(guard) for _ in range(6)] == ["failed"] * 5 + ["open"]


async def test_errors_that_are_not_failures_count_neither_way() -> None:
    breaker = CircuitBreaker(consecutive_failures=2, clock=ManualClock())
    fake = FakeProvider([DOWN, FakeReply.server_error(400), DOWN])
    guard = breaker_guard(fake, breaker)
    for _ in range(3):
        await outcome(guard)
    assert await breaker.state("fake/m") == "open"  # the 400 did not reset the count


# -- open, half-open, closed on the manual clock ------------------------------------


async def test_open_until_the_wait_ends_then_half_open() -> None:
    clock = ManualClock(start=1000)
    changes = Changes()
    breaker = CircuitBreaker(consecutive_failures=1, reset_after=30, clock=clock, on_change=changes)
    fake = FakeProvider([DOWN])
    guard = breaker_guard(fake, breaker)
    assert await outcome(guard) == "failed"
    clock.advance(29.999)
    assert await breaker.state("fake/m") == "open"
    with pytest.raises(CircuitOpen) as info:
        await guard.complete(user="hi")
    assert info.value.retry_at == 1030 and info.value.name == "fake/m"
    assert len(fake.requests) == 1  # nothing was sent while open
    clock.advance(0.001)
    assert await breaker.state("fake/m") == "half_open"
    fake.add(OK)
    assert await outcome(guard) == "ok"  # the probe
    assert await breaker.state("fake/m") == "closed"
    assert [(o, n) for _, o, n in changes.seen] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


async def test_a_failed_probe_opens_it_for_another_wait() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(consecutive_failures=1, reset_after=10, clock=clock)
    fake = FakeProvider([DOWN, DOWN])
    guard = breaker_guard(fake, breaker)
    await outcome(guard)
    clock.advance(10)
    assert await outcome(guard) == "failed"  # the probe fails
    assert await breaker.state("fake/m") == "open"
    clock.advance(9.5)
    assert await outcome(guard) == "open"
    clock.advance(0.5)
    assert await breaker.state("fake/m") == "half_open"


class Gate:
    """A provider whose calls wait until the test opens the gate."""

    def __init__(self, name: str = "gate") -> None:
        self.entered = 0
        self.open = anyio.Event()
        self.name = name

    async def complete(self, request: Request) -> Response:
        self.entered += 1
        await self.open.wait()
        return Response(text="through the gate")

    def stream(self, request: Request) -> Any:
        raise NotImplementedError


async def race(guard: Guard, tasks: int) -> list[str]:
    results: list[str] = []

    async def one() -> None:
        results.append(await outcome(guard))

    async with anyio.create_task_group() as tg:
        for _ in range(tasks):
            tg.start_soon(one)
        await settle()
        gate = guard.provider
        assert isinstance(gate, Gate)
        gate.open.set()
    return results


async def open_breaker(breaker: CircuitBreaker, clock: ManualClock, reset_after: float) -> None:
    failing = Guard(FakeProvider([DOWN], name="gate"), [breaker], model="m", timeout=None)
    await outcome(failing)  # opens the circuit "gate/m", the one the Gate's calls use
    clock.advance(reset_after)


@pytest.mark.parametrize("probes", [1, 2, 3])
async def test_exactly_the_configured_number_of_probes_go_through(probes: int) -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(consecutive_failures=1, reset_after=5, probes=probes, clock=clock)
    await open_breaker(breaker, clock, 5)
    gate = Gate()
    results = await race(Guard(gate, [breaker], model="m", timeout=None), 5)
    assert gate.entered == probes
    assert sorted(results) == sorted(["ok"] * probes + ["open"] * (5 - probes))
    assert await breaker.state("gate/m") == "closed"  # every probe succeeded


async def test_five_racing_tasks_make_exactly_one_half_open_transition() -> None:
    clock = ManualClock()
    changes = Changes()
    breaker = CircuitBreaker(consecutive_failures=1, reset_after=5, clock=clock, on_change=changes)
    await open_breaker(breaker, clock, 5)
    await race(Guard(Gate(), [breaker], model="m", timeout=None), 5)
    assert changes.count("open", "half_open") == 1
    assert changes.count("half_open", "closed") == 1


async def test_a_cancelled_probe_frees_its_slot() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(consecutive_failures=1, reset_after=5, clock=clock)
    await open_breaker(breaker, clock, 5)
    gate = Gate()
    guard = Guard(gate, [breaker], model="m", timeout=None)
    with anyio.move_on_after(0.05):
        await guard.complete(user="probe that never finishes")
    assert gate.entered == 1
    gate.open.set()
    assert await outcome(guard) == "ok"  # a new probe was let through
    assert await breaker.state("gate/m") == "closed"


async def test_probes_that_never_report_are_replaced_after_a_wait() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(consecutive_failures=1, reset_after=5, clock=clock)
    await open_breaker(breaker, clock, 5)
    gate = Gate()
    guard = Guard(gate, [breaker], model="m", timeout=None)
    async with anyio.create_task_group() as tg:
        tg.start_soon(outcome, guard)  # the probe hangs (a worker that died, say)
        await settle()
        assert await outcome(guard) == "open"
        clock.advance(5)
        gate.open.set()
        assert await outcome(guard) == "ok"  # let through in place of the silent probe


# -- keys ------------------------------------------------------------------------------


async def test_one_circuit_per_model_or_per_provider() -> None:
    clock = ManualClock()
    per_model = CircuitBreaker(consecutive_failures=1, clock=clock)
    fake = FakeProvider([DOWN, OK])
    guard = breaker_guard(fake, per_model)
    await outcome(guard)
    assert await outcome(guard) == "open"
    assert (await guard.complete(user="hi", model="other")).text == OK
    per_provider = CircuitBreaker(consecutive_failures=1, per="provider", clock=clock)
    guard = breaker_guard(FakeProvider([DOWN]), per_provider)
    await outcome(guard)
    with pytest.raises(CircuitOpen, match="'fake'"):
        await guard.complete(user="hi", model="other")


# -- shared through a store -------------------------------------------------------------


async def shared_breakers_behave(store: SharedState, clock: ManualClock) -> None:
    name = uuid.uuid4().hex
    changes = Changes()

    def breaker() -> CircuitBreaker:
        return CircuitBreaker(
            consecutive_failures=2,
            reset_after=30,
            store=store,
            name=name,
            clock=clock,
            on_change=changes,
        )

    worker_a = Guard(FakeProvider(default=DOWN), [breaker()], model="m", timeout=None)
    worker_b = Guard(FakeProvider(default=OK), [breaker()], model="m", timeout=None)
    assert await outcome(worker_a) == "failed"
    assert await outcome(worker_b) == "ok"  # a success in between resets the count
    assert await outcome(worker_a) == "failed"
    assert await outcome(worker_a) == "failed"  # two in a row: open for everyone
    assert await outcome(worker_b) == "open"
    assert await worker_b.layers[0].state("fake/m") == "open"  # type: ignore[attr-defined]
    clock.advance(30)
    gate = Gate(name="fake")  # the same circuit as the workers above
    racing = [Guard(gate, [breaker()], model="m", timeout=None) for _ in range(5)]
    results: list[str] = []

    async def one(guard: Guard) -> None:
        results.append(await outcome(guard))

    async with anyio.create_task_group() as tg:
        for guard in racing:
            tg.start_soon(one, guard)
        for _ in range(200):  # a networked store needs real round trips
            if len(results) == 4 and gate.entered == 1:
                break
            await anyio.sleep(0.005)
        gate.open.set()
    assert gate.entered == 1 and sorted(results) == ["ok", "open", "open", "open", "open"]
    assert changes.count("open", "half_open") == 1
    assert changes.count("half_open", "closed") == 1
    assert await worker_a.layers[0].state("fake/m") == "closed"  # type: ignore[attr-defined]


async def test_two_guards_share_one_circuit_through_a_memory_store() -> None:
    clock = ManualClock(start=1_700_000_000)
    await shared_breakers_behave(MemoryStore(clock=clock.now), clock)


@pytest.mark.redis
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_two_guards_share_one_circuit_through_redis() -> None:
    from llmguard import RedisStore

    url = require_redis()
    clock = ManualClock(start=1_700_000_000)
    prefix = f"llmguard-test:{uuid.uuid4().hex}:"
    async with RedisStore.from_url(url, prefix=prefix, timeout=5.0) as store:
        await shared_breakers_behave(store, clock)


class BrokenStore:
    """A ``SharedState`` that is down."""

    async def read(self, key: str) -> Versioned | None:
        raise StoreUnavailable("broken", "down for the test")

    async def compare_and_set(
        self, key: str, version: int, value: bytes, *, ttl: float | None
    ) -> bool:
        raise StoreUnavailable("broken", "down for the test")

    async def increment(self, key: str, amount: int, *, ttl: float | None) -> int:
        raise StoreUnavailable("broken", "down for the test")


async def test_a_store_outage_falls_back_to_this_process_or_refuses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    lenient = CircuitBreaker(consecutive_failures=1, store=BrokenStore(), clock=clock)
    guard = breaker_guard(FakeProvider([DOWN]), lenient)
    with caplog.at_level(logging.WARNING, logger="llmguard.breaker"):
        assert await outcome(guard) == "failed"
        assert await outcome(guard) == "open"  # decided on the local circuit
    assert any("store unavailable" in r.message for r in caplog.records)
    strict = CircuitBreaker(store=BrokenStore(), on_store_error="closed", clock=clock)
    with pytest.raises(StoreUnavailable):
        await breaker_guard(FakeProvider([OK]), strict).complete(user="hi")


# -- streams, records, the decorator ---------------------------------------------------


async def test_streams_are_refused_on_entering_and_counted_on_leaving() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(consecutive_failures=2, reset_after=10, clock=clock)
    fake = FakeProvider([DOWN, FakeReply.cut("abcdefgh", after=1)])
    guard = breaker_guard(fake, breaker)
    for _ in range(2):
        with pytest.raises(ProviderError):
            async with guard.stream(user="hi") as events:
                async for _ in events:
                    pass
    with pytest.raises(CircuitOpen):
        async with guard.stream(user="hi"):
            raise AssertionError("entered an open circuit")
    clock.advance(10)
    fake.add("whole")
    async with guard.stream(user="hi") as events:
        text = "".join([e.text async for e in events if isinstance(e, TextDelta)])
    assert text == "whole"
    assert await breaker.state("fake/m") == "closed"


async def test_transitions_are_noted_in_the_call_state_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    notes: list[list[str]] = []

    def keep(
        state: llmguard.CallState, response: Response | None, error: BaseException | None
    ) -> None:
        notes.append(list(state.extra.get("circuit", [])))

    class Keep(llmguard.BaseLayer):
        async def complete(self, request: Request, call_next: llmguard.Handler) -> Response:
            state = llmguard.current_call()
            assert state is not None
            state.on_finish(keep)
            return await call_next(request)

    breaker = CircuitBreaker(consecutive_failures=1, clock=ManualClock())
    guard = Guard(FakeProvider([DOWN]), [Keep(), breaker], model="m", timeout=None)
    with caplog.at_level(logging.INFO, logger="llmguard.breaker"):
        await outcome(guard)
        await outcome(guard)
    assert notes == [["fake/m: closed -> open"], ["fake/m: open, failed fast"]]
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


async def test_the_decorator_guards_any_async_function() -> None:
    clock = ManualClock()
    calls: list[str] = []

    @llmguard.circuit_breaker(consecutive_failures=2, reset_after=5, clock=clock)
    async def embed(text: str) -> list[float]:
        calls.append(text)
        raise TimeoutError("vector service is slow")

    for _ in range(2):
        with pytest.raises(TimeoutError):
            await embed("a")
    with pytest.raises(CircuitOpen, match="embed"):
        await embed("b")
    assert calls == ["a", "a"]


def test_configuration_errors() -> None:
    bad: list[dict[str, Any]] = [
        {"consecutive_failures": 0},
        {"failure_rate": 0},
        {"failure_rate": 1.5},
        {"window": 0},
        {"failure_rate": 0.5, "window": 5, "min_calls": 6},
        {"reset_after": 0},
        {"probes": 0},
        {"per": "tenant"},
        {"on_store_error": "maybe"},
        {"store": object()},
    ]
    for options in bad:
        with pytest.raises(ConfigurationError):
            CircuitBreaker(**options)
    assert "consecutive_failures=5" in repr(CircuitBreaker())


def test_a_damaged_stored_value_reads_as_closed() -> None:
    from llmguard._layers._circuit import Circuit

    assert Circuit.decode(b"not json") == Circuit()
    assert Circuit.decode(b'["weird",0,0,0,0,0,0]') == Circuit()
    circuit = Circuit("open", 0, 0, 0, 12.5, 0, 0)
    assert Circuit.decode(circuit.encode()) == circuit


async def test_the_decorator_counts_successes_and_recovers() -> None:
    clock = ManualClock()
    outcomes = [TimeoutError(), None, TimeoutError(), TimeoutError(), None]

    @llmguard.circuit_breaker(consecutive_failures=2, reset_after=5, clock=clock, name="vectors")
    async def embed(text: str) -> list[float]:
        error = outcomes.pop(0)
        if error is not None:
            raise error
        return [1.0]

    with pytest.raises(TimeoutError):
        await embed("a")
    assert await embed("b") == [1.0]  # resets the count
    for _ in range(2):
        with pytest.raises(TimeoutError):
            await embed("c")
    with pytest.raises(CircuitOpen, match="vectors"):
        await embed("d")
    clock.advance(5)
    assert await embed("e") == [1.0]  # the probe
    assert outcomes == []


async def test_a_failing_on_change_callback_is_logged_and_the_call_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(key: str, old: str, new: str) -> None:
        raise RuntimeError("a bug in the callback")

    breaker = CircuitBreaker(consecutive_failures=1, clock=ManualClock(), on_change=broken)
    with caplog.at_level(logging.ERROR, logger="llmguard.breaker"):
        assert await outcome(breaker_guard(FakeProvider([DOWN]), breaker)) == "failed"
    assert "on_change callback raised" in caplog.text


class Contended:
    """A ``SharedState`` where another worker always wins the compare-and-set."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.cas_calls = 0

    async def read(self, key: str) -> Versioned | None:
        return await self.inner.read(key)

    async def compare_and_set(
        self, key: str, version: int, value: bytes, *, ttl: float | None
    ) -> bool:
        self.cas_calls += 1
        return False

    async def increment(self, key: str, amount: int, *, ttl: float | None) -> int:
        return await self.inner.increment(key, amount, ttl=ttl)


async def test_endless_contention_counts_as_a_store_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Contended()
    breaker = CircuitBreaker(consecutive_failures=1, store=store, clock=ManualClock())
    guard = breaker_guard(FakeProvider([DOWN, DOWN]), breaker)
    with caplog.at_level(logging.WARNING, logger="llmguard.breaker"):
        assert await outcome(guard) == "failed"  # its failure could not be written
    assert "outcome of fake/m is lost" in caplog.text
    assert store.cas_calls == 64  # bounded, then given up
    await store.inner.compare_and_set(
        "llmguard:circuit:default:fake/m", 0, b'["open",0,0,0,-1000.0,0,0]', ttl=None
    )
    with caplog.at_level(logging.WARNING, logger="llmguard.breaker"):
        assert await outcome(guard) == "failed"  # admission could not be written either:
    assert "deciding on the local circuit" in caplog.text  # decided locally (closed)
    strict = CircuitBreaker(store=store, on_store_error="closed", clock=ManualClock(start=99))
    with pytest.raises(StoreUnavailable, match="contention"):
        await breaker_guard(FakeProvider(["never"]), strict).complete(user="hi")


async def test_a_store_backed_breaker_reads_the_wall_clock_by_default() -> None:
    import time

    store = MemoryStore()
    breaker = CircuitBreaker(consecutive_failures=1, reset_after=60, store=store)
    with pytest.raises(ProviderError):
        await breaker_guard(FakeProvider([DOWN]), breaker).complete(user="hi")
    with pytest.raises(CircuitOpen) as info:
        await breaker_guard(FakeProvider(["never"]), breaker).complete(user="hi")
    assert info.value.retry_at is not None
    assert time.time() + 59 < info.value.retry_at <= time.time() + 60

"""The batched ledger commands (``reserve_many``, ``settle_many``) a Budget with several
limits sends to a store that has them, against the per-limit commands it sends otherwise.

Every store (MemoryStore, SQLiteStore, RedisStore): the same calls through a budget with a
tokens-per-user limit and a dollars-per-day limit leave the same figures whether the
budget batches (the store itself; a wrapper offering the batched commands) or loops over
the limits (a wrapper offering only the single commands).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import anyio
import pytest

import llmguard
from llmguard import (
    Budget,
    BudgetExceeded,
    FunctionProvider,
    Guard,
    LedgerResult,
    Limit,
    MemoryStore,
    Price,
    Pricing,
    Request,
    Response,
    StoreUnavailable,
    Usage,
    Window,
)
from llmguard._budget_limits import ledger_key
from llmguard._stores._roles import BatchLedger, InstantLedger, LedgerEntry

from .conftest import Harness

pytestmark = pytest.mark.anyio

HOUR = Window.fixed(3600)
DAY = Window.fixed(86400)
ASK = Request.create(model="m", user="hello there", max_output_tokens=100)
ASK_WORST = 6 + 100  # heuristic input tokens + max_output_tokens
USAGE = Usage(input_tokens=6, output_tokens=20)
PRICING = Pricing({"m": Price(input="1000", output="2000")})  # micro-dollars a token
WORST_MICROS = 6 * 1000 + 100 * 2000
COST_MICROS = 6 * 1000 + 20 * 2000


class SingleCommands:
    """A store seen through ``BudgetLedger``'s single-key commands only: budgets loop.

    Commands named in ``down`` raise ``StoreUnavailable``; those in ``hang_after`` are
    done, then never answer (``hung`` is set): a call cut while the store works.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.down: set[str] = set()
        self.hang_after: set[str] = set()
        self.hung = anyio.Event()

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self.calls[name] += 1
        if name in self.down:
            raise StoreUnavailable("SingleCommands", f"{name} switched off by the test")
        result = await getattr(self.inner, name)(*args, **kwargs)
        if name in self.hang_after:
            self.hung.set()
            await anyio.sleep_forever()
        return result

    async def reserve(
        self, key: str, reservation_id: str, amount: int, *, limit: int, window: Window, hold: float
    ) -> LedgerResult:
        return await self._call(  # type: ignore[no-any-return]
            "reserve", key, reservation_id, amount, limit=limit, window=window, hold=hold
        )

    async def extend(
        self, key: str, reservation_id: str, amount: int, *, limit: int, window: Window, hold: float
    ) -> LedgerResult:
        return await self._call(  # type: ignore[no-any-return]
            "extend", key, reservation_id, amount, limit=limit, window=window, hold=hold
        )

    async def settle(
        self, key: str, reservation_id: str, amount: int, *, window: Window
    ) -> LedgerResult:
        return await self._call("settle", key, reservation_id, amount, window=window)  # type: ignore[no-any-return]

    async def release(self, key: str, reservation_id: str, *, window: Window) -> LedgerResult:
        return await self._call("release", key, reservation_id, window=window)  # type: ignore[no-any-return]

    async def usage(self, key: str, *, window: Window, limit: int | None = None) -> LedgerResult:
        return await self.inner.usage(key, window=window, limit=limit)  # type: ignore[no-any-return]


class BatchedCommands(SingleCommands):
    """The same, offering the batched commands too (not the in-memory plain calls)."""

    async def reserve_many(
        self, reservation_id: str, entries: Sequence[LedgerEntry], *, hold: float
    ) -> list[LedgerResult]:
        return await self._call("reserve_many", reservation_id, entries, hold=hold)  # type: ignore[no-any-return]

    async def settle_many(
        self, reservation_id: str, entries: Sequence[LedgerEntry]
    ) -> list[LedgerResult]:
        return await self._call("settle_many", reservation_id, entries)  # type: ignore[no-any-return]


def modes(store: Any) -> dict[str, Any]:
    """How a budget may drive ``store``: as it is, batched through a wrapper (when the
    store batches), and one limit at a time."""
    found: dict[str, Any] = {"direct": store, "single": SingleCommands(store)}
    if isinstance(store, BatchLedger):
        found["batched"] = BatchedCommands(store)
    return found


def make_budget(store: Any, prefix: str, *, tokens: int, usd_micros: int, **options: Any) -> Budget:
    return Budget(
        Limit(tokens=tokens, per="hour", scope="user", name=f"{prefix}-tokens"),
        Limit(usd=Decimal(usd_micros) / 1_000_000, per="day", name=f"{prefix}-usd"),
        store=store,
        pricing=PRICING,
        **options,
    )


def check_path(budget: Budget, mode: str, store: Any) -> None:
    """The budget took the path the mode stands for."""
    engine = budget._engine
    if mode == "single" or (mode == "direct" and not isinstance(store, BatchLedger)):
        assert engine.batch is None and engine.instant is None
    elif mode == "batched":
        assert engine.batch is store and engine.instant is None
    else:
        assert engine.batch is store
        assert (engine.instant is store) == isinstance(store, InstantLedger)


async def figures(store: Any, prefix: str, users: Sequence[str]) -> dict[str, tuple[int, int]]:
    """(used, reserved) of every user's tokens line and of the dollars line."""
    out: dict[str, tuple[int, int]] = {}
    for user in users:
        result = await store.usage(
            ledger_key(f"{prefix}-tokens", "tokens", f"user={user}"), window=HOUR
        )
        out[user] = (result.used, result.reserved)
    result = await store.usage(ledger_key(f"{prefix}-usd", "usd_micros", "global"), window=DAY)
    out["usd"] = (result.used, result.reserved)
    return out


# -- a sequence of calls, each way ---------------------------------------------------------

SEQUENCE = [  # (user, what the provider does if the call reaches it)
    ("alice", "ok"),
    ("bob", "ok"),
    ("alice", "error"),  # released
    ("alice", "ok"),
    ("carol", "ok"),  # refused by the second limit (dollars): nothing of carol's stays held
    ("alice", "ok"),  # refused by the first limit (alice's tokens)
    ("bob", "ok"),  # refused by the second limit
]
USERS = ("alice", "bob", "carol")
EXPECTED_OUTCOMES: list[object] = [
    COST_MICROS,
    COST_MICROS,
    "ProviderError",
    COST_MICROS,
    ("usd:global", "usd_micros", 300_000, 3 * COST_MICROS, 300_000 - 3 * COST_MICROS),
    ("tokens:user=alice", "tokens", ASK_WORST + 40, 2 * 26, ASK_WORST + 40 - 2 * 26),
    ("usd:global", "usd_micros", 300_000, 3 * COST_MICROS, 300_000 - 3 * COST_MICROS),
]
EXPECTED_FIGURES = {
    "alice": (2 * 26, 0),
    "bob": (26, 0),
    "carol": (0, 0),
    "usd": (3 * COST_MICROS, 0),
}


async def run_sequence(store: Any, prefix: str) -> tuple[list[object], list[object]]:
    """The calls of ``SEQUENCE``; each one's outcome, and the figures after each call."""
    budget = make_budget(store, prefix, tokens=ASK_WORST + 40, usd_micros=300_000)
    holds: list[dict[str, tuple[int, int]]] = []

    async def answer(request: Request) -> Response:
        holds.append(await figures(store, prefix, USERS))  # what is held while it runs
        if action == "error":  # the call being made
            raise llmguard.ProviderError("the provider failed", status_code=500)
        return Response(text="Hi!", usage=USAGE, model="m")

    guard = Guard(FunctionProvider(answer), [budget], model="m")
    outcomes: list[object] = []
    after: list[object] = []
    for user, what in SEQUENCE:
        action = what
        with llmguard.context(user=user):
            try:
                response = await guard.complete(ASK)
            except BudgetExceeded as exc:
                kind = exc.scope.split("-", 1)[1]  # without the mode's prefix
                outcomes.append((kind, exc.unit, exc.limit, exc.used, exc.remaining))
            except llmguard.ProviderError as exc:
                outcomes.append(type(exc).__name__)
            else:
                outcomes.append(response.cost_micros)
        after.append(await figures(store, prefix, USERS))
    assert len(holds) == 4
    for held, (user, _) in zip(holds, SEQUENCE[:4], strict=True):  # the calls let through
        assert held[user][1] == ASK_WORST and held["usd"][1] == WORST_MICROS, held
    return outcomes, after


async def test_a_sequence_of_calls_leaves_the_same_figures_every_way(harness: Harness) -> None:
    results: dict[str, tuple[list[object], list[object]]] = {}
    for mode, store in modes(harness.store).items():
        results[mode] = await run_sequence(store, mode)
        check_path(make_budget(store, mode, tokens=1, usd_micros=1), mode, store)
        if mode == "batched":  # one command per phase, whatever the number of limits
            assert store.calls["reserve_many"] == len(SEQUENCE)
            assert store.calls["settle_many"] == 4  # three settled, one released
            assert store.calls["reserve"] == store.calls["settle"] == store.calls["release"] == 0
        if mode == "single":
            assert store.calls["reserve"] > len(SEQUENCE) and store.calls["settle"] == 6
    outcomes, after = results.pop("single")  # what the per-limit commands give
    assert outcomes == EXPECTED_OUTCOMES
    assert after[-1] == EXPECTED_FIGURES
    assert after[4] == {  # carol refused by dollars: her tokens line holds nothing
        "alice": (2 * 26, 0),
        "bob": (26, 0),
        "carol": (0, 0),
        "usd": (3 * COST_MICROS, 0),
    }
    assert after[2] == {
        "alice": (26, 0),
        "bob": (26, 0),
        "carol": (0, 0),
        "usd": (2 * COST_MICROS, 0),
    }
    for mode, (other_outcomes, other_after) in results.items():
        assert other_outcomes == outcomes, mode
        assert other_after == after, mode
    assert set(results) == {"direct", "batched"}  # every store batches


async def test_a_cancelled_call_releases_every_line(harness: Harness) -> None:
    for mode, store in modes(harness.store).items():
        budget = make_budget(store, mode, tokens=10_000, usd_micros=10_000_000)
        started = anyio.Event()

        async def answer(request: Request, started: anyio.Event = started) -> Response:
            started.set()
            await anyio.sleep_forever()
            raise AssertionError("never")  # pragma: no cover

        guard = Guard(FunctionProvider(answer), [budget], model="m")
        with llmguard.context(user="alice"):
            async with anyio.create_task_group() as group:
                group.start_soon(guard.complete, ASK)
                await started.wait()
                assert await figures(store, mode, ["alice"]) == {
                    "alice": (0, ASK_WORST),
                    "usd": (0, WORST_MICROS),
                }
                group.cancel_scope.cancel()
        assert await figures(store, mode, ["alice"]) == {"alice": (0, 0), "usd": (0, 0)}, mode


# -- a store that fails, or a call cut, in each phase --------------------------------------


def wrappers(store: Any) -> dict[str, SingleCommands]:
    """The modes whose commands a test can switch off or hang."""
    found = {"single": SingleCommands(store)}
    if isinstance(store, BatchLedger):
        found["batched"] = BatchedCommands(store)
    return found


async def one_call(store: Any, prefix: str, reply: str, **options: Any) -> tuple[object, int]:
    """One call by alice; its outcome and how many times the provider was asked."""
    budget = make_budget(store, prefix, tokens=10_000, usd_micros=10_000_000, **options)
    asked = 0

    async def answer(request: Request) -> Response:
        nonlocal asked
        asked += 1
        if reply == "error":
            raise llmguard.ProviderError("the provider failed", status_code=500)
        return Response(text="Hi!", usage=USAGE, model="m")

    guard = Guard(FunctionProvider(answer), [budget], model="m")
    with llmguard.context(user="alice"):
        try:
            response = await guard.complete(ASK)
        except (StoreUnavailable, llmguard.ProviderError) as exc:
            return type(exc).__name__, asked
    return response.cost_micros, asked


NOTHING = {"alice": (0, 0), "usd": (0, 0)}


@pytest.mark.parametrize(
    ("policy", "reply", "expected"),
    [
        ("closed", "ok", (("StoreUnavailable", 0), NOTHING)),
        ("closed", "error", (("StoreUnavailable", 0), NOTHING)),
        ("open", "ok", ((COST_MICROS, 1), {"alice": (26, 0), "usd": (COST_MICROS, 0)})),
        ("open", "error", (("ProviderError", 1), NOTHING)),
    ],
)
async def test_a_store_down_when_reserving_acts_alike_every_way(
    harness: Harness, policy: str, reply: str, expected: tuple[object, object]
) -> None:
    for mode, store in wrappers(harness.store).items():
        store.down = {"reserve", "reserve_many"}
        outcome = await one_call(store, mode, reply, on_store_error=policy)
        assert (outcome, await figures(store, mode, ["alice"])) == expected, mode


async def test_a_store_down_when_settling_leaves_the_holds_to_expire(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    for mode, store in wrappers(harness.store).items():
        store.down = {"settle", "release", "settle_many"}
        assert await one_call(store, mode, "ok") == (COST_MICROS, 1)
        assert await figures(store, mode, ["alice"]) == {
            "alice": (0, ASK_WORST),
            "usd": (0, WORST_MICROS),
        }, mode
        assert f"could not settle {26} of budget '{mode}-tokens'" in caplog.text, mode


async def test_a_call_cut_while_reserving_releases_what_was_held(harness: Harness) -> None:
    for mode, store in wrappers(harness.store).items():
        store.hang_after = {"reserve", "reserve_many"}
        budget = make_budget(store, mode, tokens=10_000, usd_micros=10_000_000)
        guard = Guard(FunctionProvider(_ok), [budget], model="m")
        with llmguard.context(user="alice"):
            async with anyio.create_task_group() as group:
                group.start_soon(guard.complete, ASK)
                await store.hung.wait()
                held = await figures(store, mode, ["alice"])
                group.cancel_scope.cancel()
        assert held["alice"] == (0, ASK_WORST), mode  # (single: the dollars line not yet)
        assert held["usd"] == ((0, WORST_MICROS) if mode == "batched" else (0, 0))
        assert await figures(store, mode, ["alice"]) == NOTHING, mode


async def test_a_call_failing_while_reserving_releases_what_was_held(harness: Harness) -> None:
    for mode, wrapper in wrappers(harness.store).items():

        class Failing(type(wrapper)):  # type: ignore[misc]
            async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
                result = await super()._call(name, *args, **kwargs)
                if name in ("reserve", "reserve_many"):
                    raise KeyError("cut after the store answered")
                return result

        store = Failing(harness.store)
        budget = make_budget(store, mode, tokens=10_000, usd_micros=10_000_000)
        guard = Guard(FunctionProvider(_ok), [budget], model="m")
        with llmguard.context(user="alice"), pytest.raises(KeyError, match="cut after"):
            await guard.complete(ASK)
        assert await figures(store, mode, ["alice"]) == NOTHING, mode


# -- lines that do not apply, prices not known, attempts after the first ---------------------


def signed_in(context: llmguard.CallContext) -> str | None:
    return None if context.user is None else f"user={context.user}"


async def run_odd_calls(store: Any, prefix: str) -> list[object]:
    """Calls where a line does not apply (no user), a price is unknown (warn), and a
    retry extends the reservation; the figures after each."""
    from llmguard._layers.retry import Retry

    budget = Budget(
        Limit(tokens=10_000, per="hour", scope=signed_in, name=f"{prefix}-tokens"),
        Limit(usd="10", per="day", name=f"{prefix}-usd"),
        store=store,
        pricing=PRICING,
        on_unknown_price="warn",
    )
    replies = iter(["ok", "ok", "rate", "ok", "rate", "error"])

    async def answer(request: Request) -> Response:
        reply = next(replies)
        if reply == "rate":
            raise llmguard.ProviderError("slow down", status_code=429)
        if reply == "error":
            raise llmguard.ProviderError("bad request", status_code=400)
        return Response(text="Hi!", usage=USAGE, model=request.model)

    guard = Guard(
        FunctionProvider(answer), [budget, Retry(attempts=2, wait=lambda state: 0)], model="m"
    )
    seen: list[object] = []
    calls = [
        (None, "m"),  # the tokens line does not apply
        (None, "unknown-model"),  # neither does the dollars line: no price (warn)
        ("alice", "m"),  # rate limited, retried: extended on both lines, then settled
        ("alice", "unknown-model"),  # rate limited then refused: released, tokens only
    ]
    for user, model in calls:
        with llmguard.context(user=user):
            try:
                response = await guard.complete(dataclasses.replace(ASK, model=model))
            except llmguard.ProviderError as exc:
                seen.append(exc.status_code)
            else:
                seen.append(response.cost_micros)
        seen.append(await figures(store, prefix, ["alice"]))
    return seen


async def test_lines_that_do_not_apply_and_unknown_prices_act_alike_every_way(
    harness: Harness,
) -> None:
    results = {}
    for mode, store in modes(harness.store).items():
        results[mode] = await run_odd_calls(store, mode)
    single = results.pop("single")
    assert single == [
        COST_MICROS,
        {"alice": (0, 0), "usd": (COST_MICROS, 0)},
        None,
        {"alice": (0, 0), "usd": (COST_MICROS, 0)},
        COST_MICROS,
        {"alice": (26, 0), "usd": (2 * COST_MICROS, 0)},
        400,
        {"alice": (26, 0), "usd": (2 * COST_MICROS, 0)},
    ]
    for mode, seen in results.items():
        assert seen == single, mode


async def test_the_decorator_form_releases_every_line_of_a_failed_call(
    harness: Harness,
) -> None:
    for mode, store in modes(harness.store).items():

        @llmguard.budget(
            [
                Limit(tokens=100, per="hour", scope=signed_in, name=f"{mode}-tokens"),
                Limit(usd="1", per="day", name=f"{mode}-usd"),
            ],
            reserve=10,
            usage=lambda result: 3,
            model="m",
            pricing=PRICING,
            store=store,
        )
        async def search(fail: bool) -> str:
            if fail:
                raise KeyError("search failed")
            return "found"

        for user in (None, "alice"):  # without a user the tokens line does not apply
            with llmguard.context(user=user), pytest.raises(KeyError, match="search failed"):
                await search(True)
            assert await figures(store, mode, ["alice"]) == NOTHING, mode
        with llmguard.context(user="alice"):
            assert await search(False) == "found"
        assert (await figures(store, mode, ["alice"]))["alice"] == (3, 0), mode

        @llmguard.budget(
            Limit(tokens=100, per="hour", scope=signed_in, name=f"{mode}-only"),
            reserve=10,
            usage=lambda result: 3,
            store=store,
        )
        async def anonymous() -> str:
            raise KeyError("search failed")

        with pytest.raises(KeyError, match="search failed"):  # no line applies: none held
            await anonymous()


async def test_a_budget_composed_by_hand_settles_every_line_every_way(harness: Harness) -> None:
    """No Guard, so no call state: what is charged comes from the response."""
    results = {}
    for mode, store in modes(harness.store).items():
        budget = make_budget(store, mode, tokens=10_000, usd_micros=10_000_000)
        seen: list[object] = []
        replies = [
            Response(text="Hi!", usage=USAGE, model="m"),  # its usage
            Response(text="x" * 40, model="m"),  # none given: an estimate
            Response(text="", model="m"),  # nothing used
        ]
        for reply in replies:

            async def inner(request: Request, reply: Response = reply) -> Response:
                return reply

            with llmguard.context(user="alice"):
                seen.append((await budget.complete(ASK, inner)).cost_micros)
            seen.append(await figures(store, mode, ["alice"]))

        async def failing(request: Request) -> Response:
            raise llmguard.ProviderError("the provider failed", status_code=500)

        with llmguard.context(user="alice"), pytest.raises(llmguard.ProviderError):
            await budget.complete(ASK, failing)
        seen.append(await figures(store, mode, ["alice"]))
        results[mode] = seen
    single = results.pop("single")
    assert single[:2] == [COST_MICROS, {"alice": (26, 0), "usd": (COST_MICROS, 0)}]
    assert single[3] == single[5] == single[6]  # nothing used: nothing counted, all released
    for mode, seen in results.items():
        assert seen == single, mode


# -- the engine's choices ------------------------------------------------------------------


def test_caller_keys_are_remembered_within_a_bound() -> None:
    from llmguard._budget_engine import _KEYS_MEMO

    engine = make_budget(MemoryStore(), "k", tokens=1, usd_micros=1)._engine
    first = engine.keys_for(llmguard.CallContext(user="u0"))
    assert engine.keys_for(llmguard.CallContext(user="u0")) is first
    for i in range(_KEYS_MEMO + 10):
        engine.keys_for(llmguard.CallContext(user=f"u{i}"))
        assert len(engine._keys) <= _KEYS_MEMO
    keys = engine.keys_for(llmguard.CallContext(user="u5"))
    assert keys[0] is not None and keys[1] is not None
    assert keys[0][1:] == (
        ledger_key("k-tokens", "tokens", "user=u5"),
        "user=u5",
        "k-tokens:user=u5",
    )
    assert keys[1][1:] == (ledger_key("k-usd", "usd_micros", "global"), "global", "k-usd:global")


def test_keys_of_a_scope_function_of_the_users_are_never_remembered() -> None:
    asked: list[str | None] = []

    def by_user(context: llmguard.CallContext) -> str | None:
        asked.append(context.user)
        return None if context.user is None else f"u={context.user}"

    budget = Budget(Limit(tokens=10, scope=by_user, name="f"), store=MemoryStore())
    engine = budget._engine
    assert engine.keys_for(llmguard.CallContext(user="a"))[0] is not None
    assert engine.keys_for(llmguard.CallContext(user="a"))[0] is not None
    assert engine.keys_for(llmguard.CallContext())[0] is None
    assert asked == ["a", "a", None] and engine._keys == {}


async def test_batched_commands_replaced_on_the_instance_are_used() -> None:
    store = MemoryStore()
    calls: list[str] = []

    async def reserve_many(
        reservation_id: str, entries: Sequence[LedgerEntry], *, hold: float
    ) -> list[LedgerResult]:
        calls.append(reservation_id)
        return await MemoryStore.reserve_many(store, reservation_id, entries, hold=hold)

    store.reserve_many = reserve_many  # type: ignore[method-assign]
    budget = make_budget(store, "i", tokens=10_000, usd_micros=10_000_000)
    assert budget._engine.batch is store and budget._engine.instant is None
    with llmguard.context(user="alice"):
        await Guard(FunctionProvider(_ok), [budget], model="m").complete(ASK)
    assert len(calls) == 1
    assert await figures(store, "i", ["alice"]) == {"alice": (26, 0), "usd": (COST_MICROS, 0)}


# -- concurrency ---------------------------------------------------------------------------

CALLS = 50
ADMITTED = 20


async def admit_concurrently(store: Any, prefix: str, binding: str) -> tuple[int, list[str]]:
    """``CALLS`` concurrent calls, every one reserving before any settles; the number
    admitted and the scopes of the refusals."""
    first = ADMITTED if binding == "first" else ADMITTED + 10
    second = ADMITTED if binding == "second" else ADMITTED + 10
    budget = make_budget(store, prefix, tokens=first * ASK_WORST, usd_micros=second * WORST_MICROS)
    admitted = 0
    refused: list[str] = []
    everyone_tried = anyio.Event()

    def tried() -> None:
        if admitted + len(refused) == CALLS:
            everyone_tried.set()

    async def answer(request: Request) -> Response:
        nonlocal admitted
        admitted += 1
        tried()
        await everyone_tried.wait()  # nothing settles before every call has reserved
        return Response(text="ok", usage=USAGE, model="m")

    guard = Guard(FunctionProvider(answer), [budget], model="m")

    async def call() -> None:
        try:
            await guard.complete(ASK)
        except BudgetExceeded as exc:
            refused.append(exc.scope.split("-", 1)[1])
            tried()

    with llmguard.context(user="alice"):
        async with anyio.create_task_group() as group:
            for _ in range(CALLS):
                group.start_soon(call)
    return admitted, refused


@pytest.mark.parametrize("binding", ["first", "second"])
async def test_concurrent_calls_admit_exactly_what_fits(harness: Harness, binding: str) -> None:
    for mode, store in modes(harness.store).items():
        admitted, refused = await admit_concurrently(store, mode, binding)
        assert admitted == ADMITTED, (mode, refused)
        assert len(refused) == CALLS - ADMITTED
        if binding == "first":  # the second limit is never reached by a refused call
            assert set(refused) == {"tokens:user=alice"}, mode
        else:
            assert "usd:global" in refused
        assert await figures(store, mode, ["alice"]) == {
            "alice": (ADMITTED * 26, 0),
            "usd": (ADMITTED * COST_MICROS, 0),
        }, mode


async def test_a_store_that_wraps_a_single_command_is_not_bypassed() -> None:
    class Counting(MemoryStore):
        reserves = 0

        async def reserve(self, *args: Any, **kwargs: Any) -> LedgerResult:
            Counting.reserves += 1
            return await super().reserve(*args, **kwargs)

    store = Counting()
    budget = make_budget(store, "w", tokens=10_000, usd_micros=10_000_000)
    assert budget._engine.batch is None and budget._engine.instant is None
    guard = Guard(FunctionProvider(_ok), [budget], model="m")
    await guard.complete(ASK)
    assert Counting.reserves == 2

    replaced = MemoryStore()
    calls: list[str] = []

    async def settle(*args: Any, **kwargs: Any) -> LedgerResult:
        calls.append("settle")
        return await MemoryStore.settle(replaced, *args, **kwargs)

    replaced.settle = settle  # type: ignore[method-assign]
    budget = make_budget(replaced, "w", tokens=10_000, usd_micros=10_000_000)
    assert budget._engine.batch is None and budget._engine.instant is None
    await Guard(FunctionProvider(_ok), [budget], model="m").complete(ASK)
    assert calls == ["settle", "settle"]


async def _ok(request: Request) -> Response:
    return Response(text="ok", usage=USAGE, model="m")

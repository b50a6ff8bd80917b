"""``Budget``: per-user, per-endpoint, per-tenant or global limits in tokens and dollars.

A call reserves its worst case before it starts and settles its real usage after, so
concurrent calls cannot overspend; every later attempt inside it extends the
reservation first. ``llmguard.budget(...)`` is the same for any ``async def``.
See docs/budgets.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any, ParamSpec, TypeVar, cast

from .._budget_engine import AlertHook, BudgetEngine, UnknownPricePolicy
from .._budget_estimate import InputCounter
from .._budget_index import status_of
from .._budget_limits import BudgetStatus, Limit, Per, Scope, ledger_key
from .._context import CallContext, current_context
from .._cost import Pricing
from .._errors import ConfigurationError
from .._fast_init import replace
from .._layer import BaseLayer, EventStream, Handler, StreamHandler, StreamOpener
from .._state import current_call
from .._stores._roles import BudgetLedger, StoreErrorPolicy
from .._types import Request, Response, Usage
from .._wrap import Invocation, around

__all__ = ["DEFAULT_HOLD_S", "DEFAULT_MAX_OUTPUT_TOKENS", "Budget", "budget"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

#: Reserved (and set on the request) as the output of a request with no max_output_tokens.
DEFAULT_MAX_OUTPUT_TOKENS = 4096
#: A reservation not settled within this many seconds expires (a crashed worker's hold).
DEFAULT_HOLD_S = 600.0


def _engine(
    limits: Sequence[Limit],
    *,
    store: BudgetLedger | None,
    pricing: Pricing | None,
    on_store_error: StoreErrorPolicy,
    on_unknown_price: UnknownPricePolicy,
    max_output_tokens: int,
    hold: float,
    on_alert: AlertHook | None,
    input_tokens: InputCounter,
) -> BudgetEngine:
    for limit in limits:
        if not isinstance(limit, Limit):
            raise ConfigurationError(f"a budget takes Limit(...) objects, not {limit!r}")
    if store is None:
        from .._stores.memory import MemoryStore

        store = MemoryStore()
    return BudgetEngine(
        limits,
        store=store,
        pricing=pricing if pricing is not None else Pricing(),
        on_store_error=on_store_error,
        on_unknown_price=on_unknown_price,
        max_output_tokens=max_output_tokens,
        hold=hold,
        on_alert=on_alert,
        input_tokens=input_tokens,
    )


class Budget(BaseLayer):
    """Limits tokens and dollars per window and scope; prices every call.

    >>> from llmguard import Limit
    >>> budget = Budget(Limit(tokens=50_000, per="hour", scope="user"))

    Before a call it reserves the worst case (input tokens estimated, plus the
    request's ``max_output_tokens``, or ``max_output_tokens`` here, which is then set
    on the request) on every limit at once, or refuses with ``BudgetExceeded``
    (nothing is sent). Every later attempt inside it (retry, re-ask, tool step,
    fallback hop) extends the reservation before it starts. After the call the real
    usage is settled and the rest released; a stream settles when it is left, cut or
    not. ``response.cost_micros`` and the call record get the call's price.

    Args:
        *limits: the ``Limit`` objects; all must admit a call. None at all: the layer only
            prices calls.
        store: where budgets are counted (default: a new ``MemoryStore``, one process
            only). ``SQLiteStore`` shares limits between the processes of one host,
            ``RedisStore`` between hosts.
        pricing: where prices come from (default ``Pricing()``: genai-prices).
        on_store_error: ``"closed"`` (default) refuses calls while the store is down
            (``StoreUnavailable``); ``"open"`` lets them through unbudgeted, logging one
            warning per outage.
        on_unknown_price: when a dollar limit meets a model with no known price:
            ``"refuse"`` (default, ``UnknownPrice`` before sending), ``"warn"`` (one
            warning per model; its calls count against token limits only) or a
            ``Price`` to charge.
        max_output_tokens: the output reserved for a request that sets none (it is set
            on that request, so the provider enforces it).
        hold: seconds after which an unsettled reservation expires.
        on_alert: ``async def (BudgetAlert)``, awaited once per window when a limit
            crosses one of its ``alerts`` thresholds (bounded to 5 s; keep it quick).
        input_tokens: ``"auto"`` (tiktoken when installed and its file is cached,
            else the heuristic), ``"heuristic"``, or a function ``(Request) -> int``.
    """

    __slots__ = ("_engine",)

    def __init__(
        self,
        *limits: Limit,
        store: BudgetLedger | None = None,
        pricing: Pricing | None = None,
        on_store_error: StoreErrorPolicy = "closed",
        on_unknown_price: UnknownPricePolicy = "refuse",
        max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
        hold: float = DEFAULT_HOLD_S,
        on_alert: AlertHook | None = None,
        input_tokens: InputCounter = "auto",
    ) -> None:
        self._engine = _engine(
            limits,
            store=store,
            pricing=pricing,
            on_store_error=on_store_error,
            on_unknown_price=on_unknown_price,
            max_output_tokens=max_output_tokens,
            hold=hold,
            on_alert=on_alert,
            input_tokens=input_tokens,
        )

    @property
    def limits(self) -> tuple[Limit, ...]:
        """The limits, in the order given."""
        return tuple(dict.fromkeys(line.limit for line in self._engine.lines))

    @property
    def store(self) -> BudgetLedger:
        """Where the budget is counted."""
        return self._engine.store

    @property
    def pricing(self) -> Pricing:
        """Where prices come from."""
        return self._engine.pricing

    def __repr__(self) -> str:
        limits = ", ".join(repr(limit) for limit in self.limits)
        return f"Budget({limits}, store={self._engine.store!r})"

    async def prepare(self, *models: str) -> None:
        """Do now, once, what the first call would otherwise do on the way: load the
        price database and decide how each of ``models`` has its input tokens counted
        (tiktoken's cached encoding or the heuristic), both in a worker thread.

        Call it at start-up (a web app's lifespan) so no user's first call waits for
        it; calls work the same without it.
        """
        engine = self._engine
        if not engine.pricing.loaded:
            await engine.pricing.load()
        for model in models:
            await engine.estimator.prepare(model)

    async def complete(self, request: Request, call_next: Handler) -> Response:
        """Reserve, call inward, settle; the response carries the call's cost."""
        ticket = await self._engine.open(current_call(), request)
        assert ticket.request is not None
        try:
            response = await call_next(ticket.request)
        except BaseException:
            await ticket.close(None)  # charges what the attempts used, if anything
            raise
        cost = await ticket.close(response)
        return response if cost is None else replace(response, cost_micros=cost)

    def stream(self, request: Request, call_next: StreamHandler) -> StreamOpener:
        """Reserve on entering (so a refusal comes before anything is sent), settle on
        leaving, whether the stream ended, was cut, timed out or was cancelled."""
        return self._stream(request, call_next)

    @asynccontextmanager
    async def _stream(
        self, request: Request, call_next: StreamHandler
    ) -> AsyncIterator[EventStream]:
        ticket = await self._engine.open(current_call(), request)
        assert ticket.request is not None
        try:
            async with call_next(ticket.request) as events:
                yield events
        finally:
            await ticket.close(None)

    async def status(self, context: CallContext | None = None) -> list[BudgetStatus]:
        """Where each limit stands for ``context`` (default: the current one).

        One ``BudgetStatus`` per limit and unit that applies to the caller, in the
        order of the limits: used, reserved, remaining and reset time, for dashboards
        and ``X-RateLimit-*`` headers. Raises ``StoreUnavailable`` if the store is down.
        """
        engine = self._engine
        context = context if context is not None else current_context()
        out = []
        for line in engine.lines:
            scope = line.limit.key(context)
            if scope is None:
                continue
            key = ledger_key(line.name, line.unit, scope)
            result = await engine.store.usage(key, window=line.window, limit=line.amount)
            out.append(status_of(line.name, line.unit, scope, line.amount, line.window, result))
        return out


def _usage_of(value: Usage | int, what: str) -> Usage:
    if isinstance(value, Usage):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return Usage(input_tokens=value)
    raise TypeError(f"{what} must return a Usage or a non-negative int, not {value!r}")


def budget(
    limit: Limit | int | Sequence[Limit],
    /,
    *,
    usage: Callable[[Any], Usage | int],
    reserve: int | Usage | Callable[..., Usage | int],
    per: Per | None = None,
    scope: Scope | None = None,
    model: str | None = None,
    store: BudgetLedger | None = None,
    pricing: Pricing | None = None,
    on_store_error: StoreErrorPolicy = "closed",
    on_unknown_price: UnknownPricePolicy = "refuse",
    hold: float = DEFAULT_HOLD_S,
    on_alert: AlertHook | None = None,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Limit any ``async def`` by a budget: reserve before, settle what ``usage`` says.

    >>> @budget(1_000, per="hour", scope="user", reserve=50, usage=lambda hits: len(hits))
    ... async def search(query: str) -> list[str]:
    ...     return [query]

    Args:
        limit: a ``Limit``, several, or an ``int`` of tokens (units) with ``per`` and
            ``scope``.
        usage: reads the result: a ``Usage``, or an ``int`` of tokens (units).
        reserve: the most one call can use (an int or a ``Usage``), or a function of
            the call's arguments returning it. Reserved before the call, so concurrent
            calls cannot overspend; a call whose ``usage`` comes out higher is still
            charged in full.
        per, scope: the window and scope of an ``int`` limit (default ``"day"`` and
            ``"global"``).
        model: prices the usage for dollar limits (e.g. an embedding model); a dollar
            limit without it is a ``ConfigurationError``.
        store, pricing, on_store_error, on_unknown_price, hold, on_alert: as ``Budget``.

    A call that raises releases its reservation. Retries inside the decorated function
    are not seen: write ``@llmguard.retry(...)`` above ``@budget(...)`` (the retry
    outermost) so that each try is reserved and charged.
    """
    if isinstance(limit, int) and not isinstance(limit, bool):
        limits: list[Limit] = [Limit(tokens=limit, per=per or "day", scope=scope or "global")]
    else:
        if per is not None or scope is not None:
            raise ConfigurationError("per= and scope= go into each Limit(...), not budget(...)")
        limits = [limit] if isinstance(limit, Limit) else list(cast(Sequence[Limit], limit))
    if not limits:
        raise ConfigurationError("budget() needs at least one limit")
    if not callable(usage):
        raise ConfigurationError(f"usage= must be a function of the result, not {usage!r}")
    if not callable(reserve):
        fixed = _usage_of(reserve, "reserve")

        def reserve_for(*args: Any, **kwargs: Any) -> Usage:
            return fixed
    else:
        compute = reserve

        def reserve_for(*args: Any, **kwargs: Any) -> Usage:
            return _usage_of(compute(*args, **kwargs), "reserve")

    if pricing is None:  # without a model nothing is priced: leave the database unloaded
        pricing = Pricing() if model is not None else Pricing(database=False)
    engine = _engine(
        limits,
        store=store,
        pricing=pricing,
        on_store_error=on_store_error,
        on_unknown_price=on_unknown_price,
        max_output_tokens=DEFAULT_MAX_OUTPUT_TOKENS,
        hold=hold,
        on_alert=on_alert,
        input_tokens="heuristic",
    )
    if engine.has_usd and model is None:
        raise ConfigurationError("a dollar limit on budget(...) needs model= to price the usage")

    async def advice(call: Invocation[T]) -> T:
        worst = reserve_for(*call.args, **call.kwargs)
        ticket = await engine.open(current_call(), None, worst=worst, model=model)
        try:
            result = await call.proceed()
            spent = _usage_of(usage(result), "usage")
        except BaseException:
            await ticket.cancel()
            raise
        await ticket.close(None, usage=spent)
        return result

    return around(advice)

"""One call's reservation on every line of one budget: ``Ticket``.

See ``_budget_engine`` for the life of a call: ``open`` reserves, ``before_attempt``
extends, ``close`` settles or releases.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

import anyio

from ._assemble import estimate_usage
from ._budget_limits import Line, ledger_key, reset_time
from ._cost import service_tier, to_micros
from ._errors import BudgetExceeded, StoreUnavailable
from ._stores._roles import LedgerResult
from ._types import Request, Response, Usage

if TYPE_CHECKING:
    from ._budget_engine import BudgetEngine
    from ._state import CallState

__all__ = ["CLOSE_TIMEOUT_S", "Ticket"]

_log = logging.getLogger("llmguard.budget")

#: Bound on settling (or releasing) at the end of a call, shielded from cancellation.
CLOSE_TIMEOUT_S = 10.0
#: ``CallState.extra`` key: the price of each attempt (by ``id``), in dollars or ``None``.
_ATTEMPT_COSTS = "llmguard.budget.attempt_costs"


class Ticket:
    """One call's reservation on every line of one budget (per-call state)."""

    __slots__ = (
        "_active",
        "_attempts_seen",
        "_base",
        "_engine",
        "_keys",
        "_reserved",
        "_skip",
        "model",
        "provider",
        "request",
        "rid",
        "state",
    )

    def __init__(
        self,
        engine: BudgetEngine,
        state: CallState | None,
        request: Request | None,
        model: str | None,
        provider: str | None,
    ) -> None:
        self._engine = engine
        self.state = state
        self.request = request
        self.model = model
        self.provider = provider
        if state is not None:
            seq = state.extra.get("llmguard.budget.seq", 0) + 1
            state.extra["llmguard.budget.seq"] = seq
            self.rid = f"{state.call_id}:{seq}"
            self._base = len(state.attempts)
            context = state.context
        else:
            from ._context import current_context
            from ._state import CallState

            self.rid = f"{CallState.new_id()}:1"
            self._base = 0
            context = current_context()
        self._keys: list[tuple[Line, str, str] | None] = []
        for line in engine.lines:
            scope = line.limit.key(context)
            if scope is None:
                self._keys.append(None)  # this limit does not apply to this call
                continue
            self._keys.append((line, ledger_key(line.name, line.unit, scope), scope))
            if state is not None:
                label = f"{line.name}:{scope}"
                if label not in state.budget_scopes:
                    state.budget_scopes.append(label)
        self._reserved = [0] * len(self._keys)  # what each line holds for this call
        self._skip = [False] * len(self._keys)  # no price (warn policy) or store down (open)
        self._attempts_seen = 0
        self._active = False

    def _amounts(self, tokens: int, micros: int | None) -> list[int | None]:
        return [
            None if key is None else (tokens if key[0].unit == "tokens" else micros)
            for key in self._keys
        ]

    def _exceeded(self, line: Line, scope: str, result: LedgerResult) -> BudgetExceeded:
        used = result.used
        return BudgetExceeded(
            scope=f"{line.name}:{scope}",
            limit=line.amount,
            used=used,
            remaining=result.remaining if result.remaining is not None else 0,
            unit=line.unit,
            reset_at=reset_time(result),
        )

    async def reserve(self, tokens: int, micros: int | None) -> None:
        """Reserve on every line, all or none."""
        engine, store = self._engine, self._engine.store
        amounts = self._amounts(tokens, micros)
        tried: list[int] = []
        try:
            for index, key in enumerate(self._keys):
                amount = amounts[index]
                if key is None or amount is None:
                    self._skip[index] = key is not None
                    continue
                line, ledger, scope = key
                tried.append(index)
                try:
                    result = await store.reserve(
                        ledger,
                        self.rid,
                        amount,
                        limit=line.amount,
                        window=line.window,
                        hold=engine.hold,
                    )
                except StoreUnavailable as exc:
                    if engine.on_store_error == "closed":
                        raise engine.refuse_on_store_error(exc, "reserve") from exc
                    engine.store_failed(exc, "reserving")
                    self._skip[index] = True
                    continue
                engine.store_answered()
                if not result.ok:
                    await engine.alerts.refused(line, ledger, scope, result)
                    raise self._exceeded(line, scope, result)
                self._reserved[index] = amount
        except BaseException:
            await self._release_lines(tried)
            raise
        self._active = True
        if self.state is not None and self.request is not None:
            self.state.before_attempt(self.before_attempt)

    async def _release_lines(self, indexes: Sequence[int]) -> None:
        """Undo reservations (shielded, bounded, best effort: they expire anyway)."""
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = anyio.current_time() + CLOSE_TIMEOUT_S
            for index in indexes:
                key = self._keys[index]
                assert key is not None
                with contextlib.suppress(StoreUnavailable):
                    await self._engine.store.release(key[1], self.rid, window=key[0].window)
                self._reserved[index] = 0

    async def before_attempt(self, state: CallState, request: Request, number: int) -> None:
        """Extend by the worst case of every attempt after the first (a CallState hook)."""
        if not self._active:
            return
        self._attempts_seen += 1
        if self._attempts_seen == 1:
            return  # the first attempt is what ``open`` reserved
        engine = self._engine
        if not engine.estimator.ready(request.model):
            await engine.estimator.prepare(request.model)
        _, tokens, micros = engine.worst(request, provider=self.provider)
        step = f"{self.rid}/{self._attempts_seen - 1}"
        for index, amount in enumerate(self._amounts(tokens, micros)):
            key = self._keys[index]
            if key is None or amount is None or self._skip[index]:
                continue
            line, ledger, scope = key
            try:
                result = await engine.store.extend(
                    ledger, step, amount, limit=line.amount, window=line.window, hold=engine.hold
                )
            except StoreUnavailable as exc:
                if engine.on_store_error == "closed":
                    raise engine.refuse_on_store_error(exc, "extend its reservation") from exc
                engine.store_failed(exc, "extending")
                continue
            engine.store_answered()
            if not result.ok:
                await engine.alerts.refused(line, ledger, scope, result)
                raise self._exceeded(line, scope, result)
            self._reserved[index] += amount

    def spent(self, response: Response | None) -> tuple[Usage, Decimal | None, bool]:
        """What this call's attempts used, their dollars, and whether the price is known."""
        engine, state = self._engine, self.state
        if state is None:  # composed by hand, outside a Guard: no attempts, the response
            return self._response_spent(response)
        attempts = state.attempts[self._base :]
        if response is not None and attempts:
            last = attempts[-1]
            produced = response.text or response.tool_calls
            if last.usage.total_tokens == 0 and produced and last.error is None:
                output = response.text + "".join(c.name + c.arguments for c in response.tool_calls)
                last.usage = estimate_usage(self.request, output)  # the provider gave none
        total = Usage()
        dollars: Decimal | None = Decimal(0)
        tier = service_tier(self.request, response)
        # Each attempt's price, kept on the call: the record's cost is every attempt's,
        # however many budget passes priced them (tool-loop steps, stacked budgets).
        priced: dict[int, Decimal | None] = state.extra.setdefault(_ATTEMPT_COSTS, {})
        for attempt in attempts:
            usage = attempt.usage
            if usage.total_tokens == 0:
                continue
            total = total + usage
            cost = engine.cost(
                attempt.model, usage, provider=attempt.provider, tier=tier, strict=False
            )
            priced[id(attempt)] = cost
            dollars = None if cost is None or dollars is None else dollars + cost
        return total, dollars, dollars is not None

    def _call_cost(self) -> int | None:
        """The price of every attempt of the call priced so far, in micro-dollars."""
        assert self.state is not None
        costs = self.state.extra.get(_ATTEMPT_COSTS, {}).values()
        if any(cost is None for cost in costs):
            return None
        return to_micros(sum(costs, Decimal(0)))

    def _response_spent(self, response: Response | None) -> tuple[Usage, Decimal | None, bool]:
        if response is None:
            return Usage(), Decimal(0), True
        usage = response.usage
        if usage.total_tokens == 0 and (response.text or response.tool_calls):
            output = response.text + "".join(c.name + c.arguments for c in response.tool_calls)
            usage = estimate_usage(self.request, output)
        if usage.total_tokens == 0:
            return usage, Decimal(0), True
        model = response.model or self.model or ""
        tier = service_tier(self.request, response)
        dollars = self._engine.cost(
            model, usage, provider=response.provider or None, tier=tier, strict=False
        )
        return usage, dollars, dollars is not None

    async def close(self, response: Response | None, *, usage: Usage | None = None) -> int | None:
        """Settle the real spend (or release); returns the call's cost in micro-dollars.

        ``usage`` is given by the decorator form (priced as the ticket's model); else
        the spend is read from the call's attempts.
        """
        self._active = False
        engine = self._engine
        if usage is None:
            total, dollars, _ = self.spent(response)
        else:
            total, dollars = usage, None
            if self.model is not None and usage.total_tokens:
                dollars = engine.cost(
                    self.model, usage, provider=self.provider, tier=None, strict=False
                )
        micros = None if dollars is None else to_micros(dollars)
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = anyio.current_time() + CLOSE_TIMEOUT_S
            await self._settle(total.total_tokens, micros)
        if scope.cancelled_caught:
            _log.warning(
                "llmguard: settling call %s took over %gs and was abandoned; its reservations "
                "expire after hold=%gs",
                self.rid,
                CLOSE_TIMEOUT_S,
                engine.hold,
            )
        if self.state is not None:
            self.state.cost_micros = self._call_cost() if usage is None else micros
        return micros

    async def _settle(self, tokens: int, micros: int | None) -> None:
        engine, store = self._engine, self._engine.store
        for index, key in enumerate(self._keys):
            if key is None:
                continue
            line, ledger, scope = key
            if line.unit == "tokens":
                amount: int | None = tokens
            else:
                # A price that became unknown is charged the worst case it reserved.
                amount = micros if micros is not None else self._reserved[index] or None
            try:
                if amount:
                    result = await store.settle(ledger, self.rid, amount, window=line.window)
                elif self._reserved[index]:
                    result = await store.release(ledger, self.rid, window=line.window)
                else:
                    continue
            except StoreUnavailable as exc:
                engine.settle_failed(exc, line.name, scope, amount or 0)
                continue
            engine.store_answered()
            await engine.alerts.settled(line, ledger, scope, result)
            await engine.index.remember(line, scope)

    async def cancel(self) -> None:
        """Release everything without counting (the decorator form's failed call)."""
        self._active = False
        await self._release_lines([i for i, key in enumerate(self._keys) if key is not None])

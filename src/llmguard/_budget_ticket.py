"""One call's reservation on every line of one budget: ``Ticket``.

See ``_budget_engine`` for the life of a call: ``open`` reserves, ``before_attempt``
extends, ``close`` settles or releases (each line's settle: ``_budget_settle``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

import anyio

from ._assemble import estimate_usage
from ._budget_limits import Line, reset_time
from ._budget_settle import _entry, after_settle, settle, settle_now
from ._cost import service_tier, to_micros
from ._errors import BudgetExceeded, StoreUnavailable
from ._stores._roles import LedgerEntry, LedgerResult
from ._timeouts import Bound
from ._types import EMPTY_USAGE, Request, Response, Usage

if TYPE_CHECKING:
    from ._budget_engine import BudgetEngine
    from ._state import CallState

__all__ = ["CLOSE_TIMEOUT_S", "Ticket"]

_log = logging.getLogger("llmguard.budget")

#: Bound on settling (or releasing) at the end of a call, shielded from cancellation.
CLOSE_TIMEOUT_S = 10.0
#: ``CallState.extra`` key: the price of each attempt (by ``id``), in dollars or ``None``.
_ATTEMPT_COSTS = "llmguard.budget.attempt_costs"
_ZERO = Decimal(0)
_CLOSING = Bound(CLOSE_TIMEOUT_S, shield=True)


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
            extra = state.extra
            seq = extra.get("llmguard.budget.seq", 0) + 1
            extra["llmguard.budget.seq"] = seq
            self.rid = f"{state.call_id}:{seq}"
            self._base = len(state.attempts)
            keys = self._keys = engine.keys_for(state.context)
            scopes = state.budget_scopes
            for key in keys:
                if key is not None and key[3] not in scopes:
                    scopes.append(key[3])
        else:
            from ._context import current_context
            from ._state import CallState

            self.rid = f"{CallState.new_id()}:1"
            self._base = 0
            self._keys = engine.keys_for(current_context())
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
        if self._engine.batch is not None:
            await self._reserve_batch(tokens, micros)
        else:
            await self._reserve_each(tokens, micros)
        self._active = True
        if self.state is not None and self.request is not None:
            self._attempts_seen = 1
            self.state.before_attempt(self.before_attempt, first=self._base + 1)

    async def _reserve_batch(self, tokens: int, micros: int | None) -> None:
        """One ``reserve_many`` for every line (a store that batches)."""
        engine = self._engine
        batch = engine.batch
        assert batch is not None
        entries: list[LedgerEntry] = []
        indexes: list[int] = []
        amounts: list[int] = []
        skip = self._skip
        for index, key in enumerate(self._keys):
            if key is None:
                continue
            line = key[0]
            amount = tokens if line.unit == "tokens" else micros
            if amount is None:
                skip[index] = True
                continue
            entries.append(_entry(LedgerEntry, (key[1], line.limit.window, amount, line.amount)))
            indexes.append(index)
            amounts.append(amount)
        if not entries:
            return
        instant = engine.instant
        try:
            if instant is not None:
                refused = await instant.reserve_all(self.rid, entries, hold=engine.hold)
            else:
                results = await batch.reserve_many(self.rid, entries, hold=engine.hold)
                last = results[-1]
                refused = None if last.ok else (len(results) - 1, last)
        except StoreUnavailable as exc:
            if engine.on_store_error == "closed":
                await self._release_lines(indexes)
                raise engine.refuse_on_store_error(exc, "reserve") from exc
            engine.store_failed(exc, "reserving")
            for index in indexes:
                skip[index] = True
            return
        except BaseException:
            await self._release_lines(indexes)  # it may have held before it was cut
            raise
        engine.store_answered()
        if refused is not None:  # nothing of this call is held
            key = self._keys[indexes[refused[0]]]
            assert key is not None
            line, ledger, scope, _ = key
            await engine.alerts.refused(line, ledger, scope, refused[1])
            raise self._exceeded(line, scope, refused[1])
        reserved = self._reserved
        for index, amount in zip(indexes, amounts, strict=True):
            reserved[index] = amount

    async def _reserve_each(self, tokens: int, micros: int | None) -> None:
        """One ``reserve`` per line, releasing the reserved ones if a later one fails."""
        engine, store = self._engine, self._engine.store
        amounts = self._amounts(tokens, micros)
        tried: list[int] = []
        try:
            for index, key in enumerate(self._keys):
                amount = amounts[index]
                if key is None or amount is None:
                    self._skip[index] = key is not None
                    continue
                line, ledger, scope, _ = key
                tried.append(index)
                try:
                    result = await store.reserve(
                        ledger,
                        self.rid,
                        amount,
                        limit=line.amount,
                        window=line.limit.window,
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

    async def _release_lines(self, indexes: Sequence[int]) -> None:
        """Undo reservations (shielded, bounded, best effort: they expire anyway)."""
        if not indexes:
            return
        keys, store, batch = self._keys, self._engine.store, self._engine.batch
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = anyio.current_time() + CLOSE_TIMEOUT_S
            if batch is not None:
                entries = []
                for index in indexes:
                    key = keys[index]
                    assert key is not None
                    entries.append(LedgerEntry(key[1], key[0].limit.window, None))
                with contextlib.suppress(StoreUnavailable):
                    await batch.settle_many(self.rid, entries)
            else:
                for index in indexes:
                    key = keys[index]
                    assert key is not None
                    with contextlib.suppress(StoreUnavailable):
                        await store.release(key[1], self.rid, window=key[0].limit.window)
            for index in indexes:
                self._reserved[index] = 0

    async def before_attempt(self, state: CallState, request: Request, number: int) -> None:
        """Extend by the worst case of every attempt after the first (a CallState hook)."""
        if not self._active:
            return
        self._attempts_seen += 1  # the first attempt (not seen here) is what ``open`` reserved
        engine = self._engine
        if not engine.estimator.ready(request.model):
            await engine.estimator.prepare(request.model)
        _, tokens, micros = engine.worst(request, provider=self.provider)
        step = f"{self.rid}/{self._attempts_seen - 1}"
        for index, amount in enumerate(self._amounts(tokens, micros)):
            key = self._keys[index]
            if key is None or amount is None or self._skip[index]:
                continue
            line, ledger, scope, _ = key
            try:
                result = await engine.store.extend(
                    ledger,
                    step,
                    amount,
                    limit=line.amount,
                    window=line.limit.window,
                    hold=engine.hold,
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
        """What this call's attempts used and their dollars; and whether they are all the
        call's priced attempts (then their dollars are the call's cost)."""
        engine, state = self._engine, self.state
        if state is None:  # composed by hand, outside a Guard: no attempts, the response
            return (*self._response_spent(response), False)
        attempts = state.attempts
        base = self._base
        if response is not None and len(attempts) > base:
            last = attempts[-1]
            produced = response.text or response.tool_calls
            if last.usage.total_tokens == 0 and produced and last.error is None:
                output = response.text + "".join(c.name + c.arguments for c in response.tool_calls)
                last.usage = estimate_usage(self.request, output)  # the provider gave none
        total: Usage | None = None
        dollars: Decimal | None = _ZERO
        tier = service_tier(self.request, response)
        # Each attempt's price, kept on the call: the record's cost is every attempt's,
        # however many budget passes priced them (tool-loop steps, stacked budgets).
        extra = state.extra
        priced: dict[int, Decimal | None] | None = extra.get(_ATTEMPT_COSTS)
        if priced is None:
            priced = extra[_ATTEMPT_COSTS] = {}
        count = 0
        for index in range(base, len(attempts)):
            attempt = attempts[index]
            usage = attempt.usage
            if usage.total_tokens == 0:
                continue
            total = usage if total is None else total + usage
            cost = engine.cost(
                attempt.model, usage, provider=attempt.provider, tier=tier, strict=False
            )
            priced[id(attempt)] = cost
            count += 1
            dollars = None if cost is None or dollars is None else dollars + cost
        return total or EMPTY_USAGE, dollars, len(priced) == count

    def _call_cost(self) -> int | None:
        """The price of every attempt of the call priced so far, in micro-dollars."""
        assert self.state is not None
        costs = self.state.extra.get(_ATTEMPT_COSTS, {}).values()
        if any(cost is None for cost in costs):
            return None
        return to_micros(sum(costs, _ZERO))

    def _response_spent(self, response: Response | None) -> tuple[Usage, Decimal | None]:
        if response is None:
            return EMPTY_USAGE, _ZERO
        usage = response.usage
        if usage.total_tokens == 0 and (response.text or response.tool_calls):
            output = response.text + "".join(c.name + c.arguments for c in response.tool_calls)
            usage = estimate_usage(self.request, output)
        if usage.total_tokens == 0:
            return usage, _ZERO
        model = response.model or self.model or ""
        tier = service_tier(self.request, response)
        dollars = self._engine.cost(
            model, usage, provider=response.provider or None, tier=tier, strict=False
        )
        return usage, dollars

    async def close(self, response: Response | None, *, usage: Usage | None = None) -> int | None:
        """Settle the real spend (or release); returns the call's cost in micro-dollars.

        ``usage`` is given by the decorator form (priced as the ticket's model); else
        the spend is read from the call's attempts.
        """
        self._active = False
        engine = self._engine
        whole = False  # whether this ticket priced every priced attempt of the call
        if usage is None:
            total, dollars, whole = self.spent(response)
        else:
            total, dollars = usage, None
            if self.model is not None and usage.total_tokens:
                dollars = engine.cost(
                    self.model, usage, provider=self.provider, tier=None, strict=False
                )
        micros = None if dollars is None else to_micros(dollars)
        instant = engine.instant
        if instant is not None:  # a store that settles at once: nothing to wait for
            follow_up = settle_now(self, instant, total.total_tokens, micros)
            if follow_up is not None:
                with _CLOSING.scope():
                    await after_settle(self, follow_up)
        else:
            with _CLOSING.scope() as scope:
                await settle(self, total.total_tokens, micros)
            if scope.cancelled_caught:
                _log.warning(
                    "llmguard: settling call %s took over %gs and was abandoned; its "
                    "reservations expire after hold=%gs",
                    self.rid,
                    CLOSE_TIMEOUT_S,
                    engine.hold,
                )
        if self.state is not None:
            if usage is not None or whole:
                self.state.cost_micros = micros
            else:
                self.state.cost_micros = self._call_cost()
        return micros

    async def cancel(self) -> None:
        """Release everything without counting (the decorator form's failed call)."""
        self._active = False
        await self._release_lines([i for i, key in enumerate(self._keys) if key is not None])

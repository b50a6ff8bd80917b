"""The budget's accounting: reserve before, extend per attempt, settle or release after.

``BudgetEngine`` holds a budget's configuration and what it remembers across calls
(whether its store is down, which alerts and index entries this process already
wrote). Everything about one call lives in that call's ``Ticket``:

- ``open`` reserves the first attempt's worst case on every line (tokens and/or
  micro-dollars, one ledger key per line and scope), all or none: when a line refuses,
  the lines already reserved are released and ``BudgetExceeded`` is raised.
- ``before_attempt`` (a ``CallState`` hook) extends the reservation by the worst case
  of every later attempt (retry, re-ask, tool step, fallback hop) before it starts.
- ``close`` settles what the call's attempts really used (estimated where the provider
  reported nothing), or releases when they used nothing; it runs shielded from
  cancellation and bounded in time, so a cancelled or cut call is still charged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Literal, TypeGuard

from ._budget_alerts import AlertKeeper
from ._budget_estimate import InputCounter, InputEstimator
from ._budget_index import IndexKeeper
from ._budget_limits import BudgetAlert, Limit, Line, is_pure, ledger_key
from ._context import CallContext
from ._cost import Price, Pricing, service_tier, to_micros
from ._errors import ConfigurationError, StoreUnavailable, UnknownPrice
from ._fast_init import replace
from ._stores._roles import BatchLedger, BudgetLedger, InstantLedger, StoreErrorPolicy
from ._types import Request, Usage

if TYPE_CHECKING:
    from ._budget_ticket import Ticket
    from ._state import CallState

__all__ = ["AlertHook", "BudgetEngine", "LineKey", "UnknownPricePolicy"]

LineKey = tuple[Line, str, str, str]
"""One line for one caller: the line, its ledger key, the scope value, and the label
``"<name>:<scope>"`` the call state lists."""
#: Callers whose ledger keys are remembered per budget (then the memory starts afresh).
_KEYS_MEMO = 4096

_log = logging.getLogger("llmguard.budget")

UnknownPricePolicy = Literal["refuse", "warn"] | Price
AlertHook = Callable[[BudgetAlert], Awaitable[None]]


def _defined_in(cls: type, name: str) -> type | None:
    """The class of ``cls``'s MRO that defines ``name`` (``None``: none does, a proxy's
    ``__getattr__`` answers it)."""
    return next((klass for klass in cls.__mro__ if name in vars(klass)), None)


def _batches(store: BudgetLedger) -> TypeGuard[BatchLedger]:
    """Whether budgets may use ``store``'s batched commands: it has them, and they are
    not older than its single commands (a subclass that wraps ``reserve`` but inherits
    ``reserve_many``, or a ``reserve`` replaced on the instance, must not be bypassed)."""
    if not isinstance(store, BatchLedger):
        return False
    cls, own = type(store), getattr(store, "__dict__", {})
    for batched, singles in (
        ("reserve_many", ("reserve",)),
        ("settle_many", ("settle", "release")),
    ):
        if batched in own:
            continue
        newest = _defined_in(cls, batched)
        for single in singles:
            older = _defined_in(cls, single)
            if single in own or (older is not None and newest is None):
                return False
            if older is not None and newest is not None and not issubclass(newest, older):
                return False
    return True


class BudgetEngine:
    """A budget's configuration and cross-call memory; ``open`` starts one call's ticket."""

    def __init__(
        self,
        limits: Sequence[Limit],
        *,
        store: BudgetLedger,
        pricing: Pricing,
        on_store_error: StoreErrorPolicy,
        on_unknown_price: UnknownPricePolicy,
        max_output_tokens: int,
        hold: float,
        on_alert: AlertHook | None,
        input_tokens: InputCounter,
    ) -> None:
        if not isinstance(store, BudgetLedger):
            raise ConfigurationError(f"{store!r} is not a BudgetLedger (reserve/extend/settle...)")
        if on_store_error not in ("closed", "open"):
            raise ConfigurationError(
                f"on_store_error must be 'closed' or 'open', not {on_store_error!r}"
            )
        if on_unknown_price not in ("refuse", "warn") and not isinstance(on_unknown_price, Price):
            raise ConfigurationError(
                f"on_unknown_price must be 'refuse', 'warn' or a Price, not {on_unknown_price!r}"
            )
        if max_output_tokens < 1:
            raise ConfigurationError(f"max_output_tokens must be positive: {max_output_tokens!r}")
        if not 0 < hold < math.inf:
            raise ConfigurationError(f"hold must be a positive number of seconds: {hold!r}")
        self.lines: list[Line] = [line for limit in limits for line in limit.lines()]
        seen = set()
        for line in self.lines:
            if (line.name, line.unit) in seen:
                raise ConfigurationError(f"two limits named {line.name!r} cap {line.unit}")
            seen.add((line.name, line.unit))
        self.store = store
        #: ``store`` when it takes batched commands (one per phase for every line)
        self.batch: BatchLedger | None = store if _batches(store) else None
        #: ``store`` when it settles at once, in memory (no shield, no bound, no await)
        self.instant: InstantLedger | None = (
            store
            if isinstance(store, InstantLedger)
            and store.plain_calls("reserve_many", "settle_many", "reserve", "settle")
            else None
        )
        self._keys: dict[tuple[object, ...], tuple[LineKey | None, ...]] = {}
        # A user's scope function may read more than the context: then never remembered.
        self._remember_keys = all(is_pure(line.limit.key) for line in self.lines)
        self.pricing = pricing
        self.on_store_error = on_store_error
        self.on_unknown_price = on_unknown_price
        self.max_output_tokens = max_output_tokens
        self.hold = float(hold)
        self.estimator = InputEstimator(input_tokens)
        self.alerts = AlertKeeper(store, on_alert)
        self.index = IndexKeeper(store)
        self.has_usd = any(line.unit == "usd_micros" for line in self.lines)
        self._down = False
        self._warned_models: set[str] = set()

    def keys_for(self, context: CallContext) -> tuple[LineKey | None, ...]:
        """Each line's key for the caller ``context`` (``None``: the limit does not apply
        to it), worked out once per caller."""
        # By value: a context is made per request, equal ones hash alike (C-level tuple).
        who = (context.user, context.tenant, context.endpoint, context.tags)
        keys = self._keys.get(who) if self._remember_keys else None
        if keys is None:
            found: list[LineKey | None] = []
            for line in self.lines:
                scope = line.limit.key(context)
                if scope is None:
                    found.append(None)
                else:
                    ledger = ledger_key(line.name, line.unit, scope)
                    found.append((line, ledger, scope, f"{line.name}:{scope}"))
            keys = tuple(found)
            if self._remember_keys:
                if len(self._keys) >= _KEYS_MEMO:
                    self._keys.clear()
                self._keys[who] = keys
        return keys

    # -- store health ------------------------------------------------------------------

    def store_failed(self, exc: StoreUnavailable, doing: str) -> None:
        """Note an outage under ``"open"``: one warning per outage, then the call goes on."""
        if not self._down:
            self._down = True
            _log.warning(
                "llmguard: the budget store is unavailable (%s); with on_store_error='open' "
                "calls go on unbudgeted until it answers again (while %s)",
                exc,
                doing,
            )

    def settle_failed(self, exc: StoreUnavailable, name: str, scope: str, amount: int) -> None:
        """A settle the store did not take: logged once per outage (the spend is lost to
        the budget; the reservation expires after ``hold``)."""
        if not self._down:
            self._down = True
            _log.warning(
                "llmguard: could not settle %d of budget %r for %s (%s); calls settled "
                "during this outage are not counted, their reservations expire after hold=%gs",
                amount,
                name,
                scope,
                exc,
                self.hold,
            )

    def store_answered(self) -> None:
        if self._down:
            self._down = False
            _log.info("llmguard: the budget store answers again; budgets apply")

    def refuse_on_store_error(self, exc: StoreUnavailable, doing: str) -> StoreUnavailable:
        return StoreUnavailable(
            exc.store,
            f"a budget could not {doing}, so the call was refused (on_store_error='closed'; "
            "'open' lets calls through while the store is down)",
        )

    # -- prices ------------------------------------------------------------------------

    def unknown_price(self, model: str, provider: str | None) -> Price | None:
        """Apply ``on_unknown_price``: raise, warn once per model (``None``), or a Price."""
        policy = self.on_unknown_price
        if isinstance(policy, Price):
            return policy
        if policy == "refuse":
            raise UnknownPrice(model, provider=provider)
        if model not in self._warned_models:
            self._warned_models.add(model)
            _log.warning(
                "llmguard: no price is known for model %r; its calls count against token "
                "limits only, not dollar limits (on_unknown_price='warn')",
                model,
            )
        return None

    def cost(
        self,
        model: str,
        usage: Usage,
        *,
        provider: str | None,
        tier: str | None,
        strict: bool = True,
    ) -> Decimal | None:
        """The dollars of ``usage`` on ``model``, after the unknown-price policy.

        ``strict`` (before a call) applies the whole policy: it may raise or warn.
        After a call only a default ``Price`` applies: nothing is raised once the call
        has happened.
        """
        dollars = self.pricing.cost(model, usage, provider=provider, service_tier=tier)
        if dollars is not None or not self.has_usd:
            return dollars
        if strict:
            price = self.unknown_price(model, provider)
        else:
            policy = self.on_unknown_price
            price = policy if isinstance(policy, Price) else None
        return None if price is None else price.cost(usage)

    def worst(self, request: Request, *, provider: str | None) -> tuple[Usage, int, int | None]:
        """An attempt's worst case: its usage, its tokens and its micro-dollars."""
        output = request.max_output_tokens or self.max_output_tokens
        usage = Usage(input_tokens=self.estimator.count(request), output_tokens=output)
        micros = None
        if self.has_usd:
            micros = self.worst_micros(request.model, usage, provider, service_tier(request))
        return usage, usage.total_tokens, micros

    def worst_micros(
        self, model: str, usage: Usage, provider: str | None, tier: str | None
    ) -> int | None:
        # Reasoning may be priced apart: the worst case is the dearer way to spend output.
        pricing = self.pricing
        dollars = pricing.worst_cost(model, usage, provider=provider, service_tier=tier)
        if dollars is None:
            price = self.unknown_price(model, provider)  # raises, warns or a default
            if price is None:
                return None
            dollars = pricing.worst_cost(
                model, usage, provider=provider, service_tier=tier, default=price
            )
        return None if dollars is None else to_micros(dollars)

    # -- one call ----------------------------------------------------------------------

    async def open(
        self,
        state: CallState | None,
        request: Request | None,
        *,
        worst: Usage | None = None,
        model: str | None = None,
    ) -> Ticket:
        """Reserve the first attempt's worst case on every line, or raise.

        For a request, the worst case is estimated (and ``max_output_tokens`` is set on
        the request that goes inward when it had none); else ``worst`` is given (the
        decorator form) and priced as ``model``.
        """
        provider = state.provider if state is not None else None
        if not self.pricing.loaded:
            await self.pricing.load()  # in a worker thread, the first time
        if request is not None:
            if not self.estimator.ready(request.model):
                await self.estimator.prepare(request.model)
            if request.max_output_tokens is None:
                request = replace(request, max_output_tokens=self.max_output_tokens)
            _, tokens, micros = self.worst(request, provider=provider)
            model = request.model
        else:
            assert worst is not None
            tokens, micros = worst.total_tokens, None
            if self.has_usd and model is not None:
                micros = self.worst_micros(model, worst, provider, None)
        from ._budget_ticket import Ticket

        ticket = Ticket(self, state, request, model, provider)
        await ticket.reserve(tokens, micros)
        return ticket

"""What a call costs: ``Price`` (a model's prices) and ``Pricing`` (where prices come from).

Money is held as integer micro-dollars (``cost_micros``) everywhere it is stored or
compared, so SQLite, Lua and Python agree to the unit; ``Decimal`` dollars appear only
at the edges (``Price`` fields, ``Pricing.cost``). A cost is rounded *up* to the next
micro-dollar, once per call, so a budget never undercharges. An unknown price is
``None``, never 0: the budget's ``on_unknown_price`` decides what that means.

Prices come from, in order: the user's table (``Pricing(prices={...})``: exact model
names first, then shell-style patterns such as ``"llama-3*"``), then the genai-prices
database bundled with the ``genai-prices`` package (imported on first use, in a worker
thread by ``await pricing.load()``; no network: llmguard never asks genai-prices to
fetch updates).
"""

from __future__ import annotations

import fnmatch
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import anyio.to_thread

from ._cost_db import Rate, load_database, resolve
from ._errors import ConfigurationError
from ._types import Request, Response, Usage

__all__ = ["Price", "Pricing", "service_tier", "to_micros"]

_MICROS = Decimal(1_000_000)
_PER_MILLION = Decimal(1_000_000)
Money = Decimal | int | float | str


def _money(value: Money, field: str) -> Decimal:
    """A non-negative, finite ``Decimal`` from a ``Decimal``, ``int``, ``float`` or ``str``.

    A float is read as the digits it prints as (``0.15`` is ``Decimal("0.15")``, not
    the binary fraction ``0.1499999...``).
    """
    if isinstance(value, bool) or not isinstance(value, Decimal | int | float | str):
        raise ConfigurationError(f"{field} must be a Decimal, int, float or str, not {value!r}")
    try:
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except ArithmeticError:
        raise ConfigurationError(f"{field} is not a number: {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ConfigurationError(f"{field} must be a finite, non-negative amount, not {value!r}")
    return amount


def to_micros(dollars: Decimal) -> int:
    """US dollars as integer micro-dollars, rounded up (a budget never undercharges)."""
    return math.ceil(dollars * _MICROS)


def service_tier(request: Request | None, response: Response | None = None) -> str | None:
    """The service tier a price depends on: the response's, else the one requested."""
    tier = None
    raw = response.raw if response is not None else None
    if isinstance(raw, dict):
        tier = raw.get("service_tier")
    elif raw is not None:
        tier = getattr(raw, "service_tier", None)
    if not isinstance(tier, str) and request is not None and request.extras:
        tier = request.extras.get("service_tier")
    return tier if isinstance(tier, str) and tier != "auto" else None


@dataclass(frozen=True, slots=True, init=False, repr=False)
class Price:
    """A model's prices in US dollars per million tokens (``per_request``: per call).

    >>> Price(input="0.20", output="0.60").cost(Usage(input_tokens=1000, output_tokens=500))
    Decimal('0.0005')

    ``input`` applies to input tokens that were not cached, ``cached_input`` to cached
    ones (default: the ``input`` price), ``output`` to output tokens that were not
    reasoning and ``reasoning`` to reasoning tokens (default: the ``output`` price), as
    genai-prices counts them. Amounts are ``Decimal``, ``int``, ``str`` or ``float``
    (read as the digits it prints as: ``0.15`` is exactly ``Decimal("0.15")``).
    """

    input: Decimal
    output: Decimal
    cached_input: Decimal | None
    reasoning: Decimal | None
    per_request: Decimal

    def __init__(
        self,
        *,
        input: Money,
        output: Money,
        cached_input: Money | None = None,
        reasoning: Money | None = None,
        per_request: Money = 0,
    ) -> None:
        set_ = object.__setattr__
        set_(self, "input", _money(input, "input"))
        set_(self, "output", _money(output, "output"))
        set_(self, "cached_input", None if cached_input is None else _money(cached_input, "cached"))
        set_(self, "reasoning", None if reasoning is None else _money(reasoning, "reasoning"))
        set_(self, "per_request", _money(per_request, "per_request"))

    def __repr__(self) -> str:
        parts = [f"input={str(self.input)!r}", f"output={str(self.output)!r}"]
        for name in ("cached_input", "reasoning"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={str(value)!r}")
        if self.per_request:
            parts.append(f"per_request={str(self.per_request)!r}")
        return f"Price({', '.join(parts)})"

    @property
    def reasoning_dearer(self) -> bool:
        """Whether reasoning output costs more than other output."""
        return self.reasoning is not None and self.reasoning > self.output

    def cost(self, usage: Usage) -> Decimal:
        """The price of ``usage`` in US dollars (exact ``Decimal``)."""
        cached = min(usage.cached_input_tokens, usage.input_tokens)
        reasoning = min(usage.reasoning_tokens, usage.output_tokens)
        cached_price = self.input if self.cached_input is None else self.cached_input
        reasoning_price = self.output if self.reasoning is None else self.reasoning
        per_million = (
            self.input * (usage.input_tokens - cached)
            + cached_price * cached
            + self.output * (usage.output_tokens - reasoning)
            + reasoning_price * reasoning
        )
        return per_million / _PER_MILLION + self.per_request


_Resolved = Price | Rate | None
#: Prices resolved per (model, provider, service tier) are kept, at most this many.
_CACHED_PRICES = 1024
_UNRESOLVED = object()


class Pricing:
    """Where prices come from: your table first, then the genai-prices database.

    >>> pricing = Pricing(prices={"my-llama": Price(input="0.10", output="0.10")})
    >>> pricing.cost_micros("my-llama", Usage(input_tokens=10_000, output_tokens=5_000))
    1500

    Args:
        prices: model name (exact, or a shell-style pattern such as ``"llama-3*"``) to
            ``Price``. Overrides the database and adds models it lacks (self-hosted,
            negotiated prices). Exact names win over patterns; patterns are tried in
            the order given.
        database: look models up in genai-prices' bundled database (default true).
        provider_id: the genai-prices provider to price every model as (for example
            ``"groq"`` or ``"azure"`` when an ``OpenAIProvider`` talks to them);
            default: the call's provider name when the database knows it, else the
            model is matched across all providers.

    Resolved prices are kept per model and service tier for an hour (database prices
    may change on a date), at most 1,024 of them.
    """

    __slots__ = ("_cache", "_database", "_exact", "_lock", "_patterns", "_provider_id", "_use_db")

    def __init__(
        self,
        prices: Mapping[str, Price] | None = None,
        *,
        database: bool = True,
        provider_id: str | None = None,
    ) -> None:
        self._exact: dict[str, Price] = {}
        self._patterns: list[tuple[str, Price]] = []
        for name, price in (prices or {}).items():
            if not isinstance(price, Price):
                raise ConfigurationError(f"the price of {name!r} must be a Price, not {price!r}")
            if any(c in name for c in "*?["):
                self._patterns.append((name, price))
            else:
                self._exact[name] = price
        self._use_db = database
        self._provider_id = provider_id
        self._database: Any = None
        self._cache: dict[tuple[str, str | None, str | None], _Resolved] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        table = len(self._exact) + len(self._patterns)
        return f"Pricing(prices=<{table} models>, database={self._use_db!r})"

    @property
    def loaded(self) -> bool:
        """Whether prices can be read without loading anything (``load`` has run)."""
        return not self._use_db or self._database is not None

    async def load(self) -> None:
        """Load the price database in a worker thread (once; a no-op afterwards)."""
        if self._use_db and self._database is None:
            self._database = await anyio.to_thread.run_sync(load_database)

    def _db(self) -> Any:
        if self._database is None:
            self._database = load_database()  # sync callers: blocks once
        return self._database

    def _resolve(self, model: str, provider: str | None, service_tier: str | None) -> _Resolved:
        key = (model, provider, service_tier)
        found = self._cache.get(key, _UNRESOLVED)  # a plain dict: read without the lock
        if found is not _UNRESOLVED:
            return found  # type: ignore[return-value]
        found = self._lookup(model, provider, service_tier)
        with self._lock:
            cache = self._cache
            while len(cache) >= _CACHED_PRICES:  # the oldest first
                del cache[next(iter(cache))]
            cache[key] = found
        return found

    def _lookup(self, model: str, provider: str | None, service_tier: str | None) -> _Resolved:
        price = self._exact.get(model)
        if price is not None:
            return price
        for pattern, price in self._patterns:
            if fnmatch.fnmatchcase(model, pattern):
                return price
        if not self._use_db or not model:
            return None
        return resolve(
            self._db(),
            model,
            provider=provider,
            service_tier=service_tier,
            forced_provider=self._provider_id,
        )

    def price_of(
        self, model: str, *, provider: str | None = None, service_tier: str | None = None
    ) -> Price | None:
        """Your ``Price`` for ``model``, or ``None`` when it comes from the database or is
        unknown (use ``knows`` to ask whether any price is known)."""
        resolved = self._resolve(model, provider, service_tier)
        return resolved if isinstance(resolved, Price) else None

    def knows(
        self, model: str, *, provider: str | None = None, service_tier: str | None = None
    ) -> bool:
        """Whether a price for ``model`` is known (in your table or the database)."""
        return self._resolve(model, provider, service_tier) is not None

    def cost(
        self,
        model: str,
        usage: Usage,
        *,
        provider: str | None = None,
        service_tier: str | None = None,
    ) -> Decimal | None:
        """The price of ``usage`` on ``model`` in US dollars; ``None`` when unknown.

        ``service_tier`` selects a tier's prices where the database has them
        (OpenAI's ``"flex"``, ``"priority"``...).
        """
        resolved = self._resolve(model, provider, service_tier)
        if resolved is None:
            return None
        return resolved.cost(usage)

    def worst_cost(
        self,
        model: str,
        usage: Usage,
        *,
        provider: str | None = None,
        service_tier: str | None = None,
        default: Price | None = None,
    ) -> Decimal | None:
        """The most ``usage`` can cost: its output priced as reasoning output when that is
        dearer (a worst case before a call). ``default`` prices an unknown model."""
        resolved = self._resolve(model, provider, service_tier) or default
        if resolved is None:
            return None
        plain = resolved.cost(usage)
        if plain is None or not resolved.reasoning_dearer:
            return plain
        dearer = resolved.cost(replace(usage, reasoning_tokens=usage.output_tokens))
        return plain if dearer is None else max(plain, dearer)

    def cost_micros(
        self,
        model: str,
        usage: Usage,
        *,
        provider: str | None = None,
        service_tier: str | None = None,
    ) -> int | None:
        """``cost`` in integer micro-dollars, rounded up; ``None`` when unknown."""
        dollars = self.cost(model, usage, provider=provider, service_tier=service_tier)
        return None if dollars is None else to_micros(dollars)

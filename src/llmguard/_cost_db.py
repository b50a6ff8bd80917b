"""Prices from the genai-prices database, resolved once per model and tier.

``genai_prices.calc_price`` takes about 250 µs a call (model matching and a general
unit decomposition). llmguard prices every call twice or more (the worst case before,
the real usage after), so it resolves a model's prices once and keeps them: a
``Rate`` holds the model's ``ModelPrice`` for one service tier. When the price has
only the keys llmguard's ``Usage`` can feed (input, cached input, output, reasoning
output, per request, plus keys of units a chat call never reports, such as web
searches), the rate computes the cost itself with the same arithmetic as
genai-prices (tests check the two agree on every model in the database); otherwise
it hands the usage to genai-prices' own calculation.

This module imports ``genai_prices`` when first used, never at ``import llmguard``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ._types import Usage

if TYPE_CHECKING:
    from genai_prices.types import ModelPrice

__all__ = ["Rate", "load_database", "resolve"]

_log = logging.getLogger("llmguard.cost")

#: The token price keys our ``Usage`` feeds; any other ``*_mtok`` key needs genai-prices.
_FAST_KEYS = frozenset({"input_mtok", "output_mtok", "cache_read_mtok", "output_reasoning_mtok"})
_PER_MILLION = Decimal(1_000_000)
_PER_THOUSAND = Decimal(1_000)
_ZERO = Decimal(0)


def load_database() -> Any:
    """Import genai-prices and its bundled data (blocking: about 0.3 s the first time)."""
    from genai_prices import data_snapshot

    return data_snapshot.get_snapshot()


def _pick(price: Any, input_tokens: int) -> Decimal:
    """A plain price, or the tier that ``input_tokens`` falls in (genai-prices' cliff rule)."""
    if price is None:
        return Decimal(0)
    if isinstance(price, Decimal):
        return price
    applicable: Decimal = price.base
    for tier in reversed(price.tiers):
        if input_tokens > tier.start:
            applicable = tier.price
            break
    return applicable


_Plain = tuple[Decimal, Decimal, Decimal | None, Decimal | None, Decimal | None]
"""Input, output, cached input, reasoning output (per million tokens), per thousand
requests: a price with no tiers (``None``: not priced apart)."""


def _plain(prices: ModelPrice) -> _Plain | None:
    """The prices as plain numbers, when none of them has tiers."""
    values = vars(prices)
    found = [
        values.get(key)
        for key in ("input_mtok", "output_mtok", "cache_read_mtok", "output_reasoning_mtok")
    ]
    found.append(values.get("requests_kcount"))
    if any(value is not None and not isinstance(value, Decimal) for value in found):
        return None
    input_price, output_price, cache, reasoning, requests = found
    return (input_price or _ZERO, output_price or _ZERO, cache, reasoning, requests)


@dataclass(frozen=True, slots=True)
class Rate:
    """One model's prices from the database, for one service tier."""

    model_id: str
    provider_id: str
    prices: ModelPrice
    fast: bool
    plain: _Plain | None = field(default=None, compare=False, repr=False)

    @property
    def reasoning_dearer(self) -> bool:
        """Whether reasoning output may cost more than other output (when the price has a
        reasoning price at all; the caller then compares both ways)."""
        if self.plain is not None:
            return self.plain[3] is not None
        return not self.fast or vars(self.prices).get("output_reasoning_mtok") is not None

    def cost(self, usage: Usage) -> Decimal | None:
        """The price of ``usage`` in US dollars (``None`` if genai-prices cannot compute it)."""
        plain = self.plain
        if plain is not None:  # the arithmetic below, without tiers to pick from
            input_price, output_price, cache_price, reasoning_price, requests = plain
            total_input = usage.input_tokens
            output = usage.output_tokens
            cached = min(usage.cached_input_tokens, total_input)
            uncached = total_input - cached if cache_price is not None else total_input
            reasoning = min(usage.reasoning_tokens, output) if reasoning_price is not None else 0
            per_million = input_price * uncached + output_price * (output - reasoning)
            if cache_price is not None:
                per_million += cache_price * cached
            if reasoning_price is not None:
                per_million += reasoning_price * reasoning
            total = per_million / _PER_MILLION
            return total if requests is None else total + requests / _PER_THOUSAND
        if not self.fast:
            return self._slow(usage)
        values = vars(self.prices)
        total_input = usage.input_tokens
        cached = min(usage.cached_input_tokens, total_input)
        cache_price = values.get("cache_read_mtok")
        reasoning_price = values.get("output_reasoning_mtok")
        uncached = total_input - cached if cache_price is not None else total_input
        output = usage.output_tokens
        reasoning = min(usage.reasoning_tokens, output) if reasoning_price is not None else 0
        per_million = _pick(values.get("input_mtok"), total_input) * uncached
        per_million += _pick(values.get("output_mtok"), total_input) * (output - reasoning)
        if cache_price is not None:
            per_million += _pick(cache_price, total_input) * cached
        if reasoning_price is not None:
            per_million += _pick(reasoning_price, total_input) * reasoning
        total = per_million / _PER_MILLION
        requests = values.get("requests_kcount")
        if requests is not None:
            total += _pick(requests, total_input) / _PER_THOUSAND
        return total

    def _slow(self, usage: Usage) -> Decimal | None:
        from genai_prices import Usage as PriceUsage

        counts = PriceUsage(
            input_tokens=usage.input_tokens,
            cache_read_tokens=usage.cached_input_tokens,
            output_tokens=usage.output_tokens,
            output_reasoning_tokens=usage.reasoning_tokens,
        )
        try:
            result: Decimal = self.prices.calc_price(counts)["total_price"]
        except ValueError as exc:  # usage the price's units cannot split (bad figures)
            _log.debug("genai-prices could not price %s: %s", self.model_id, exc)
            return None
        return result


def _is_fast(prices: ModelPrice) -> bool:
    for key, value in vars(prices).items():
        if value is None or key.startswith("_"):
            continue
        if key.endswith("_mtok") and key not in _FAST_KEYS:
            return False
    return True


def _only_listing(database: Any, model: str) -> tuple[Any, Any] | None:
    """The provider listing ``model`` when the name alone does not point to one
    (``"text-embedding-3-small"``): used only when every provider listing it charges
    the same, so the answer does not depend on which one is picked."""
    now = datetime.now(tz=UTC)
    found = [
        (provider, info)
        for provider in database.providers
        if (info := provider.find_model(model, all_providers=database.providers)) is not None
    ]
    if not found:
        return None
    first = found[0][1].get_prices(now)
    if all(info.get_prices(now) == first for _, info in found[1:]):
        return found[0]
    return None


def resolve(
    database: Any,
    model: str,
    *,
    provider: str | None,
    service_tier: str | None,
    forced_provider: str | None,
) -> Rate | None:
    """The database's rate for ``model`` (``None`` when the database has no price).

    ``forced_provider`` (a genai-prices provider id) wins. Otherwise ``provider`` is
    tried as a provider id; when the database has no such provider (``"fake"``, a
    function's name) the model is matched across all providers. A provider the
    database knows but without this model gives ``None``: a self-hosted model behind
    an OpenAI-compatible server is not priced as OpenAI's.
    """
    provider_id = forced_provider or provider
    found: tuple[Any, Any] | None = None
    if provider_id:
        try:
            found = database.find_provider_model(model, None, provider_id, None)
        except LookupError:
            known = any(p.id == provider_id.lower() for p in database.providers)
            if forced_provider or known:
                return None
    if found is None:
        try:
            found = database.find_provider_model(model, None, None, None)
        except LookupError:
            found = _only_listing(database, model)
            if found is None:
                return None
    db_provider, info = found
    now = datetime.now(tz=UTC)
    context = {"service_tier": service_tier} if service_tier else None
    # genai-prices applies tier variants only to a provider's own models (not to a
    # model it borrows from another provider's list): do the same.
    if context and not any(info is m for m in db_provider.models):
        context = None
    prices = info.get_prices(now, context)
    fast = _is_fast(prices)
    return Rate(
        model_id=info.id,
        provider_id=db_provider.id,
        prices=prices,
        fast=fast,
        plain=_plain(prices) if fast else None,
    )

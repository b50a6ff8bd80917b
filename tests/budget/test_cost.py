"""Prices: the user's table, genai-prices' database, tiers, and agreement with genai-prices."""

from __future__ import annotations

import random
from decimal import ROUND_CEILING, Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price
from genai_prices.data_snapshot import get_snapshot

from llmguard import ConfigurationError, Price, Pricing, Request, Response, Usage
from llmguard._cost import service_tier, to_micros
from llmguard._cost_db import Rate, resolve


def genai(model: str, usage: Usage, provider: str | None = None, **kw: Any) -> Decimal:
    """genai-prices' own figure for the same usage."""
    counts = PriceUsage(
        input_tokens=usage.input_tokens,
        cache_read_tokens=usage.cached_input_tokens,
        output_tokens=usage.output_tokens,
        output_reasoning_tokens=usage.reasoning_tokens,
    )
    total: Decimal = calc_price(counts, model, provider_id=provider, **kw).total_price
    return total


def micros(dollars: Decimal) -> int:
    return int((dollars * 1_000_000).to_integral_value(rounding=ROUND_CEILING))


# -- Price (the user's table) -----------------------------------------------------------


def test_price_arithmetic_splits_cached_and_reasoning_parts() -> None:
    price = Price(input="2.00", output="8.00", cached_input="0.50", reasoning="3.00")
    usage = Usage(
        input_tokens=1000, cached_input_tokens=400, output_tokens=500, reasoning_tokens=200
    )
    # 600 uncached x 2 + 400 cached x 0.5 + 300 output x 8 + 200 reasoning x 3, per million
    assert price.cost(usage) == Decimal(600 * 2 + 200 + 300 * 8 + 200 * 3) / 1_000_000
    assert price.cost(usage) == Decimal("0.0044")
    # Without part prices, the parts cost what the whole does.
    plain = Price(input=2, output=8)
    assert plain.cost(usage) == Decimal(1000 * 2 + 500 * 8) / 1_000_000


def test_price_agrees_with_genai_prices_model_price_arithmetic() -> None:
    from genai_prices.types import ModelPrice

    rng = random.Random(7)
    for _ in range(200):
        inp, out, cache, reason, per_request = (
            Decimal(rng.randint(0, 5000)) / 100 for _ in range(5)
        )
        ours = Price(
            input=inp, output=out, cached_input=cache, reasoning=reason, per_request=per_request
        )
        theirs = ModelPrice(
            input_mtok=inp,
            output_mtok=out,
            cache_read_mtok=cache,
            output_reasoning_mtok=reason,
            requests_kcount=per_request * 1000,
        )
        total_in, total_out = rng.randint(0, 200_000), rng.randint(0, 50_000)
        usage = Usage(
            input_tokens=total_in,
            cached_input_tokens=rng.randint(0, total_in),
            output_tokens=total_out,
            reasoning_tokens=rng.randint(0, total_out),
        )
        counts = PriceUsage(
            input_tokens=usage.input_tokens,
            cache_read_tokens=usage.cached_input_tokens,
            output_tokens=usage.output_tokens,
            output_reasoning_tokens=usage.reasoning_tokens,
        )
        assert ours.cost(usage) == theirs.calc_price(counts)["total_price"]


def test_price_takes_exact_amounts_and_refuses_nonsense() -> None:
    assert Price(input=0.15, output=0.6).input == Decimal("0.15")  # the digits, not binary
    assert Price(input="0.15", output=1) == Price(input=Decimal("0.15"), output="1")
    assert repr(Price(input="1", output="2", cached_input="0.5")) == (
        "Price(input='1', output='2', cached_input='0.5')"
    )
    for bad in ("-1", "abc", "NaN", "Infinity", True, None):
        with pytest.raises(ConfigurationError):
            Price(input=bad, output=1)  # type: ignore[arg-type]
    price = Price(input=1, output=1)
    with pytest.raises(AttributeError):
        price.input = Decimal(2)  # type: ignore[misc]  # frozen
    assert hash(price) == hash(Price(input="1", output="1.0"))


def test_micros_round_up_so_a_budget_never_undercharges() -> None:
    assert to_micros(Decimal("0.0000001")) == 1
    assert to_micros(Decimal("0.000001")) == 1
    assert to_micros(Decimal("0.0000011")) == 2
    assert to_micros(Decimal(0)) == 0
    assert to_micros(Decimal("25.00")) == 25_000_000


# -- Pricing: override table ----------------------------------------------------------


def test_override_table_beats_the_database_and_adds_models() -> None:
    usage = Usage(input_tokens=10_000, output_tokens=5_000)
    negotiated = Price(input="0.10", output="0.20")
    pricing = Pricing(
        prices={
            "gpt-4o-mini": negotiated,
            "my-llama-70b": Price(input=1, output=1),
            "llama-3*": Price(input=2, output=2),
        }
    )
    assert pricing.cost("gpt-4o-mini", usage) == negotiated.cost(usage)
    assert pricing.cost("gpt-4o-mini", usage) != genai("gpt-4o-mini", usage, "openai")
    assert pricing.cost_micros("my-llama-70b", usage) == 15_000
    assert pricing.cost_micros("llama-3.1-8b", usage) == 30_000  # a pattern
    assert pricing.price_of("llama-3.1-8b") == Price(input=2, output=2)
    assert pricing.price_of("gpt-4o") is None  # from the database: not a Price of yours
    assert pricing.knows("gpt-4o") and not pricing.knows("my-unknown-model")
    with pytest.raises(ConfigurationError):
        Pricing(prices={"m": 1.5})  # type: ignore[dict-item]


def test_unknown_model_is_none_never_zero() -> None:
    with pytest.raises(LookupError):  # genai-prices itself has no figure for it
        genai("no-such-model-anywhere", Usage(input_tokens=10))
    pricing = Pricing()
    assert pricing.cost("no-such-model-anywhere", Usage(input_tokens=10)) is None
    assert pricing.cost_micros("no-such-model-anywhere", Usage(input_tokens=10)) is None
    assert pricing.cost("", Usage(input_tokens=10)) is None
    assert Pricing(database=False).cost("gpt-4o", Usage(input_tokens=10)) is None


def test_a_known_provider_without_the_model_is_unknown_not_priced_elsewhere() -> None:
    # A self-hosted llama behind OpenAIProvider must not be priced as some vendor's llama.
    pricing = Pricing()
    assert (
        pricing.cost("llama-3.3-70b-versatile", Usage(input_tokens=1000), provider="openai") is None
    )
    assert pricing.cost("llama-3.3-70b-versatile", Usage(input_tokens=1000), provider="groq")
    # An unknown provider name (a function, "fake") matches the model across providers.
    assert pricing.cost("gpt-4o", Usage(input_tokens=1000), provider="fake") == genai(
        "gpt-4o", Usage(input_tokens=1000), "openai"
    )
    forced = Pricing(provider_id="groq")
    assert forced.cost("gpt-4o", Usage(input_tokens=1000)) is None


# -- Pricing: the database, against genai-prices' own figures ----------------------------


def test_cached_token_discount_matches_genai_prices() -> None:
    usage = Usage(input_tokens=10_000, cached_input_tokens=8_000, output_tokens=1_000)
    pricing = Pricing()
    ours = pricing.cost("gpt-4o-mini", usage, provider="openai")
    assert ours == genai("gpt-4o-mini", usage, "openai")
    without_cache = pricing.cost("gpt-4o-mini", Usage(input_tokens=10_000, output_tokens=1_000))
    assert ours is not None and without_cache is not None and ours < without_cache


def test_reasoning_tokens_match_genai_prices() -> None:
    pricing = Pricing()
    usage = Usage(input_tokens=2_000, output_tokens=5_000, reasoning_tokens=4_000)
    # o3-mini prices reasoning as output: reasoning is inside output_tokens, not added.
    assert pricing.cost("o3-mini", usage, provider="openai") == genai("o3-mini", usage, "openai")
    assert pricing.cost("o3-mini", usage) == pricing.cost(
        "o3-mini", Usage(input_tokens=2_000, output_tokens=5_000)
    )
    # Sonar Deep Research prices reasoning apart ($3 vs $8 per million output).
    deep = pricing.cost("sonar-deep-research", usage, provider="perplexity")
    assert deep == genai("sonar-deep-research", usage, "perplexity")
    assert deep == (Decimal(2_000 * 2 + 1_000 * 8 + 4_000 * 3)) / 1_000_000


def test_per_request_prices_match_genai_prices() -> None:
    usage = Usage(input_tokens=1_000, output_tokens=500)
    assert Pricing().cost("sonar", usage, provider="perplexity") == genai(
        "sonar", usage, "perplexity"
    )


def test_service_tier_selects_the_tier_price() -> None:
    pricing = Pricing()
    usage = Usage(input_tokens=100_000, output_tokens=10_000)
    standard = pricing.cost("gpt-5", usage, provider="openai")
    flex = pricing.cost("gpt-5", usage, provider="openai", service_tier="flex")
    priority = pricing.cost("gpt-5", usage, provider="openai", service_tier="priority")
    assert flex == genai("gpt-5", usage, "openai", price_context={"service_tier": "flex"})
    assert priority == genai("gpt-5", usage, "openai", price_context={"service_tier": "priority"})
    assert flex is not None and standard is not None and priority is not None
    assert flex < standard < priority


def test_service_tier_is_read_from_the_response_then_the_request() -> None:
    request = Request.create(model="m", user="hi", extras={"service_tier": "flex"})
    assert service_tier(request) == "flex"
    raw = SimpleNamespace(service_tier="priority")
    assert service_tier(request, Response(raw=raw)) == "priority"
    assert service_tier(request, Response(raw={"service_tier": "default"})) == "default"
    assert service_tier(Request.create(model="m", extras={"service_tier": "auto"})) is None
    assert service_tier(None, Response()) is None


def every_database_model() -> list[tuple[str, str]]:
    snapshot = get_snapshot()
    return [(provider.id, model.id) for provider in snapshot.providers for model in provider.models]


def test_every_database_model_costs_what_genai_prices_says() -> None:
    """The fast path (our own arithmetic) and genai-prices' calculation agree, to the
    Decimal, on every model in the database, for usages with cached and reasoning parts
    and sizes past the long-context tiers."""
    snapshot = get_snapshot()
    rng = random.Random(2024)
    checked = fast = 0
    for provider_id, model_id in every_database_model():
        rate = resolve(
            snapshot, model_id, provider=provider_id, service_tier=None, forced_provider=None
        )
        if rate is None:
            continue  # matched another model first (aliases); that model is checked itself
        assert isinstance(rate, Rate)
        fast += rate.fast
        for _ in range(3):
            total_in = rng.choice([0, 1, 1_000, 150_000, 300_000, 1_500_000])
            total_out = rng.randint(0, 60_000)
            usage = Usage(
                input_tokens=total_in,
                cached_input_tokens=rng.randint(0, total_in),
                output_tokens=total_out,
                reasoning_tokens=rng.randint(0, total_out),
            )
            counts = PriceUsage(
                input_tokens=usage.input_tokens,
                cache_read_tokens=usage.cached_input_tokens,
                output_tokens=usage.output_tokens,
                output_reasoning_tokens=usage.reasoning_tokens,
            )
            try:
                theirs = rate.prices.calc_price(counts)["total_price"]
            except ValueError:
                continue  # usage this price's units cannot split
            assert rate.cost(usage) == theirs, (provider_id, model_id, usage)
            checked += 1
    assert checked > 1000 and fast > 500


def test_pricing_keeps_resolved_rates() -> None:
    pricing = Pricing()
    usage = Usage(input_tokens=1_000, output_tokens=100)
    first = pricing.cost("gpt-4o", usage, provider="openai")
    assert pricing.cost("gpt-4o", usage, provider="openai") == first
    assert len(pricing._cache) == 1
    assert repr(pricing) == "Pricing(prices=<0 models>, database=True)"


@pytest.mark.anyio
async def test_load_reads_the_database_in_a_worker_thread() -> None:
    pricing = Pricing()
    assert pricing._database is None
    await pricing.load()
    assert pricing._database is not None
    await pricing.load()  # once
    off = Pricing(database=False)
    await off.load()
    assert off._database is None
    assert micros(genai("gpt-4o", Usage(input_tokens=1))) == pricing.cost_micros(
        "gpt-4o", Usage(input_tokens=1)
    )


def test_a_model_listed_by_one_price_everywhere_is_priced_and_an_ambiguous_one_is_not() -> None:
    pricing = Pricing()
    usage = Usage(input_tokens=50_000)
    # The name matches no provider's pattern, but every provider listing it charges the same.
    assert pricing.cost("text-embedding-3-small", usage) == genai(
        "text-embedding-3-small", usage, "openai"
    )
    # Listed by several providers at different prices: which one is meant is unknown.
    assert pricing.cost("deepseek/deepseek-v4-pro", usage) is None
    assert pricing.cost("deepseek/deepseek-v4-pro", usage, provider="openrouter") == genai(
        "deepseek/deepseek-v4-pro", usage, "openrouter"
    )


def test_worst_cost_prices_output_the_dearer_way() -> None:
    usage = Usage(input_tokens=1_000, output_tokens=1_000)
    dear_reasoning = Price(input=1, output=2, reasoning=5)
    pricing = Pricing({"thinker": dear_reasoning})
    assert pricing.worst_cost("thinker", usage) == Decimal(1_000 + 5_000) / 1_000_000
    # Sonar Deep Research prices reasoning below other output: the plain way is dearer.
    plain = pricing.cost("sonar-deep-research", usage, provider="perplexity")
    assert pricing.worst_cost("sonar-deep-research", usage, provider="perplexity") == plain
    assert pricing.worst_cost("gpt-4o-mini", usage) == pricing.cost("gpt-4o-mini", usage)
    assert pricing.worst_cost("nobody-prices-this", usage) is None
    fallback = Price(input=10, output=10)
    assert pricing.worst_cost("nobody-prices-this", usage, default=fallback) == Decimal("0.02")
    assert not Price(input=1, output=2, reasoning=1).reasoning_dearer

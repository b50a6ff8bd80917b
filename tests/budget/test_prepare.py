"""``Budget.prepare``: the price database and the token counting decided at start-up."""

from __future__ import annotations

import pytest

from llmguard import Budget, Limit, MemoryStore, Pricing

pytestmark = pytest.mark.anyio


async def test_prepare_loads_prices_and_decides_each_models_counting() -> None:
    budget = Budget(Limit(usd="5", per="day"), store=MemoryStore(), pricing=Pricing())
    estimator = budget._engine.estimator
    assert not budget.pricing.loaded
    assert not estimator.ready("gpt-4o-mini")
    await budget.prepare("gpt-4o-mini", "gpt-4.1-nano")
    assert budget.pricing.loaded
    assert estimator.ready("gpt-4o-mini") and estimator.ready("gpt-4.1-nano")
    assert not estimator.ready("gpt-4o")  # only the models named
    await budget.prepare("gpt-4o-mini")  # again: nothing left to do, no error


async def test_prepare_without_models_loads_the_prices_only() -> None:
    budget = Budget(Limit(tokens=1000, per="hour"), store=MemoryStore(), input_tokens="heuristic")
    await budget.prepare()
    assert budget.pricing.loaded
    assert budget._engine.estimator.ready("any-model")  # the heuristic needs nothing

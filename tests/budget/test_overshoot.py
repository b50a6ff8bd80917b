"""The overshoot bound: 50 concurrent calls whose worst cases together exceed the limit
never admit more worst case than the limit, in every one of 20 runs, on every store."""

from __future__ import annotations

import random

import anyio
import pytest

from llmguard import (
    Budget,
    BudgetExceeded,
    FunctionProvider,
    Guard,
    Limit,
    Pricing,
    Request,
    Response,
    Usage,
)
from llmguard._budget_estimate import heuristic_input_tokens

from .conftest import Harness

pytestmark = pytest.mark.anyio

CALLS = 50
RUNS = 20
LIMIT = 2_000


async def one_run(harness: Harness, rng: random.Random, run: int) -> tuple[int, int, int]:
    """Returns (largest admitted total in flight, worst cases refused, the largest worst case)."""
    requests = [
        Request.create(
            model="m", user="q" * rng.randint(1, 200), max_output_tokens=rng.randint(20, 200)
        )
        for _ in range(CALLS)
    ]
    worst = [heuristic_input_tokens(r) + (r.max_output_tokens or 0) for r in requests]
    assert sum(worst) > LIMIT  # together they do not fit
    decided = 0
    everyone_decided = anyio.Event()
    in_flight = 0
    peak = 0
    refused: list[int] = []

    def decide() -> None:
        nonlocal decided
        decided += 1
        if decided == CALLS:
            everyone_decided.set()

    async def answer(request: Request) -> Response:
        nonlocal in_flight, peak
        cost = heuristic_input_tokens(request) + (request.max_output_tokens or 0)
        in_flight += cost
        peak = max(peak, in_flight)
        decide()
        await everyone_decided.wait()  # nobody settles before every call was admitted or refused
        in_flight -= cost
        spent = rng.randint(1, request.max_output_tokens or 1)  # real usage: at most the worst
        return Response(
            text="ok",
            usage=Usage(input_tokens=heuristic_input_tokens(request), output_tokens=spent),
        )

    budget = Budget(
        Limit(tokens=LIMIT, per="hour", name=f"run{run}", alerts=()),
        store=harness.store,
        pricing=Pricing(database=False),
        input_tokens="heuristic",
    )
    guard = Guard(FunctionProvider(answer), [budget], model="m", timeout=None)

    async def call(index: int) -> None:
        try:
            await guard.complete(requests[index])
        except BudgetExceeded:
            refused.append(worst[index])
            decide()

    async with anyio.create_task_group() as tg:
        for index in range(CALLS):
            tg.start_soon(call, index)
    (status,) = await budget.status()
    assert status.reserved == 0
    return peak, len(refused), min(refused) if refused else 0


async def test_admitted_worst_cases_never_exceed_the_limit(harness: Harness) -> None:
    rng = random.Random(f"overshoot-{harness.kind}")
    for run in range(RUNS):
        peak, refused, smallest_refused = await one_run(harness, rng, run)
        assert peak <= LIMIT, f"run {run}: {peak} admitted against a limit of {LIMIT}"
        assert refused > 0
        # Not refusing everything: what was refused did not fit in what was left.
        assert peak > LIMIT - smallest_refused, f"run {run}"

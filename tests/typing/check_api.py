"""Type-checked with ``mypy --strict`` in ``make test``: the API used as the docs use it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, assert_type

import llmguard
from llmguard import Guard, Observe, Request, Response, around, timeout
from llmguard.testing import FakeProvider


@dataclass
class Hit:
    doc: str


@timeout(2.0)
async def search(query: str, k: int) -> list[Hit]:
    return [Hit(doc=query)] * k


async def uses_search() -> None:
    hits = await search("q", 3)
    assert_type(hits, list[Hit])
    # The signature survives the decorator: a wrong argument is an error, and
    # warn_unused_ignores (on under --strict) fails the check if it is not.
    await search(1, "three")  # type: ignore[arg-type]


async def passthrough(call: llmguard.Invocation[int]) -> int:
    return await call.proceed()


async def uses_guard() -> None:
    guard = Guard(FakeProvider(["hi"]), [Observe()], model="m")
    response = await guard.complete(system="You are terse.", user="hello")
    assert_type(response, Response)
    async with guard.stream(user="hi") as events:
        async for event in events:
            assert_type(event, llmguard.StreamEvent)
    assert_type(guard.sync.complete(user="hi"), Response)
    request = Request.create(model="m", system="Literal instructions.", user="user text")
    assert_type(request, Request)


async def handler(request: Request) -> Response:
    return Response(text=request.last_user_text)


observed = Observe()(handler)
assert_type(observed, llmguard.Handler)
_ = around


async def full_text_fallback(call: llmguard.Invocation[list[Hit]]) -> list[Hit]:
    try:
        return await call.proceed()
    except llmguard.LLMGuardError:
        return [Hit(doc="from full-text search")]


@around(full_text_fallback)
async def semantic_search(query: str, k: int) -> list[Hit]:
    return [Hit(doc=query)] * k


def runs_in_asyncio_run() -> None:
    import asyncio

    hits = asyncio.run(semantic_search("q", 2))
    assert_type(hits, list[Hit])


# --- tools (docs/tools.md) ---------------------------------------------------------------


@llmguard.tool
async def typed_tool(city: str, days: int = 1) -> str:
    """Forecast."""
    return city * days


@llmguard.tool(name="renamed", timeout=5.0, safe_errors=(LookupError,))
def typed_sync_tool(order_id: int) -> dict[str, int]:
    """Look up."""
    return {"order_id": order_id}


async def use_tools(guard: llmguard.Guard) -> None:
    assert_type(await typed_tool("Oslo", 2), str)
    assert_type(typed_sync_tool(1), dict[str, int])
    box = llmguard.Toolbox([typed_tool, typed_sync_tool], max_concurrency=2)
    result = await guard.run_tools(user="hi", tools=box, max_steps=3)
    assert_type(result, llmguard.ToolRunResult)
    assert_type(result.tool_results, tuple[llmguard.ToolResult, ...])
    async with guard.run_tools_stream(user="hi", tools=[typed_tool]) as events:
        async for event in events:
            assert_type(event, llmguard.ToolLoopEvent)
    blocking = guard.sync.run_tools(user="hi", tools=box)
    assert_type(blocking, llmguard.ToolRunResult)


# --- degradation (docs/degradation.md) ----------------------------------------------------


async def full_text_search(query: str, k: int = 10) -> list[Hit]:
    return [Hit(doc=query)] * k


@llmguard.fallback(to=full_text_search)
@llmguard.circuit_breaker(consecutive_failures=5, reset_after=30)
@llmguard.retry(attempts=3)
@timeout(2.0)
async def embedding_search(query: str, k: int = 10) -> list[Hit]:
    return [Hit(doc=query)] * k


async def use_degradation() -> None:
    assert_type(await embedding_search("q", k=3), list[Hit])
    await embedding_search(3)  # type: ignore[arg-type]
    strategy = llmguard.retry_if_status(429, 503) | llmguard.retry_if_retryable()
    layers: list[llmguard.Layer] = [
        llmguard.Router([llmguard.Route(model="small", tags={"classify"})]),
        llmguard.Fallback(to=["backup", full_text_answer]),
        llmguard.CircuitBreaker(failure_rate=0.5, window=20),
        llmguard.Retry(attempts=3, retry=strategy, stop=llmguard.stop_after_total(10)),
    ]
    guard = Guard(FakeProvider(["hi"]), layers, model="m")
    assert_type(await guard.complete(user="hi"), Response)
    state: llmguard.CircuitState = await llmguard.CircuitBreaker().state("openai/gpt-4o")
    assert_type(state, llmguard.CircuitState)


async def full_text_answer(request: Request) -> Response:
    return Response(text="from the search index")


@llmguard.fallback(to=full_text_search)  # type: ignore[arg-type]
async def wrong_signature(query: str, k: int = 10) -> list[str]:
    return [query]


# -- budgets (issue 6) ------------------------------------------------------------------


@llmguard.budget(1_000, per="hour", scope="user", reserve=lambda query, k: k, usage=len)
async def budgeted_search(query: str, k: int) -> list[Hit]:
    return [Hit(doc=query)] * k


async def use_budgets() -> None:
    assert_type(await budgeted_search("q", 3), list[Hit])
    await budgeted_search(3, "q")  # type: ignore[arg-type]
    budget = llmguard.Budget(
        llmguard.Limit(tokens=50_000, per="hour", scope="user"),
        llmguard.Limit(usd="25.00", per="month", tz="Europe/Paris", scope=("tenant", "user")),
        pricing=llmguard.Pricing({"my-llama": llmguard.Price(input="0.2", output="0.6")}),
        on_unknown_price="warn",
    )
    guard = Guard(FakeProvider(["hi"]), [Observe(), budget], model="m")
    response = await guard.complete(user="hi")
    assert_type(response.cost_micros, int | None)
    for status in await budget.status():
        assert_type(status, llmguard.BudgetStatus)
    assert_type(await llmguard.budget_report(budget.store), list[llmguard.BudgetStatus])
    llmguard.Limit(tokens=1, per="fortnight")  # type: ignore[arg-type]


def lean_wire() -> None:
    provider = llmguard.OpenAIProvider(api_key="sk-x", wire="lean")
    assert_type(provider.wire, Literal["sdk", "lean"])
    llmguard.OpenAIProvider(api_key="sk-x", wire="fast")  # type: ignore[arg-type]

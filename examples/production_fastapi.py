"""The minimal production setup: one FastAPI app with every llmguard guard on.

- every call has a deadline: the Guard's total ``timeout`` (60 s) and per-attempt
  deadlines (``Deadlines``: 20 s an attempt; 10 s to a stream's first event and between
  events);
- per-user budgets on Redis (``RedisStore``), the caller read from a header by a
  FastAPI dependency; a refusal is a 429 with ``Retry-After``;
- a cache scoped per user; validated output (``guard.structured``) on ``/triage``;
- a fallback chain with retries and circuit breakers: the primary model, a cheaper
  model, then a canned answer that needs no LLM;
- tools behind an allowlist (``Toolbox``) on ``/orders/ask``; SSE on ``/chat/stream``;
- one JSON log line per call (``Observe``), and OpenTelemetry spans and metrics
  when ``LLMGUARD_OTEL=1`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.

Offline (no ``OPENAI_API_KEY``) the real openai SDK talks to a scripted
``FakeOpenAIEndpoint``, so the whole path runs without a network. Install
``pip install "llmguard[fastapi,redis]" uvicorn`` (``llmguard[otel]`` for OpenTelemetry),
run it and try it:

    bash scripts/ensure-redis.sh   # or LLMGUARD_STORE=memory for a single process without Redis
    uvicorn examples.production_fastapi:app --port 8000
    curl -s localhost:8000/chat -H 'x-user: alice' -H 'content-type: application/json' \\
        -d '{"question": "What is llmguard?"}'
    curl -N localhost:8000/chat/stream -H 'x-user: alice' -H 'content-type: application/json' \\
        -d '{"question": "Stream it"}'
    curl -s localhost:8000/triage -H 'x-user: alice' -H 'content-type: application/json' \\
        -d '{"text": "My parcel is two weeks late!"}'
    curl -s localhost:8000/orders/ask -H 'x-user: alice' -H 'content-type: application/json' \\
        -d '{"question": "Where is order 42?"}'
    curl -s localhost:8000/usage -H 'x-user: alice'

Environment: ``OPENAI_API_KEY`` (unset: offline), ``OPENAI_BASE_URL``, ``LLMGUARD_MODEL``
(gpt-4o-mini), ``LLMGUARD_FALLBACK_MODEL`` (gpt-4.1-nano), ``LLMGUARD_STORE`` (``redis``,
the default, or ``memory``), ``LLMGUARD_REDIS_URL`` (redis://127.0.0.1:6379/0),
``LLMGUARD_TOKENS_PER_USER_HOUR`` (50000), ``LLMGUARD_USD_PER_DAY`` (20), ``LLMGUARD_OTEL``,
``LLMGUARD_WIRE`` (``sdk``, or ``lean`` for llmguard's lean wire client).
docs/production.md explains each piece.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import openai
from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel, Field
from starlette.requests import HTTPConnection
from starlette.responses import Response as HTTPResponse

import llmguard
from llmguard import (
    Budget,
    Cache,
    CallContext,
    CircuitBreaker,
    Clock,
    Deadlines,
    Fallback,
    Guard,
    Layer,
    Limit,
    MemoryStore,
    Observe,
    OpenAIProvider,
    OpenTelemetry,
    RedisStore,
    Request,
    Response,
    Retry,
    StreamTimeouts,
    Toolbox,
    tool,
)
from llmguard.integrations.fastapi import (
    add_exception_handlers,
    context_dependency,
    stream_response,
)
from llmguard.testing import FakeOpenAIEndpoint, FakeProvider, FakeReply

CANNED = "canned"
CANNED_TEXT = "Our assistant is busy right now. Please try again in a minute, or see /help."


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything that differs between environments, read once from the environment."""

    openai_api_key: str | None = None  # None: offline, on the fake endpoint
    openai_base_url: str | None = None
    model: str = "gpt-4o-mini"
    fallback_model: str = "gpt-4.1-nano"
    store: Literal["redis", "memory"] = "redis"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "llmguard:"
    tokens_per_user_hour: int = 50_000
    usd_per_day: str = "20"
    max_output_tokens: int = 500
    timeout: float = 60.0  # the total deadline of one call, retries and fallbacks included
    attempt_timeout: float = 20.0  # one attempt (and the retries of fast failures)
    first_token_timeout: float = 10.0  # streams: from the request to the first event
    idle_timeout: float = 10.0  # streams: between two events
    cache_ttl: float = 600.0
    breaker_failures: int = 5
    breaker_reset: float = 30.0
    otel: bool = False  # spans and metrics through OpenTelemetry's global providers
    wire: Literal["sdk", "lean"] = "sdk"  # "lean": llmguard's own Chat Completions client

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        store = env.get("LLMGUARD_STORE", "redis")
        if store not in ("redis", "memory"):
            raise llmguard.ConfigurationError(f"LLMGUARD_STORE is redis or memory, not {store!r}")
        wire = env.get("LLMGUARD_WIRE", "sdk")
        if wire not in ("sdk", "lean"):
            raise llmguard.ConfigurationError(f"LLMGUARD_WIRE is sdk or lean, not {wire!r}")
        return cls(
            openai_api_key=env.get("OPENAI_API_KEY") or None,
            openai_base_url=env.get("OPENAI_BASE_URL") or None,
            model=env.get("LLMGUARD_MODEL", cls.model),
            fallback_model=env.get("LLMGUARD_FALLBACK_MODEL", cls.fallback_model),
            store="memory" if store == "memory" else "redis",
            redis_url=env.get("LLMGUARD_REDIS_URL", cls.redis_url),
            tokens_per_user_hour=int(env.get("LLMGUARD_TOKENS_PER_USER_HOUR", "50000")),
            usd_per_day=env.get("LLMGUARD_USD_PER_DAY", cls.usd_per_day),
            otel=env.get("LLMGUARD_OTEL", "").lower() in ("1", "true", "yes")
            or bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT")),
            wire="lean" if wire == "lean" else "sdk",
        )


# -- the non-LLM last resort, and what may be cached -----------------------------------


async def canned_answer(request: Request) -> Response:
    """The end of the fallback chain: always there, needs no model."""
    return Response(text=CANNED_TEXT, finish_reason="stop", provider=CANNED, model=CANNED)


def cacheable(response: Response) -> bool:
    """Whole answers only, and never the canned one (the next call may reach a model)."""
    whole = response.finish_reason in ("stop", "tool_calls") and not response.refusal
    return whole and response.provider != CANNED


# -- tools: the allowlist is this Toolbox; nothing else ever runs ------------------------


class OrderStatus(BaseModel):
    order_id: int
    status: str


ORDERS = {42: ("alice", "shipped"), 7: ("bob", "being packed")}


@tool(safe_errors=(LookupError,), timeout=5)
async def get_order_status(order_id: int) -> OrderStatus:
    """Look up the status of one of the caller's orders.

    Args:
        order_id: the order number printed on the receipt.
    """
    owner, status = ORDERS.get(order_id, (None, ""))
    if owner is None or owner != llmguard.current_context().user:  # authorisation is ours
        raise LookupError(f"no order {order_id} for this customer")
    return OrderStatus(order_id=order_id, status=status)


TOOLS = Toolbox([get_order_status], timeout=5, max_concurrency=4)


# -- validated output -------------------------------------------------------------------


class Ticket(BaseModel):
    category: Literal["billing", "shipping", "technical", "other"]
    urgency: int = Field(ge=1, le=5)
    summary: str


# -- telemetry --------------------------------------------------------------------------


class JSONLines(logging.Formatter):
    """One JSON object per line: the call record's fields (docs/concepts.md, "Call record")."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "llmguard", None) or {"message": record.getMessage()}
        when = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        return json.dumps({"time": when, "level": record.levelname, **fields})


def configure_logging() -> None:
    """Call records to stderr as JSON lines (once; keeps a handler already there)."""
    calls = logging.getLogger("llmguard.calls")
    calls.setLevel(logging.INFO)
    if not calls.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(JSONLines())
        calls.addHandler(handler)


def telemetry_layers(settings: Settings, telemetry: Layer | None = None) -> list[Layer]:
    """The outermost layers, so they see cache hits, refusals and fallbacks: an
    ``OpenTelemetry`` layer when OTel is on (its global providers: configure the SDK and
    an exporter yourself, or run under ``opentelemetry-instrument``), then ``Observe``."""
    if telemetry is None and settings.otel:
        telemetry = OpenTelemetry()
    return [*([telemetry] if telemetry is not None else []), Observe()]


# -- the stack ----------------------------------------------------------------------------


def demo_endpoint() -> FakeOpenAIEndpoint:
    """What answers offline: the real SDK talks HTTP to this scripted fake."""
    script = FakeProvider(default="Hello from the offline demo: llmguard guards every LLM call.")
    script.when(lambda r: r.response_format is not None).reply(
        FakeReply.json({"category": "shipping", "urgency": 4, "summary": "A parcel is late."})
    )
    script.when(lambda r: bool(r.tools) and r.messages[-1].role != "tool").reply(
        FakeReply.tool_call("get_order_status", {"order_id": 42})
    )
    script.when(lambda r: bool(r.tools)).reply("Order 42 has shipped.")
    return FakeOpenAIEndpoint(provider=script, chunk_size=8, chunk_delay=0.02)


@dataclass
class Stack:
    """The guards of one app, and what must be closed when it stops."""

    guard: Guard  # chat, streams and tools: the chain ends in the canned answer
    strict_guard: Guard  # structured output: no canned answer (a made-up object is worse)
    budget: Budget
    store: Any
    client: openai.AsyncOpenAI
    endpoint: FakeOpenAIEndpoint | None
    owns_store: bool
    settings: Settings

    async def start(self) -> None:
        """Connect to Redis now (a worker that cannot count budgets should not start),
        and load the price database and the token counting now, not on the first call."""
        if isinstance(self.store, RedisStore):
            await self.store.connect()
        await self.budget.prepare(self.settings.model, self.settings.fallback_model)

    async def aclose(self) -> None:
        await self.client.close()
        if self.owns_store and isinstance(self.store, RedisStore):
            await self.store.aclose()


def build_stack(
    settings: Settings,
    *,
    endpoint: FakeOpenAIEndpoint | None = None,
    client: openai.AsyncOpenAI | None = None,
    store: Any = None,
    clock: Clock | None = None,
    telemetry: Layer | None = None,
) -> Stack:
    """Every guard, in the default order: (telemetry →) observe → cache → budget →
    fallback → [breaker → retry → deadlines] → provider.

    ``client`` replaces the openai client (benchmarks/full_stack.py passes its own),
    ``telemetry`` the OpenTelemetry layer (tests pass one with in-memory exporters)."""
    owns_store = store is None
    if store is None:
        store = (
            MemoryStore()
            if settings.store == "memory"
            else RedisStore.from_url(settings.redis_url, prefix=settings.redis_prefix)
        )
    if client is None:
        if endpoint is None and settings.openai_api_key is None:
            endpoint = demo_endpoint()  # offline: the real SDK, a fake server
        if endpoint is not None:
            client = endpoint.async_client()
        else:  # llmguard's Retry owns retries: the SDK must not retry by itself
            client = openai.AsyncOpenAI(
                api_key=settings.openai_api_key, base_url=settings.openai_base_url, max_retries=0
            )
    provider = OpenAIProvider(client, wire=settings.wire)
    cache = Cache(store, scope="user", ttl=settings.cache_ttl, store_if=cacheable)
    budget = Budget(
        Limit(tokens=settings.tokens_per_user_hour, per="hour", scope="user", name="user-hourly"),
        Limit(usd=settings.usd_per_day, per="day", name="daily-spend"),
        store=store,  # on_store_error="closed": nobody spends while nobody can count
        on_unknown_price="warn",  # a model genai-prices lacks counts against tokens only
        max_output_tokens=settings.max_output_tokens,
    )
    breaker = CircuitBreaker(
        consecutive_failures=settings.breaker_failures,
        reset_after=settings.breaker_reset,
        # every worker shares each circuit (a MemoryStore is one process: no need)
        store=None if isinstance(store, MemoryStore) else store,
        name="production",
        clock=clock,
    )
    # Retries start only within one attempt's time of a target's first attempt: 500s
    # and 429s are retried, while a model that hangs uses up that time once and the
    # next target gets what is left of the total.
    retry = Retry(attempts=3, total=settings.attempt_timeout, clock=clock)
    deadlines = Deadlines(
        StreamTimeouts(
            total=settings.attempt_timeout,
            first_token=settings.first_token_timeout,
            idle=settings.idle_timeout,
        )
    )

    outer = telemetry_layers(settings, telemetry)

    def guard(*last_resort: Any) -> Guard:
        fallback = Fallback(to=[settings.fallback_model, *last_resort], clock=clock)
        layers = [*outer, cache, budget, fallback, breaker, retry, deadlines]
        return Guard(provider, layers, model=settings.model, timeout=settings.timeout, clock=clock)

    return Stack(
        guard=guard(canned_answer),
        strict_guard=guard(),
        budget=budget,
        store=store,
        client=client,
        endpoint=endpoint,
        owns_store=owns_store,
        settings=settings,
    )


# -- the app ------------------------------------------------------------------------------


class Question(BaseModel):
    question: str = Field(min_length=1, max_length=4000)


class Document(BaseModel):
    text: str = Field(min_length=1, max_length=20_000)


def identify(request: HTTPConnection) -> CallContext:
    """Who is calling. In production read it from your authentication, not a header."""
    user = request.headers.get("x-user")
    if not user:
        raise HTTPException(401, "send an x-user header")
    route = getattr(request.scope.get("route"), "path", None) or request.url.path
    return CallContext(user=user, tenant=request.headers.get("x-tenant"), endpoint=route)


def create_app(
    settings: Settings | None = None,
    *,
    endpoint: FakeOpenAIEndpoint | None = None,
    store: Any = None,
    clock: Clock | None = None,
    telemetry: Layer | None = None,
) -> FastAPI:
    """The app. Tests inject the fake endpoint, a store (with its own key prefix), a
    clock and a telemetry layer; ``app.state.stack`` holds the guards."""
    settings = settings or Settings.from_env()
    stack = build_stack(settings, endpoint=endpoint, store=store, clock=clock, telemetry=telemetry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging()
        try:
            await stack.start()
            yield
        finally:
            await stack.aclose()

    app = FastAPI(
        title="llmguard production example",
        lifespan=lifespan,
        dependencies=[Depends(context_dependency(identify))],
    )
    app.state.stack = stack
    add_exception_handlers(app)  # BudgetExceeded -> 429 + Retry-After, CircuitOpen -> 503, ...
    guard, max_out = stack.guard, settings.max_output_tokens

    @app.post("/chat")
    async def chat(body: Question) -> dict[str, Any]:
        answer = await guard.complete(user=body.question, max_output_tokens=max_out)
        return {"answer": answer.text, "model": answer.model, "cached": answer.cached}

    @app.post("/chat/stream")
    async def chat_stream(body: Question) -> HTTPResponse:
        return await stream_response(guard.stream(user=body.question, max_output_tokens=max_out))

    @app.post("/triage")
    async def triage(body: Document) -> Ticket:
        return await stack.strict_guard.structured(
            Ticket,
            system="Triage this customer message into a support ticket.",
            user=body.text,
            max_output_tokens=max_out,
            retries=2,
        )

    @app.post("/orders/ask")
    async def orders(body: Question) -> dict[str, Any]:
        result = await guard.run_tools(
            system="You help customers with their orders. Use the tools.",
            user=body.question,
            tools=TOOLS,
            max_steps=4,
            max_output_tokens=max_out,
        )
        tools = [{"name": r.call.name, "status": r.status} for r in result.tool_results]
        return {"answer": result.text, "steps": result.steps, "tools": tools}

    @app.get("/usage")
    async def usage() -> list[dict[str, Any]]:
        return [
            {"limit": s.name, "unit": s.unit, "used": s.used, "remaining": s.remaining}
            for s in await stack.budget.status()
        ]

    return app


app = create_app()

"""examples/production_fastapi.py end to end: every guard acting, through the app's own
HTTP interface, the real openai SDK and a fake OpenAI endpoint.

On asyncio the stores are the real Redis on 127.0.0.1:6379 (a key prefix per test,
deleted afterwards); RedisStore runs on asyncio only, so on trio the same app runs on a
MemoryStore.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import math
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import trio
from trio.testing import MockClock

from _redis_ping import require_redis
from llmguard import AnyioClock, Clock, MemoryStore, StoreUnavailable, TextDelta, Usage, parse_sse
from llmguard.testing import FakeOpenAIEndpoint, FakeReply, ManualClock, capture_records

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "production_fastapi.py"
REDIS_URL = "redis://127.0.0.1:6379/0"
ALICE = {"x-user": "alice"}
BOB = {"x-user": "bob"}
PRIMARY, CHEAP = "gpt-4o-mini", "gpt-4.1-nano"
TICKET = {"category": "shipping", "urgency": 4, "summary": "A parcel is two weeks late."}


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_production_fastapi", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and FastAPI look the module up
    spec.loader.exec_module(module)
    return module


example = load_example()


@pytest.fixture
async def store(anyio_backend: str, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """Redis under a fresh key prefix on asyncio (deleted afterwards); memory on trio."""
    if anyio_backend != "asyncio":
        yield MemoryStore()
        return
    request.node.add_marker(pytest.mark.redis)
    require_redis()
    from llmguard import RedisStore

    prefix = f"llmguard-test:{uuid.uuid4().hex}:"
    redis = RedisStore.from_url(REDIS_URL, prefix=prefix, timeout=5.0)
    try:
        yield redis
    finally:
        client = redis._client
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await redis.aclose()


@pytest.fixture(autouse=True)
def _restore_call_logger() -> Iterator[None]:
    """The app's lifespan configures the ``llmguard.calls`` logger; put it back."""
    calls = logging.getLogger("llmguard.calls")
    handlers, level = list(calls.handlers), calls.level
    yield
    calls.handlers[:] = handlers
    calls.setLevel(level)


@asynccontextmanager
async def running(
    store: Any,
    endpoint: FakeOpenAIEndpoint,
    *,
    clock: Clock | None = None,
    telemetry: Any = None,
    **settings: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and an HTTP client on it."""
    settings.setdefault("breaker_failures", 2)
    app = example.create_app(
        example.Settings(**settings),
        endpoint=endpoint,
        store=store,
        clock=clock or ManualClock(autojump=True),  # backoff waits take no time
        telemetry=telemetry,
    )
    async with app.router.lifespan_context(app):
        # The lifespan ran Budget.prepare: no call waits on a worker thread (trio's
        # MockClock would jump meanwhile).
        budget = app.state.stack.budget
        assert budget.pricing.loaded
        assert all(budget._engine.estimator.ready(model) for model in (PRIMARY, CHEAP))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


def models(endpoint: FakeOpenAIEndpoint) -> list[str]:
    return [request.json["model"] for request in endpoint.requests]


@pytest.mark.anyio
@pytest.mark.parametrize("wire", ["sdk", "lean"])
async def test_second_identical_question_is_a_cache_hit_scoped_per_user(
    store: Any, wire: str
) -> None:
    endpoint = FakeOpenAIEndpoint(default="Paris.")
    with capture_records() as records:
        async with running(store, endpoint, wire=wire) as http:
            ask = {"question": "Capital of France?"}
            first = await http.post("/chat", json=ask, headers=ALICE)
            again = await http.post("/chat", json=ask, headers=ALICE)
            other = await http.post("/chat", json=ask, headers=BOB)
    assert first.json() == {"answer": "Paris.", "model": PRIMARY, "cached": False}
    assert again.json() == {"answer": "Paris.", "model": PRIMARY, "cached": True}
    assert other.json()["cached"] is False  # another user: another cache scope
    assert len(endpoint.requests) == 2  # alice's second call never went upstream
    assert [(r.user, r.cache, r.attempts) for r in records] == [
        ("alice", "miss", 1),
        ("alice", "hit", 0),
        ("bob", "miss", 1),
    ]


@pytest.mark.anyio
async def test_budget_spent_answers_429_with_retry_after(store: Any) -> None:
    costly = FakeReply.of_text("ok", usage=Usage(input_tokens=50, output_tokens=200))
    endpoint = FakeOpenAIEndpoint(default=costly)
    async with running(store, endpoint, tokens_per_user_hour=1_000, max_output_tokens=200) as http:
        statuses = []
        for i in range(6):
            answer = await http.post("/chat", json={"question": f"question {i}"}, headers=ALICE)
            statuses.append(answer.status_code)
        usage = (await http.get("/usage", headers=ALICE)).json()
        bob = await http.post("/chat", json={"question": "question 0"}, headers=BOB)
    # 250 tokens a call; the 5th call's worst case (its input + 200) no longer fits.
    assert statuses == [200, 200, 200, 200, 429, 429]
    assert int(answer.headers["Retry-After"]) >= 1
    error = answer.json()["error"]
    assert (error["type"], error["scope"], error["used"]) == (
        "BudgetExceeded",
        "user-hourly:user=alice",
        1_000,
    )
    assert len(endpoint.requests) == 5  # four for alice (refusals send nothing), one for bob
    assert usage[0] == {"limit": "user-hourly", "unit": "tokens", "used": 1_000, "remaining": 0}
    assert bob.status_code == 200  # another user, another budget


@pytest.mark.anyio
@pytest.mark.parametrize("wire", ["sdk", "lean"])
async def test_failing_primary_falls_back_to_the_cheaper_model(store: Any, wire: str) -> None:
    endpoint = FakeOpenAIEndpoint(default="From the small model.")
    endpoint.when(lambda r: r.json["model"] == PRIMARY).reply(FakeReply.server_error(500))
    with capture_records() as records:
        async with running(store, endpoint, wire=wire) as http:
            answer = await http.post("/chat", json={"question": "hi"}, headers=ALICE)
    assert answer.json() == {"answer": "From the small model.", "model": CHEAP, "cached": False}
    assert models(endpoint) == [PRIMARY] * 3 + [CHEAP]  # three attempts, then the fallback
    (record,) = records
    assert (record.fallback, record.attempts) == (f"openai/{CHEAP}", 4)
    assert "500" in record.fallback_reasons[0]


@pytest.mark.anyio
async def test_canned_answer_when_everything_fails_then_open_circuits(store: Any) -> None:
    endpoint = FakeOpenAIEndpoint(default=FakeReply.server_error(500))
    with capture_records() as records:
        async with running(store, endpoint, breaker_failures=2) as http:
            answers = [
                (await http.post("/chat", json={"question": "hi"}, headers=ALICE)).json()
                for _ in range(3)
            ]
    canned = {"answer": example.CANNED_TEXT, "model": "canned", "cached": False}
    assert answers == [canned] * 3  # the canned answer is never cached
    # Two calls of 3 + 3 failed attempts open both circuits: the third sends nothing.
    assert models(endpoint) == ([PRIMARY] * 3 + [CHEAP] * 3) * 2
    assert [(r.fallback, r.cache, r.attempts) for r in records] == [
        ("canned_answer", "miss", 7),
        ("canned_answer", "miss", 7),
        ("canned_answer", "miss", 1),
    ]
    assert all("CircuitOpen" in reason for reason in records[2].fallback_reasons)


@pytest.mark.anyio
async def test_an_unlisted_tool_is_refused_and_the_listed_one_runs(store: Any) -> None:
    endpoint = FakeOpenAIEndpoint(
        [
            FakeReply.tool_call("cancel_order", {"order_id": 42}),  # not in the Toolbox
            FakeReply.tool_call("get_order_status", {"order_id": 42}),
            "Order 42 has shipped.",
        ]
    )
    async with running(store, endpoint) as http:
        answer = await http.post("/orders/ask", json={"question": "Where is 42?"}, headers=ALICE)
    assert answer.json() == {
        "answer": "Order 42 has shipped.",
        "steps": 3,
        "tools": [
            {"name": "cancel_order", "status": "unknown_tool"},
            {"name": "get_order_status", "status": "ok"},
        ],
    }
    offered = [tool["function"]["name"] for tool in endpoint.requests[0].json["tools"]]
    assert offered == ["get_order_status"]
    told = endpoint.requests[1].json["messages"][-1]
    assert told["role"] == "tool" and "cancel_order" in told["content"]
    assert '"status":"shipped"' in endpoint.requests[2].json["messages"][-1]["content"]


@pytest.mark.anyio
async def test_a_tool_checks_who_is_asking(store: Any) -> None:
    endpoint = FakeOpenAIEndpoint(
        [FakeReply.tool_call("get_order_status", {"order_id": 42}), "I cannot find that order."]
    )
    async with running(store, endpoint) as http:
        answer = await http.post("/orders/ask", json={"question": "Where is 42?"}, headers=BOB)
    assert answer.json()["tools"] == [{"name": "get_order_status", "status": "error"}]
    told = endpoint.requests[1].json["messages"][-1]["content"]
    assert "no order 42 for this customer" in told  # a safe error: the model may see it


@pytest.mark.anyio
async def test_structured_answer_is_validated_and_malformed_json_is_reasked(store: Any) -> None:
    endpoint = FakeOpenAIEndpoint(
        ['{"category": "shipping", "urgency": "very"', json.dumps(TICKET)]
    )
    with capture_records() as records:
        async with running(store, endpoint) as http:
            answer = await http.post("/triage", json={"text": "Where is my parcel?"}, headers=ALICE)
    assert answer.status_code == 200
    assert answer.json() == TICKET
    first, second = endpoint.requests
    assert first.json["response_format"]["type"] == "json_schema"
    assert first.json["response_format"]["json_schema"]["strict"] is True
    reask = second.json["messages"][-1]
    assert reask["role"] == "user" and "could not be used" in reask["content"]
    assert records[0].attempts == 2


@pytest.mark.anyio
async def test_structured_answer_that_never_validates_is_a_502(store: Any) -> None:
    endpoint = FakeOpenAIEndpoint(default='{"category": "weather", "urgency": 9, "summary": ""}')
    async with running(store, endpoint) as http:
        answer = await http.post("/triage", json={"text": "Hello"}, headers=ALICE)
    assert answer.status_code == 502
    assert answer.json()["error"]["type"] == "OutputValidationError"
    assert len(endpoint.requests) == 3  # the answer and two re-asks; never a canned object


@pytest.mark.anyio
async def test_sse_stream_ends_with_done_and_is_replayed_from_the_cache(store: Any) -> None:
    endpoint = FakeOpenAIEndpoint(default="Streaming, chunk by chunk.", chunk_size=5)
    async with running(store, endpoint) as http:
        ask = {"question": "Stream please"}
        first = await http.post("/chat/stream", json=ask, headers=ALICE)
        again = await http.post("/chat/stream", json=ask, headers=ALICE)
    assert first.headers["content-type"].startswith("text/event-stream")
    for body in (first.content, again.content):
        assert body.endswith(b"data: [DONE]\n\n")
        text = "".join(e.text for e in parse_sse(body) if isinstance(e, TextDelta))
        assert text == "Streaming, chunk by chunk."
    assert len(endpoint.requests) == 1 and endpoint.requests[0].json["stream"] is True


@pytest.mark.anyio
async def test_a_refused_stream_is_a_json_429_before_any_byte(store: Any) -> None:
    costly = FakeReply.of_text("ok", usage=Usage(input_tokens=10, output_tokens=300))
    endpoint = FakeOpenAIEndpoint(default=costly)
    async with running(store, endpoint, tokens_per_user_hour=400, max_output_tokens=300) as http:
        ok = await http.post("/chat/stream", json={"question": "one"}, headers=ALICE)
        refused = await http.post("/chat/stream", json={"question": "two"}, headers=ALICE)
    assert ok.status_code == 200
    assert refused.status_code == 429 and refused.headers["content-type"] == "application/json"
    assert int(refused.headers["Retry-After"]) >= 1
    assert len(endpoint.requests) == 1


@pytest.mark.anyio
async def test_records_are_logged_as_json_lines_with_the_documented_fields(store: Any) -> None:
    endpoint = FakeOpenAIEndpoint(
        default=FakeReply.of_text("Paris.", usage=Usage(input_tokens=12, output_tokens=3))
    )
    lines = io.StringIO()
    async with running(store, endpoint) as http:
        (handler,) = logging.getLogger("llmguard.calls").handlers
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(lines)
        headers = {**ALICE, "x-tenant": "acme"}
        await http.post("/chat", json={"question": "Capital?"}, headers=headers)
        await http.post("/chat", json={"question": "Capital?"}, headers=headers)
    miss, hit = (json.loads(line) for line in lines.getvalue().splitlines())
    documented = {
        "time", "level", "call_id", "provider", "model", "user", "tenant", "endpoint", "tags",
        "stream", "input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens",
        "usage_estimated", "cost_micros", "latency_s", "time_to_first_token_s", "cache",
        "attempts", "fallback", "finish_reason", "error", "prompt", "completion",
        "tool_calls", "tool_errors", "fallback_reasons",
    }  # fmt: skip
    assert set(miss) == documented
    assert (miss["user"], miss["tenant"], miss["endpoint"], miss["level"]) == (
        "alice",
        "acme",
        "/chat",
        "INFO",
    )
    assert (miss["provider"], miss["model"], miss["input_tokens"], miss["output_tokens"]) == (
        "openai",
        PRIMARY,
        12,
        3,
    )
    assert miss["cost_micros"] > 0 and miss["prompt"] is None  # no content unless asked
    assert (miss["cache"], hit["cache"], hit["attempts"], hit["cost_micros"]) == (
        "miss",
        "hit",
        0,
        0,
    )


@pytest.mark.anyio
async def test_a_caller_without_identity_is_refused(store: Any) -> None:
    endpoint = FakeOpenAIEndpoint(default="never sent")
    async with running(store, endpoint) as http:
        answer = await http.post("/chat", json={"question": "hi"})
    assert answer.status_code == 401
    assert endpoint.requests == []


MOCK_TRIO = [("trio", {"clock": MockClock(autojump_threshold=0)})]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK_TRIO)
async def test_a_hanging_model_gets_one_attempt_then_the_next_target(store: Any) -> None:
    hang = False
    endpoint = FakeOpenAIEndpoint(default="From the small model.")
    endpoint.when(lambda r: hang and r.json["model"] == PRIMARY).reply(FakeReply.hanging())
    async with running(store, endpoint, clock=AnyioClock()) as http:
        # The SDK's first call does some work in a worker thread; MockClock would jump
        # virtual time while it runs. Make that call with the jumps off.
        mock = trio.lowlevel.current_clock()
        assert isinstance(mock, MockClock)
        mock.autojump_threshold = math.inf
        await http.post("/chat", json={"question": "warm up"}, headers=BOB)
        mock.autojump_threshold, hang = 0, True
        with capture_records() as records:
            answer = await http.post("/chat", json={"question": "hi"}, headers=ALICE)
            streamed = await http.post("/chat/stream", json={"question": "s"}, headers=ALICE)
    assert answer.json()["model"] == CHEAP
    assert streamed.content.endswith(b"data: [DONE]\n\n")
    # The call: one attempt, cut at 20 s (the attempt deadline), then the cheaper model.
    # The stream: cut at 10 s (no first token), retried once within the 20 s window.
    assert models(endpoint)[1:] == [PRIMARY, CHEAP, PRIMARY, PRIMARY, CHEAP]
    complete, stream = records
    assert complete.latency_s == pytest.approx(20.0, abs=0.01)
    assert 20.0 <= stream.latency_s <= 20.6  # 10 + a jittered backoff (at most 0.5) + 10
    assert (complete.fallback, stream.fallback) == (f"openai/{CHEAP}", f"openai/{CHEAP}")
    assert "DeadlineExceeded" in complete.fallback_reasons[0]
    assert "StreamTimeout" in stream.fallback_reasons[0]


def test_settings_from_the_environment() -> None:
    settings = example.Settings.from_env(
        {
            "LLMGUARD_STORE": "memory",
            "LLMGUARD_MODEL": "gpt-4.1",
            "LLMGUARD_TOKENS_PER_USER_HOUR": "123",
        }
    )
    assert (settings.store, settings.model, settings.tokens_per_user_hour) == (
        "memory",
        "gpt-4.1",
        123,
    )
    assert settings.openai_api_key is None and settings.redis_url == REDIS_URL
    with pytest.raises(example.llmguard.ConfigurationError):
        example.Settings.from_env({"LLMGUARD_STORE": "postgres"})
    assert settings.wire == "sdk"
    assert example.Settings.from_env({"LLMGUARD_WIRE": "lean"}).wire == "lean"
    for wire in ("sdk", "lean"):
        stack = example.build_stack(example.Settings(store="memory", wire=wire))
        assert stack.guard.provider.wire == wire  # type: ignore[attr-defined]
    with pytest.raises(example.llmguard.ConfigurationError, match="LLMGUARD_WIRE"):
        example.Settings.from_env({"LLMGUARD_WIRE": "fast"})


@pytest.mark.anyio
async def test_offline_demo_answers_every_endpoint() -> None:
    app = example.create_app(example.Settings(store="memory"))
    assert app.state.stack.endpoint is not None  # no key: the fake endpoint answers
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            chat = await http.post("/chat", json={"question": "hi"}, headers=ALICE)
            triage = await http.post("/triage", json={"text": "late"}, headers=ALICE)
            order = await http.post("/orders/ask", json={"question": "42?"}, headers=ALICE)
            stream = await http.post("/chat/stream", json={"question": "s"}, headers=ALICE)
    assert chat.json()["answer"].startswith("Hello from the offline demo")
    assert triage.json()["category"] == "shipping"
    assert order.json()["tools"] == [{"name": "get_order_status", "status": "ok"}]
    assert stream.content.endswith(b"data: [DONE]\n\n")


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # RedisStore runs on asyncio only
async def test_a_worker_that_cannot_reach_redis_does_not_start() -> None:
    settings = example.Settings(store="redis", redis_url="redis://127.0.0.1:1/0")
    app = example.create_app(settings, endpoint=FakeOpenAIEndpoint(default="never sent"))
    stack = app.state.stack
    with pytest.raises(StoreUnavailable):
        async with app.router.lifespan_context(app):
            raise AssertionError("the app must not start")
    assert stack.owns_store and stack.client.is_closed()


def test_module_level_app_is_built_from_the_environment() -> None:
    assert example.app.state.stack.settings == example.Settings.from_env()


@pytest.mark.anyio
async def test_opentelemetry_spans_when_telemetry_is_on(store: Any) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from llmguard import OpenTelemetry

    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False)
    telemetry = OpenTelemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
    endpoint = FakeOpenAIEndpoint(default="From the small model.")
    endpoint.when(lambda r: r.json["model"] == PRIMARY).reply(FakeReply.server_error(500))
    async with running(store, endpoint, telemetry=telemetry) as http:
        await http.post("/chat", json={"question": "hi"}, headers=ALICE)
        await http.post("/chat", json={"question": "hi"}, headers=ALICE)
    miss, hit = spans.get_finished_spans()
    assert miss.name == hit.name == f"chat {PRIMARY}"
    assert miss.attributes is not None and hit.attributes is not None
    assert miss.attributes["llmguard.fallback"] == f"openai/{CHEAP}"
    assert (miss.attributes["llmguard.attempts"], miss.attributes["llmguard.cache"]) == (4, "miss")
    assert (hit.attributes["llmguard.attempts"], hit.attributes["llmguard.cache"]) == (0, "hit")
    assert miss.attributes["llmguard.endpoint"] == "/chat"


def test_opentelemetry_is_switched_on_from_the_environment() -> None:
    from llmguard import Observe, OpenTelemetry

    assert example.Settings.from_env({}).otel is False
    assert example.Settings.from_env({"LLMGUARD_OTEL": "1"}).otel is True
    on = example.Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"})
    assert on.otel is True
    assert [type(layer) for layer in example.telemetry_layers(on)] == [OpenTelemetry, Observe]
    assert [type(layer) for layer in example.telemetry_layers(example.Settings())] == [Observe]

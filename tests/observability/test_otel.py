"""``OpenTelemetry``: spans and metrics of guarded calls, read back from the SDK's
in-memory exporter and reader (on providers built per test, never the global ones)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from typing import Any

import anyio
import pytest
from opentelemetry.trace import SpanKind, StatusCode
from trio.testing import MockClock

import llmguard
from llmguard import (
    Budget,
    BudgetExceeded,
    Cache,
    CircuitBreaker,
    ConfigurationError,
    DeadlineExceeded,
    Fallback,
    FunctionProvider,
    Guard,
    Limit,
    MemoryStore,
    Message,
    Observe,
    OpenAIProvider,
    OpenTelemetry,
    Price,
    Pricing,
    ProviderError,
    Request,
    Response,
    Retry,
    TextDelta,
    Toolbox,
    ToolCall,
    Usage,
    tool,
)
from llmguard.testing import (
    FakeOpenAIEndpoint,
    FakeProvider,
    FakeReply,
    ManualClock,
    WireReply,
    capture_records,
)

from ._harness import Telemetry, all_text, make_telemetry

pytestmark = pytest.mark.anyio
VIRTUAL_TIME = [pytest.param(("trio", {"clock": MockClock(autojump_threshold=0)}), id="trio")]


def base(model: str = "m", response_model: str | None = "m", **more: Any) -> dict[str, Any]:
    """The attributes every GenAI metric point of a call to ``fake`` carries."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "fake",
        "gen_ai.request.model": model,
    }
    if response_model is not None:
        attributes["gen_ai.response.model"] = response_model
    return attributes | more


def tokens(attributes: dict[str, Any], input_tokens: int, output_tokens: int) -> list[Any]:
    return [
        ({**attributes, "gen_ai.token.type": "input"}, (1, input_tokens)),
        ({**attributes, "gen_ai.token.type": "output"}, (1, output_tokens)),
    ]


# -- one call ----------------------------------------------------------------------------


async def test_a_plain_call_is_one_client_span_with_the_genai_attributes() -> None:
    clock = ManualClock(autojump=True)
    usage = Usage(input_tokens=12, output_tokens=3)
    fake = FakeProvider([FakeReply.of_text("Paris.", usage=usage)], latency=0.5, sleep=clock.sleep)
    t = make_telemetry()
    guard = Guard(fake, model="gpt-4o-mini", clock=clock, timeout=None, telemetry=t.layer)
    guard_observed = Guard(fake, [t.layer, Observe()], clock=clock, timeout=None)
    assert guard.layers == (t.layer,)
    with llmguard.context(user="alice", tenant="acme", endpoint="/ask"), capture_records() as rec:
        await guard_observed.complete(
            model="gpt-4o-mini", user="Capital of France?", temperature=0.2, max_output_tokens=50
        )

    (span,) = t.spans()
    assert span.name == "chat gpt-4o-mini"
    assert span.kind is SpanKind.CLIENT
    assert span.parent is None
    assert span.status.status_code is StatusCode.UNSET
    assert dict(span.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "fake",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.max_tokens": 50,
        "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.response.id": "fake-1",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 3,
        "llmguard.call_id": rec[0].call_id,
        "llmguard.stream": False,
        "llmguard.endpoint": "/ask",
        "llmguard.attempts": 1,
    }
    text = all_text(t)
    assert "alice" not in text and "acme" not in text  # no user or tenant id
    assert "Capital" not in text  # no content by default

    metric = base("gpt-4o-mini", "gpt-4o-mini", **{"llmguard.endpoint": "/ask"})
    assert t.metrics() == {
        "gen_ai.client.token.usage": tokens(metric, 12, 3),
        "gen_ai.client.operation.duration": [(metric, (1, 0.5))],
    }
    units = t.units()
    assert units["gen_ai.client.token.usage"] == "{token}"
    assert units["gen_ai.client.operation.duration"] == "s"


async def test_a_stream_records_its_time_to_first_chunk() -> None:
    clock = ManualClock(autojump=True)
    reply = FakeReply.of_text("Hello there!", usage=Usage(input_tokens=5, output_tokens=3))
    fake = FakeProvider([reply], first_token_delay=0.25, chunk_delay=0.125, sleep=clock.sleep)
    t = make_telemetry()
    guard = Guard(fake, model="m", clock=clock, timeout=None, telemetry=t.layer)
    async with guard.stream(user="Hi") as events:
        assert t.spans() == []  # the span ends when the stream is left
        text = "".join([e.text async for e in events if isinstance(e, TextDelta)])
    assert text == "Hello there!"

    (span,) = t.spans()
    attributes = dict(span.attributes or {})
    assert attributes.pop("llmguard.call_id")
    assert attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "fake",
        "gen_ai.request.model": "m",
        "gen_ai.request.stream": True,
        "gen_ai.response.model": "m",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.response.time_to_first_chunk": 0.25,
        "gen_ai.usage.input_tokens": 5,
        "gen_ai.usage.output_tokens": 3,
        "llmguard.stream": True,
        "llmguard.attempts": 1,
    }
    # 3 text chunks, usage, finish: the first after 0.25 s, then 4 x 0.125 s
    assert t.metrics() == {
        "gen_ai.client.token.usage": tokens(base(), 5, 3),
        "gen_ai.client.operation.duration": [(base(), (1, 0.75))],
        "gen_ai.client.operation.time_to_first_chunk": [(base(), (1, 0.25))],
    }


async def test_a_cache_hit_has_no_usage_and_counts_as_a_hit() -> None:
    t = make_telemetry()
    fake = FakeProvider([FakeReply.of_text("Paris.", usage=Usage(input_tokens=8, output_tokens=2))])
    guard = Guard(
        fake,
        model="m",
        clock=ManualClock(),
        timeout=None,
        telemetry=t.layer,
        cache=Cache(MemoryStore()),
    )
    first = await guard.complete(user="Capital of France?")
    again = await guard.complete(user="Capital of France?")
    assert (first.cached, again.cached) == (False, True)

    miss, hit = t.spans()
    assert miss.attributes is not None and hit.attributes is not None
    assert miss.attributes["llmguard.cache"] == "miss"
    assert miss.attributes["gen_ai.usage.input_tokens"] == 8
    assert hit.attributes["llmguard.cache"] == "hit"
    assert hit.attributes["llmguard.attempts"] == 0
    assert hit.attributes["llmguard.cost_usd"] == 0.0
    assert hit.attributes["gen_ai.provider.name"] == "fake"
    assert "gen_ai.usage.input_tokens" not in hit.attributes  # nothing was used
    metrics = t.metrics()
    assert metrics["llmguard.cache.hits"] == [(base(), 1)]
    assert metrics["llmguard.cache.misses"] == [(base(), 1)]
    assert metrics["gen_ai.client.token.usage"] == tokens(base(), 8, 2)  # the miss only
    assert metrics["gen_ai.client.operation.duration"] == [(base(), (2, 0.0))]
    assert "llmguard.cost" not in metrics  # unpriced, and a hit costs nothing


async def test_a_budget_refusal_is_an_error_span_without_the_user() -> None:
    t = make_telemetry()
    budget = Budget(Limit(tokens=5, per="hour", scope="user"), store=MemoryStore())
    guard = Guard(
        FakeProvider(["never"]),
        model="m",
        clock=ManualClock(),
        timeout=None,
        telemetry=t.layer,
        budget=budget,
    )
    with llmguard.context(user="alice"), pytest.raises(BudgetExceeded) as info:
        await guard.complete(user="a long question " * 20)

    (span,) = t.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description is None  # its message names the user
    attributes = dict(span.attributes or {})
    assert attributes["error.type"] == "BudgetExceeded"
    assert attributes["llmguard.attempts"] == 0
    assert attributes["llmguard.budget.scopes"] == ("user/hour:user=*",)
    assert attributes["llmguard.budget.refused"] == "user/hour:user=*"
    assert attributes["llmguard.budget.remaining"] == info.value.remaining == 5
    assert attributes["llmguard.budget.unit"] == "tokens"
    assert "gen_ai.response.model" not in attributes
    assert "alice" not in all_text(t)
    refused = base(response_model=None, **{"error.type": "BudgetExceeded"})
    assert t.metrics() == {
        "llmguard.budget.refusals": [(refused, 1)],
        "gen_ai.client.operation.duration": [(refused, (1, 0.0))],
    }


async def test_a_priced_call_records_its_cost() -> None:
    t = make_telemetry()
    pricing = Pricing(prices={"m": Price(input="1", output="2")}, database=False)
    budget = Budget(Limit(usd="10", per="day"), store=MemoryStore(), pricing=pricing)
    reply = FakeReply.of_text("ok", usage=Usage(input_tokens=1000, output_tokens=500))
    guard = Guard(FakeProvider([reply]), model="m", timeout=None, telemetry=t.layer, budget=budget)
    with llmguard.context(endpoint="/pay"):
        response = await guard.complete(user="hi")
    assert response.cost_micros == 2000

    (span,) = t.spans()
    assert span.attributes is not None
    assert span.attributes["llmguard.cost_usd"] == 0.002
    assert span.attributes["llmguard.budget.scopes"] == ("global/day:global",)
    assert t.metrics()["llmguard.cost"] == [(base(**{"llmguard.endpoint": "/pay"}), 0.002)]
    assert t.units()["llmguard.cost"] == "USD"


async def test_a_retry_then_a_fallback_are_counted() -> None:
    clock = ManualClock(autojump=True)
    usage = Usage(input_tokens=7, output_tokens=4)
    fake = FakeProvider(
        [
            FakeReply.server_error(503),
            FakeReply.server_error(503),
            FakeReply.of_text("From the backup.", usage=usage),
        ]
    )
    t = make_telemetry()
    guard = Guard(
        fake,
        model="m",
        clock=clock,
        timeout=None,
        telemetry=t.layer,
        fallback=Fallback(to="m-backup"),
        retry=Retry(attempts=2, clock=clock),
    )
    response = await guard.complete(user="hi")
    assert response.text == "From the backup."

    (span,) = t.spans()
    assert span.name == "chat m"
    assert span.status.status_code is StatusCode.UNSET
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.request.model"] == "m"
    assert attributes["gen_ai.response.model"] == "m-backup"
    assert attributes["llmguard.attempts"] == 3
    assert attributes["llmguard.fallback"] == "fake/m-backup"
    assert attributes["gen_ai.usage.input_tokens"] == 7  # failed attempts used nothing
    metric = base(response_model="m-backup")
    metrics = t.metrics()
    assert metrics["llmguard.retries"] == [(metric, 1)]  # the hop to m-backup is no retry
    assert metrics["llmguard.fallbacks"] == [({**metric, "llmguard.fallback": "fake/m-backup"}, 1)]
    assert t.units()["llmguard.retries"] == "{attempt}"


async def test_breaker_state_changes_are_counted() -> None:
    t = make_telemetry()
    fake = FakeProvider([FakeReply.server_error(503), "From the backup."])
    guard = Guard(
        fake,
        model="m",
        timeout=None,
        telemetry=t.layer,
        fallback=Fallback(to="m-backup"),
        breaker=CircuitBreaker(consecutive_failures=1),
    )
    await guard.complete(user="hi")

    (span,) = t.spans()
    assert span.attributes is not None
    assert span.attributes["llmguard.breaker"] == ("fake/m: closed -> open",)
    changes = t.metrics()["llmguard.breaker.state_changes"]
    assert changes == [
        (
            {
                "llmguard.breaker.key": "fake/m",
                "llmguard.breaker.from": "closed",
                "llmguard.breaker.to": "open",
            },
            1,
        )
    ]


@pytest.mark.parametrize("anyio_backend", VIRTUAL_TIME)
async def test_a_deadline_keeps_llmguards_own_message() -> None:
    t = make_telemetry()
    guard = Guard(FakeProvider([FakeReply.hanging()]), model="m", timeout=1, telemetry=t.layer)
    with pytest.raises(DeadlineExceeded):
        await guard.complete(user="hi")
    (span,) = t.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.status.description or "").startswith("the total deadline of 1 s passed")
    assert span.attributes is not None
    assert span.attributes["error.type"] == "DeadlineExceeded"
    (point,) = t.metrics()["gen_ai.client.operation.duration"]
    assert point[0]["error.type"] == "DeadlineExceeded"


# -- nesting -----------------------------------------------------------------------------


async def test_the_call_span_nests_under_the_callers_span_and_is_current_inside() -> None:
    t = make_telemetry()
    tracer = t.tracer_provider.get_tracer("app")

    async def answer(request: Request) -> Response:
        with tracer.start_as_current_span("HTTP POST"):  # what an HTTP client instrumentation does
            return Response(text="hi", model=request.model)

    guard = Guard(FunctionProvider(answer, name="fn"), model="m", timeout=None, telemetry=t.layer)
    with tracer.start_as_current_span("POST /ask") as outer:
        await guard.complete(user="hi")

    call, http = t.span("chat m"), t.span("HTTP POST")
    assert call.parent is not None and http.parent is not None
    assert call.parent.span_id == outer.get_span_context().span_id
    assert http.parent.span_id == call.context.span_id
    assert {call.context.trace_id, http.context.trace_id} == {outer.get_span_context().trace_id}


async def test_a_stream_is_opened_under_its_span() -> None:
    t = make_telemetry()
    tracer = t.tracer_provider.get_tracer("app")
    fake = FakeProvider(["Hello!"])

    class Traced:
        name = "fake"

        async def complete(self, request: Request) -> Response:  # pragma: no cover
            raise AssertionError("streams only")

        def stream(self, request: Request) -> Any:
            with tracer.start_as_current_span("HTTP POST"):
                return fake.stream(request)

    guard = Guard(Traced(), model="m", timeout=None, telemetry=t.layer)
    with tracer.start_as_current_span("handler") as outer:
        async with guard.stream(user="hi") as events:
            [_ async for _ in events]

    call, http = t.span("chat m"), t.span("HTTP POST")
    assert call.parent is not None and http.parent is not None
    assert call.parent.span_id == outer.get_span_context().span_id
    assert http.parent.span_id == call.context.span_id


# -- tools -------------------------------------------------------------------------------


def weather_tools(t: Telemetry) -> Toolbox:
    tracer = t.tracer_provider.get_tracer("app")

    @tool
    async def lookup(city: str) -> str:
        """Look up the weather in a city."""
        with tracer.start_as_current_span("db query"):
            return f"sunny in {city}"

    @tool
    def boom() -> str:
        """Always fails."""
        raise ValueError("internal detail 42")

    return Toolbox([lookup, boom])


WEATHER_CALLS = FakeReply.tool_calls_of(
    ToolCall(id="call_1", name="lookup", arguments='{"city": "Paris"}'),
    ToolCall(id="call_2", name="boom", arguments="{}"),
)


def check_tool_spans(t: Telemetry) -> None:
    call = t.span("chat m")
    lookup, boom, db = (
        t.span("execute_tool lookup"),
        t.span("execute_tool boom"),
        t.span("db query"),
    )
    for child in (lookup, boom):
        assert child.kind is SpanKind.INTERNAL
        assert child.parent is not None and child.parent.span_id == call.context.span_id
        assert child.context.trace_id == call.context.trace_id
    assert db.parent is not None and db.parent.span_id == lookup.context.span_id
    assert dict(lookup.attributes or {}) == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "lookup",
        "gen_ai.tool.type": "function",
        "gen_ai.tool.call.id": "call_1",
        "llmguard.tool.status": "ok",
    }
    assert lookup.status.status_code is StatusCode.UNSET
    assert boom.status.status_code is StatusCode.ERROR
    assert boom.status.description == "error"
    assert boom.attributes is not None
    assert boom.attributes["error.type"] == "ValueError"
    assert call.attributes is not None
    assert call.attributes["llmguard.attempts"] == 2
    assert call.attributes["llmguard.tool_calls"] == 2
    assert call.attributes["llmguard.tool_errors"] == 1
    assert "internal detail" not in all_text(t)
    assert t.spans()[-1] is not None and t.spans()[-1].name == "chat m"  # ends last


async def test_a_tool_loop_is_one_call_span_with_execute_tool_children() -> None:
    t = make_telemetry()
    fake = FakeProvider([WEATHER_CALLS, "Sunny in Paris."])
    guard = Guard(fake, model="m", timeout=None, telemetry=t.layer)
    result = await guard.run_tools(user="Weather?", tools=weather_tools(t))
    assert result.text == "Sunny in Paris."
    check_tool_spans(t)
    assert len(t.metrics()["gen_ai.client.operation.duration"]) == 1  # one call


async def test_a_streamed_tool_loop_has_the_same_spans() -> None:
    t = make_telemetry()
    fake = FakeProvider([WEATHER_CALLS, "Sunny in Paris."])
    guard = Guard(fake, model="m", timeout=None, telemetry=t.layer)
    async with guard.run_tools_stream(user="Weather?", tools=weather_tools(t)) as events:
        [_ async for _ in events]
    assert events.result is not None
    check_tool_spans(t)


async def test_a_tool_cancelled_with_its_call_ends_its_span_as_an_error() -> None:
    t = make_telemetry()
    started = anyio.Event()

    @tool
    async def wait_forever() -> str:
        """Never returns."""
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    fake = FakeProvider([FakeReply.tool_call("wait_forever", id="call_w")])
    guard = Guard(fake, model="m", timeout=None, telemetry=t.layer)
    async with anyio.create_task_group() as group:
        group.start_soon(lambda: guard.run_tools(user="go", tools=[wait_forever]))
        await started.wait()
        group.cancel_scope.cancel()

    waited, call = t.span("execute_tool wait_forever"), t.span("chat m")
    cancelled = anyio.get_cancelled_exc_class().__qualname__
    for span in (waited, call):
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None and span.attributes["error.type"] == cancelled


async def test_an_unknown_tool_name_is_capped_and_marked() -> None:
    t = make_telemetry()
    name = "x" * 200
    fake = FakeProvider([FakeReply.tool_call(name, id="call_x"), "ok"])
    guard = Guard(fake, model="m", timeout=None, telemetry=t.layer)
    await guard.run_tools(user="go", tools=Toolbox([]))
    (span,) = [s for s in t.spans() if s.name.startswith("execute_tool")]
    assert span.name == "execute_tool " + "x" * 64 + "…"
    assert span.attributes is not None
    assert span.attributes["error.type"] == "unknown_tool"


# -- the real openai SDK -----------------------------------------------------------------

PLANTED_KEY = "sk-test-PLANTED-abcdef1234567890"


async def test_over_the_openai_sdk_and_no_key_or_provider_message_in_spans() -> None:
    usage = Usage(input_tokens=9, output_tokens=2)
    endpoint = FakeOpenAIEndpoint(
        [
            FakeReply.of_text("Hi!", usage=usage),
            WireReply.api_error(
                401, f"Incorrect API key provided: {PLANTED_KEY}.", code="invalid_api_key"
            ),
        ]
    )
    provider = OpenAIProvider(endpoint.async_client(api_key=PLANTED_KEY))
    t = make_telemetry()
    guard = Guard(provider, model="gpt-4o-mini", timeout=None, telemetry=t.layer)
    response = await guard.complete(user="hi")
    with pytest.raises(ProviderError) as info:
        await guard.complete(user="hi")

    ok, failed = t.spans()
    assert ok.attributes is not None and failed.attributes is not None
    assert ok.attributes["gen_ai.provider.name"] == provider.name == "openai"
    assert response.id and ok.attributes["gen_ai.response.id"] == response.id
    assert ok.attributes["gen_ai.response.model"] == response.model
    assert ok.attributes["gen_ai.usage.input_tokens"] == 9
    assert failed.attributes["error.type"] == type(info.value).__qualname__
    assert failed.attributes["http.response.status_code"] == 401
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description is None
    assert "PLANTED" not in all_text(t)


# -- content -----------------------------------------------------------------------------

CARD = "4111-1111"


def card_tools() -> Toolbox:
    @tool
    def charge(card: str) -> str:
        """Charge a card."""
        return f"charged {card}"

    return Toolbox([charge])


def card_fake() -> FakeProvider:
    return FakeProvider(
        [FakeReply.tool_call("charge", {"card": CARD}, id="call_c"), f"Paid with {CARD}."]
    )


async def test_content_is_never_recorded_by_default() -> None:
    t = make_telemetry()
    guard = Guard(card_fake(), model="m", timeout=None, telemetry=t.layer)
    await guard.run_tools(user=f"Pay with {CARD}", tools=card_tools())
    text = all_text(t)
    assert CARD not in text
    assert "gen_ai.input.messages" not in text and "gen_ai.tool.call.arguments" not in text


async def test_content_is_recorded_redacted_when_asked_for() -> None:
    t = make_telemetry(include_content=True, redact=lambda text: text.replace(CARD, "[card]"))
    guard = Guard(card_fake(), model="m", timeout=None, telemetry=t.layer)
    await guard.run_tools(user=f"Pay with {CARD}", tools=card_tools())
    assert CARD not in all_text(t)

    call, charge = t.span("chat m"), t.span("execute_tool charge")
    assert call.attributes is not None and charge.attributes is not None
    assert json.loads(str(call.attributes["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": "Pay with [card]"}]}
    ]
    assert json.loads(str(call.attributes["gen_ai.output.messages"])) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "Paid with [card]."}],
            "finish_reason": "stop",
        }
    ]
    assert json.loads(str(charge.attributes["gen_ai.tool.call.arguments"])) == {"card": "[card]"}
    assert charge.attributes["gen_ai.tool.call.result"] == "charged [card]"


async def test_content_covers_history_tool_calls_and_refusals() -> None:
    t = make_telemetry(include_content=True)
    history = [
        Message.system("Be brief."),
        Message(role="user", content="Weather?", name="ann"),
        Message.assistant(tool_calls=[ToolCall(id="c1", name="lookup", arguments="not json")]),
        Message.tool("sunny", tool_call_id="c1"),
    ]
    fake = FakeProvider([FakeReply.refused("I cannot."), WEATHER_CALLS])
    guard = Guard(fake, model="m", timeout=None, telemetry=t.layer)
    await guard.complete(messages=history)
    await guard.complete(user="again")
    refused, calls = t.spans()
    assert refused.attributes is not None and calls.attributes is not None
    assert json.loads(str(refused.attributes["gen_ai.input.messages"])) == [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Weather?"}], "name": "ann"},
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "id": "c1", "name": "lookup", "arguments": "not json"}],
        },
        {
            "role": "tool",
            "parts": [{"type": "tool_call_response", "id": "c1", "response": "sunny"}],
        },
    ]
    (output,) = json.loads(str(refused.attributes["gen_ai.output.messages"]))
    assert output["parts"] == [{"type": "refusal", "content": "I cannot."}]
    (output,) = json.loads(str(calls.attributes["gen_ai.output.messages"]))
    assert output == {
        "role": "assistant",
        "parts": [
            {"type": "tool_call", "id": "call_1", "name": "lookup", "arguments": {"city": "Paris"}},
            {"type": "tool_call", "id": "call_2", "name": "boom", "arguments": {}},
        ],
        "finish_reason": "tool_calls",
    }


async def test_a_failing_redact_loses_the_content_not_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def redact(text: str) -> str:
        raise RuntimeError("redaction service down")

    t = make_telemetry(include_content=True, redact=redact)
    guard = Guard(card_fake(), model="m", timeout=None, telemetry=t.layer)
    with caplog.at_level(logging.ERROR, logger="llmguard"):
        result = await guard.run_tools(user="pay", tools=card_tools())
    assert result.text == f"Paid with {CARD}."
    (call,) = t.spans()  # the tool span could not be started; the call span ended
    assert call.attributes is not None and "gen_ai.input.messages" not in call.attributes
    assert "gen_ai.client.operation.duration" in t.metrics()  # recorded before the content
    messages = [r.getMessage() for r in caplog.records]
    assert any("tool observer raised" in m for m in messages)
    assert any("recording a call in OpenTelemetry failed" in m for m in messages)


# -- construction and placement ----------------------------------------------------------


async def test_the_layer_also_decorates_a_function_and_passes_through_outside_a_call() -> None:
    t = make_telemetry()

    @t.layer
    async def ask(request: Request) -> Response:
        return Response(text="hi", model=request.model)

    request = Request.create(model="m", user="hi")
    assert (await ask(request)).text == "hi"
    assert [s.name for s in t.spans()] == ["chat m"]

    assert (await t.layer.complete(request, ask.__wrapped__)).text == "hi"  # type: ignore[attr-defined]
    fake = FakeProvider(["streamed"])
    async with t.layer.stream(request, fake.stream) as events:
        assert [e async for e in events if isinstance(e, TextDelta)]
    assert len(t.spans()) == 1  # no call state, no span


def test_keyword_placement_and_bad_configuration() -> None:
    t = make_telemetry()
    observe, cache = Observe(), Cache(MemoryStore())
    guard = Guard(FakeProvider(), telemetry=t.layer, observe=observe, cache=cache)
    assert guard.layers == (t.layer, observe, cache)  # telemetry is outermost
    with pytest.raises(ConfigurationError, match="not both"):
        Guard(FakeProvider(), [Observe()], telemetry=t.layer)
    with pytest.raises(ConfigurationError, match="redact"):
        OpenTelemetry(redact="***")  # type: ignore[arg-type]
    assert repr(OpenTelemetry(include_content=True)) == "OpenTelemetry(include_content=True)"


async def test_the_default_global_providers_work_without_an_sdk_configured() -> None:
    guard = Guard(FakeProvider(["hi"]), model="m", timeout=None, telemetry=OpenTelemetry())
    assert (await guard.complete(user="hi")).text == "hi"


def test_opentelemetry_is_imported_only_when_the_layer_is_built() -> None:
    code = (
        "import sys, llmguard\n"
        "layer_class = llmguard.OpenTelemetry\n"
        "assert 'opentelemetry' not in sys.modules, 'imported by the name'\n"
        "layer_class()\n"
        "assert 'opentelemetry' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- the details -------------------------------------------------------------------------


async def test_request_parameters_and_usage_details() -> None:
    t = make_telemetry()
    usage = Usage(
        input_tokens=100,
        output_tokens=40,
        cached_input_tokens=64,
        reasoning_tokens=30,
        estimated=True,
    )
    guard = Guard(FakeProvider([FakeReply.of_text("{}", usage=usage)]), [t.layer], timeout=None)
    await guard.complete(
        model="m",
        user="hi",
        top_p=0.9,
        seed=7,
        stop=["END"],
        response_format={"type": "json_object"},
    )
    (span,) = t.spans()
    attributes = dict(span.attributes or {})
    assert {k: v for k, v in attributes.items() if k.startswith("gen_ai.request.")} == {
        "gen_ai.request.model": "m",
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.seed": 7,
        "gen_ai.request.stop_sequences": ("END",),
    }
    assert attributes["gen_ai.output.type"] == "json"
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 64
    assert attributes["gen_ai.usage.reasoning.output_tokens"] == 30
    assert attributes["llmguard.usage.estimated"] is True


async def test_content_of_a_failed_call_and_an_answer_without_finish_reason() -> None:
    t = make_telemetry(include_content=True)
    answers = [Response(text="partial", model="m"), None]

    async def answer(request: Request) -> Response:
        reply = answers.pop(0)
        if reply is None:
            raise ProviderError("upstream said: sk-secret", status_code=500)
        return reply

    guard = Guard(FunctionProvider(answer), model="m", timeout=None, telemetry=t.layer)
    await guard.complete(user="first")
    with pytest.raises(ProviderError):
        await guard.complete(user="second")
    answered, failed = t.spans()
    assert answered.attributes is not None and failed.attributes is not None
    (output,) = json.loads(str(answered.attributes["gen_ai.output.messages"]))
    assert output == {"role": "assistant", "parts": [{"type": "text", "content": "partial"}]}
    assert json.loads(str(failed.attributes["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": "second"}]}
    ]
    assert "gen_ai.output.messages" not in failed.attributes
    assert failed.attributes["http.response.status_code"] == 500
    assert "sk-secret" not in all_text(t)


async def test_a_truncated_tool_result_is_marked() -> None:
    t = make_telemetry()

    @tool
    def long() -> str:
        """A long answer."""
        return "x" * 100

    fake = FakeProvider([FakeReply.tool_call("long", id="call_l"), "ok"])
    guard = Guard(fake, model="m", timeout=None, telemetry=t.layer)
    await guard.run_tools(user="go", tools=Toolbox([long], max_result_chars=10))
    span = t.span("execute_tool long")
    assert span.attributes is not None
    assert span.attributes["llmguard.tool.truncated"] is True
    assert span.attributes["llmguard.tool.status"] == "ok"


@pytest.mark.parametrize(
    ("label", "masked"),
    [
        ("user/hour:user=alice", "user/hour:user=*"),
        ("t:endpoint=/ask,tenant=acme,user=(none)", "t:endpoint=/ask,tenant=*,user=*"),
        ("global/day:global", "global/day:global"),
        ("a:b:user=bob", "a:b:user=*"),  # a limit name may hold a colon
        ("by_team/hour:team-7", "by_team/hour:*"),  # a custom scope: its value is unknown
        ("no-colon", "no-colon"),
    ],
)
def test_budget_scopes_are_masked(label: str, masked: str) -> None:
    from llmguard._layers._otel_attrs import masked_scope

    assert masked_scope(label) == masked


async def test_a_sampled_out_call_still_counts_in_the_metrics() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    layer = OpenTelemetry(
        tracer_provider=tracer_provider,
        meter_provider=MeterProvider(metric_readers=[reader], shutdown_on_exit=False),
        include_content=True,
    )
    t = Telemetry(layer, tracer_provider, exporter, reader)
    guard = Guard(
        FakeProvider(["hi"]), model="m", clock=ManualClock(), timeout=None, telemetry=layer
    )
    await guard.complete(user="hi")
    assert t.spans() == []
    assert t.metrics()["gen_ai.client.operation.duration"] == [(base(), (1, 0.0))]


def test_a_blocking_call_nests_under_the_calling_threads_span() -> None:
    t = make_telemetry()
    guard = Guard(FakeProvider(["hi"]), model="m", telemetry=t.layer)
    tracer = t.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("flask view") as outer:
        assert guard.sync.complete(user="hi").text == "hi"
    call = t.span("chat m")
    assert call.parent is not None
    assert call.parent.span_id == outer.get_span_context().span_id


async def test_metric_attribute_sets_are_reused_and_stay_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from llmguard._layers import _otel_metrics

    monkeypatch.setattr(_otel_metrics, "_MAX_SETS", 2)
    t = make_telemetry()
    guard = Guard(
        FakeProvider(["a"] * 6), model="m", clock=ManualClock(), timeout=None, telemetry=t.layer
    )
    for _ in range(2):
        for endpoint in ("/a", "/b", "/c"):  # a third endpoint goes past the bound
            with llmguard.context(endpoint=endpoint):
                await guard.complete(user="hi")
    assert len(t.layer._instruments._sets) <= 2
    assert t.metrics()["gen_ai.client.operation.duration"] == [
        (base(**{"llmguard.endpoint": endpoint}), (2, 0.0)) for endpoint in ("/a", "/b", "/c")
    ]

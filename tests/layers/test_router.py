"""``Router``: one model per kind of call, composed with fallback."""

from __future__ import annotations

from dataclasses import replace

import pytest

import llmguard
from llmguard import (
    ConfigurationError,
    Fallback,
    Guard,
    Observe,
    Request,
    Response,
    Route,
    Router,
    TextDelta,
    ToolSpec,
)
from llmguard.testing import FakeProvider, FakeReply, capture_records

pytestmark = pytest.mark.anyio

CHEAP = Route(model="cheap", tags={"classify", "extract"})


def routed_guard(fake: FakeProvider, *layers: llmguard.Layer) -> Guard:
    router = Router([CHEAP], default="default-model")
    return Guard(fake, [Observe(), router, *layers], model="whatever")


async def test_tagged_tasks_go_to_the_cheap_model_the_rest_to_the_default() -> None:
    fake = FakeProvider(default="ok")
    guard = routed_guard(fake)
    with capture_records() as records:
        with llmguard.context(tags=["classify"]):
            await guard.complete(user="spam or not?")
        with llmguard.context(tags=["extract", "billing"]):
            await guard.complete(user="the invoice number")
        with llmguard.context(tags=["chat"]):
            await guard.complete(user="tell me a story")
        await guard.complete(user="no tags at all")
    assert [r.model for r in fake.requests] == ["cheap", "cheap", "default-model", "default-model"]
    assert [r.model for r in records] == ["cheap", "cheap", "default-model", "default-model"]


async def test_routing_composes_with_fallback() -> None:
    fake = FakeProvider()
    fake.when(lambda r: r.model == "cheap").reply(FakeReply.server_error(503))
    fake.when(lambda r: r.model == "default-model").reply("the default model answered")
    guard = routed_guard(fake, Fallback(to=["default-model"]))
    with capture_records() as records, llmguard.context(tags=["classify"]):
        response = await guard.complete(user="spam or not?")
    assert response.text == "the default model answered"
    assert [r.model for r in fake.requests] == ["cheap", "default-model"]
    assert records[0].fallback == "fake/default-model"
    async with guard.stream(user="streams are routed too") as events:
        text = "".join([e.text async for e in events if isinstance(e, TextDelta)])
    assert text == "the default model answered" and fake.requests[-1].model == "default-model"


async def test_request_shape_and_estimated_size() -> None:
    tool = ToolSpec(name="lookup", parameters={"type": "object", "properties": {}})
    router = Router(
        [
            Route(model="tool-model", tools=True, name="tools"),
            Route(model="json-model", structured=True),
            Route(model="long-context", min_input_tokens=1000),
            Route(model="tiny", max_input_tokens=10, when=lambda r: "?" in r.last_user_text),
        ]
    )
    fake = FakeProvider(default="ok")
    guard = Guard(fake, [router], model="default-model")

    async def ask(**options: object) -> None:
        await guard.complete(**options)  # type: ignore[arg-type]

    await ask(user="hi", tools=[tool])
    await ask(user="hi", response_format={"type": "json_object"})
    await ask(user="x" * 4000)  # about 1,000 tokens
    await ask(user="why?")
    await ask(user="why not")  # no route matches and there is no default: unchanged
    assert [r.model for r in fake.requests] == [
        "tool-model",
        "json-model",
        "long-context",
        "tiny",
        "default-model",
    ]
    assert router.pick(Request.create(model="m", user="hi", tools=[tool])) is router.routes[0]


async def test_a_route_on_another_provider_and_an_adapted_request() -> None:
    local = FakeProvider(name="local", default="from the local model")
    fake = FakeProvider(default="from the default provider")

    def short(request: Request) -> Request:
        return replace(request, max_output_tokens=64)

    router = Router([Route(model="llama", tags={"private"}, provider=local, adapt=short)])
    guard = Guard(fake, [Observe(), router], model="gpt")
    with capture_records() as records, llmguard.context(tags=["private"]):
        response = await guard.complete(user="my medical question")
        async with guard.stream(user="and a stream") as events:
            async for _ in events:
                pass
    assert response.text == "from the local model"
    assert [(r.model, r.max_output_tokens) for r in local.requests] == [("llama", 64)] * 2
    assert fake.requests == []
    assert [r.provider for r in records] == ["local", "local"]


async def test_the_route_taken_is_noted_in_the_call_state() -> None:
    seen: list[object] = []

    class Note(llmguard.BaseLayer):
        async def complete(self, request: Request, call_next: llmguard.Handler) -> Response:
            response = await call_next(request)
            state = llmguard.current_call()
            assert state is not None
            seen.append(state.extra.get("route"))
            return response

    guard = Guard(FakeProvider(default="ok"), [Note(), Router([CHEAP], default="d")], model="m")
    with llmguard.context(tags=["classify"]):
        await guard.complete(user="a")
    await guard.complete(user="b")
    assert seen == ["cheap", "default"]


def test_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        Route(model="")
    with pytest.raises(ConfigurationError):
        Route(model="m", tags="classify")
    with pytest.raises(ConfigurationError):
        Route(model="m", min_input_tokens=-1)
    with pytest.raises(ConfigurationError):
        Route(model="m", provider="not a provider")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Router([])
    with pytest.raises(ConfigurationError):
        Router(["cheap"])  # type: ignore[list-item]
    assert repr(Router([CHEAP], default="d")) == "Router(['cheap'], default='d')"

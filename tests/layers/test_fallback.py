"""``Fallback`` and ``llmguard.fallback``: an ordered chain of models, providers and a
last resort that needs no LLM, and what the record says about it."""

from __future__ import annotations

from dataclasses import dataclass, replace

import anyio
import pytest
from pydantic import BaseModel

import llmguard
from llmguard import (
    CircuitBreaker,
    CircuitOpen,
    ConfigurationError,
    DeadlineExceeded,
    Fallback,
    FallbackTarget,
    FunctionProvider,
    Guard,
    Observe,
    ProviderError,
    RateLimited,
    Request,
    Response,
    Retry,
    TextDelta,
)
from llmguard.testing import FakeProvider, FakeReply, capture_records

from ._helpers import LoggingClock

pytestmark = pytest.mark.anyio

DOWN = FakeReply.server_error(503)


async def canned(request: Request) -> Response:
    """The last resort: no LLM at all."""
    return Response(text="We are busy; here is our FAQ.")


def on_model(model: str) -> object:
    return lambda request: request.model == model


async def text_of(guard: Guard, **options: object) -> str:
    async with guard.stream(user="hi", **options) as events:  # type: ignore[arg-type]
        return "".join([e.text async for e in events if isinstance(e, TextDelta)])


async def test_primary_down_the_secondary_answers() -> None:
    fake = FakeProvider()
    fake.when(on_model("primary")).reply(DOWN)  # type: ignore[arg-type]
    fake.when(on_model("backup")).reply("from the backup")  # type: ignore[arg-type]
    guard = Guard(fake, [Observe(), Fallback(to=["backup", canned])], model="primary")
    with capture_records() as records:
        response = await guard.complete(user="hi")
    assert response.text == "from the backup" and response.model == "backup"
    (record,) = records
    assert record.fallback == "fake/backup"
    assert record.fallback_reasons == ("fake/primary: ProviderError: fake provider error 503",)
    assert record.model == "backup" and record.attempts == 2 and record.error is None


async def test_all_models_down_the_function_answers_and_the_record_says_so() -> None:
    fake = FakeProvider(default=DOWN)
    guard = Guard(fake, [Observe(), Fallback(to=["backup", canned])], model="primary")
    with capture_records() as records:
        response = await guard.complete(user="hi")
    assert response.text == "We are busy; here is our FAQ."
    assert response.provider == "canned"
    (record,) = records
    assert record.fallback == "canned" and record.provider == "canned"
    assert [reason.split(":")[0] for reason in record.fallback_reasons] == [
        "fake/primary",
        "fake/backup",
    ]
    assert record.attempts == 3 and record.error is None
    assert record.as_dict()["fallback_reasons"] == list(record.fallback_reasons)


async def test_when_every_target_fails_the_last_error_is_raised() -> None:
    async def also_down(request: Request) -> Response:
        raise TimeoutError("the search index is down too")

    guard = Guard(FakeProvider(default=DOWN), [Observe(), Fallback(to=["b", also_down])], model="a")
    with capture_records() as records, pytest.raises(TimeoutError, match="index"):
        await guard.complete(user="hi")
    assert records[0].fallback is None and len(records[0].fallback_reasons) == 3
    assert records[0].error == "TimeoutError"


async def test_a_non_retryable_error_is_not_hidden_unless_configured() -> None:
    fake = FakeProvider([FakeReply.server_error(400)])
    guard = Guard(fake, [Fallback(to=[canned])], model="m")
    with pytest.raises(ProviderError) as info:
        await guard.complete(user="hi")
    assert info.value.status_code == 400
    fake.add(FakeReply.server_error(400))
    configured = Guard(fake, [Fallback(to=[canned], on=ProviderError)], model="m")
    assert (await configured.complete(user="hi")).provider == "canned"
    fake.add(FakeReply.server_error(401))
    predicate = Guard(fake, [Fallback(to=[canned], on=lambda e: "401" in str(e))], model="m")
    assert (await predicate.complete(user="hi")).provider == "canned"


async def test_a_target_failing_for_another_reason_stops_the_chain() -> None:
    fake = FakeProvider([DOWN, FakeReply.server_error(400)])
    guard = Guard(fake, [Observe(), Fallback(to=["b", canned])], model="a")
    with capture_records() as records, pytest.raises(ProviderError) as info:
        await guard.complete(user="hi")
    assert info.value.status_code == 400 and len(fake.requests) == 2
    assert len(records[0].fallback_reasons) == 2


async def test_deadlines_and_open_circuits_fall_back() -> None:
    async def slow(request: Request) -> Response:
        raise DeadlineExceeded("first_token", 5)

    guard = Guard(FunctionProvider(slow), [Fallback(to=[canned])], model="m")
    assert (await guard.complete(user="hi")).provider == "canned"
    breaker = CircuitBreaker(consecutive_failures=1, clock=LoggingClock())
    fake = FakeProvider(default=DOWN)
    guard = Guard(fake, [Observe(), Fallback(to=[canned]), breaker], model="m")
    await guard.complete(user="hi")  # opens the circuit of fake/m
    with capture_records() as records:
        assert (await guard.complete(user="hi")).provider == "canned"
    assert len(fake.requests) == 1  # the open circuit sent nothing
    assert records[0].fallback_reasons[0].startswith("fake/m: CircuitOpen")
    with pytest.raises(CircuitOpen):
        await Guard(fake, [breaker], model="m").complete(user="hi")


async def test_each_target_gets_its_own_circuit_and_retries() -> None:
    other = FakeProvider(name="other")
    other.when(lambda r: True).reply("from the other provider")
    primary = FakeProvider(default=DOWN)
    clock = LoggingClock()
    breaker = CircuitBreaker(consecutive_failures=1, clock=clock)
    layers = [
        Observe(),
        Fallback(to=[(other, "their-model")]),
        breaker,
        Retry(attempts=2, clock=clock),
    ]
    guard = Guard(primary, layers, model="ours")
    with capture_records() as records:
        response = await guard.complete(user="hi")
    assert response.text == "from the other provider"
    assert [r.model for r in other.requests] == ["their-model"]
    assert len(primary.requests) == 2  # retried once, then fell back
    assert records[0].provider == "other" and records[0].fallback == "other/their-model"
    assert await breaker.state("fake/ours") == "open"
    assert await breaker.state("other/their-model") == "closed"


async def test_a_provider_target_keeps_the_model_and_a_target_can_adapt_the_request() -> None:
    other = FakeProvider(name="other", default="ok")
    seen: list[Request] = []

    async def strict_backend(request: Request) -> Response:
        seen.append(request)
        return Response(text="adapted")

    def without_sampling(request: Request) -> Request:
        return replace(request, temperature=None, seed=None)

    primary = FakeProvider([DOWN, DOWN])
    guard = Guard(primary, [Fallback(to=[other])], model="m")
    await guard.complete(user="hi", temperature=0.3)
    assert other.requests[0].model == "m" and other.requests[0].temperature == 0.3
    target = FallbackTarget(function=strict_backend, adapt=without_sampling, name="strict")
    guard = Guard(primary, [Observe(), Fallback(to=target)], model="m")
    with capture_records() as records:
        response = await guard.complete(user="hi", temperature=0.3, seed=7)
    assert response.text == "adapted" and records[0].fallback == "strict"
    assert seen[0].temperature is None and seen[0].seed is None


async def test_streams_switch_only_before_the_first_event() -> None:
    fake = FakeProvider()
    fake.when(on_model("backup")).reply("backup streams")  # type: ignore[arg-type]
    fake.add(FakeReply.cut("never seen", after=0))
    guard = Guard(fake, [Observe(), Fallback(to=["backup"])], model="primary")
    with capture_records() as records:
        assert await text_of(guard) == "backup streams"
    assert records[0].fallback == "fake/backup"
    assert records[0].fallback_reasons[0].startswith("fake/primary: ProviderError")
    assert all(log.closed for log in fake.streams)
    fake.add(FakeReply.cut("abcdefgh", after=1))
    seen: list[str] = []
    with pytest.raises(ProviderError, match="cut"):
        async with guard.stream(user="hi") as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    seen.append(event.text)
    assert seen == ["abcd"]  # the first token was out: no switch, the error surfaces
    assert [r.model for r in fake.requests].count("backup") == 1


async def test_a_stream_falls_back_to_the_function_and_to_another_provider() -> None:
    other = FakeProvider(name="other")
    other.add(FakeReply.rate_limited(retry_after=1), "other provider, after a retry")
    primary = FakeProvider([FakeReply.rate_limited()], default=DOWN)
    clock = LoggingClock()
    layers = [Fallback(to=[(other, "o"), canned]), Retry(attempts=2, clock=clock)]
    guard = Guard(primary, layers, model="m")
    # The retry inside re-opens the stream on the routed provider, not the primary.
    assert await text_of(guard) == "other provider, after a retry"
    assert len(primary.requests) == 2 and len(other.requests) == 2
    other.add(DOWN, DOWN)
    assert await text_of(guard) == "We are busy; here is our FAQ."


async def test_fallback_inside_the_tool_loop_applies_to_every_model_call() -> None:
    @llmguard.tool
    async def lookup(order_id: int) -> str:
        """Find an order."""
        return f"order {order_id} shipped"

    fake = FakeProvider()
    fake.when(on_model("backup")).reply(FakeReply.tool_call("lookup", {"order_id": 7}), times=1)  # type: ignore[arg-type]
    fake.add(DOWN, "Order 7 shipped.")
    guard = Guard(fake, [Observe(), Fallback(to=["backup"])], model="primary")
    with capture_records() as records:
        result = await guard.run_tools(user="where is 7?", tools=[lookup])
    assert result.text == "Order 7 shipped."
    assert [r.model for r in fake.requests] == ["primary", "backup", "primary"]
    assert records[0].fallback == "fake/backup" and len(records[0].fallback_reasons) == 1


async def test_the_decorator_falls_back_to_any_function_with_the_same_signature() -> None:
    @dataclass
    class Hit:
        doc: str

    async def full_text(query: str, k: int = 3) -> list[Hit]:
        return [Hit(doc=f"text:{query}")] * k

    async def also_full_text(query: str, k: int = 3) -> list[Hit]:
        raise AssertionError("the first fallback answered")

    @llmguard.fallback(to=[full_text, also_full_text])
    async def semantic(query: str, k: int = 3) -> list[Hit]:
        raise RateLimited(retry_after=30)

    assert await semantic("cats", k=2) == [Hit(doc="text:cats")] * 2

    @llmguard.fallback(to=full_text)
    async def buggy(query: str, k: int = 3) -> list[Hit]:
        raise KeyError("a bug is not hidden")

    with pytest.raises(KeyError):
        await buggy("cats")

    states: list[llmguard.CallState] = []

    async def noting(query: str, k: int = 3) -> list[Hit]:
        state = llmguard.current_call()
        assert state is not None
        states.append(state)
        return []

    @llmguard.fallback(to=noting, on=(KeyError, ValueError))
    async def picky(query: str, k: int = 3) -> list[Hit]:
        raise ValueError("configured")

    assert await picky("x") == []
    assert states[0].fallback_reasons == [
        "test_the_decorator_falls_back_to_any_function_with_the_same_signature.<locals>.picky: ValueError: configured"
    ]


async def test_the_layer_decorates_a_handler() -> None:
    @Fallback(to=[canned])
    async def ask(request: Request) -> Response:
        raise TimeoutError

    assert (await ask(Request.create(model="m", user="hi"))).provider == "canned"


def test_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        Fallback(to=[])
    with pytest.raises(ConfigurationError):
        Fallback(to=[42])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError):
        Fallback(to=[("not a provider", "m")])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError):
        Fallback(to=["m"], on=42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Fallback(to=["m"], on=())
    with pytest.raises(ConfigurationError):
        Fallback(to=["m"], on=int)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        FallbackTarget()
    with pytest.raises(ConfigurationError):
        FallbackTarget(model="m", function=canned)
    with pytest.raises(ConfigurationError):
        llmguard.fallback(to=[])
    fake = FakeProvider(name="p")
    layer = Fallback(to=(fake, "m"))  # one pair, not two targets
    assert layer.targets == (FallbackTarget(provider=fake, model="m"),)
    assert repr(layer) == "Fallback(to=[FallbackTarget(model='m', provider='p')])"
    assert Fallback(to=("a", "b")).targets[1].model == "b"


async def test_structured_output_through_a_fallback() -> None:
    class Verdict(BaseModel):
        ok: bool

    fake = FakeProvider([DOWN, FakeReply.json({"ok": True})])
    guard = Guard(fake, [Fallback(to=["backup"])], model="primary")
    structured = getattr(guard, "structured", None)
    if structured is None:
        pytest.skip("guard.structured is not built yet")
    verdict = await structured(Verdict, user="ok?")
    assert verdict == Verdict(ok=True)
    assert [r.model for r in fake.requests] == ["primary", "backup"]


async def test_concurrent_calls_do_not_see_each_others_routing() -> None:
    other = FakeProvider(name="other", default="other")
    primary = FakeProvider()
    primary.when("fail").reply(DOWN)
    primary.when("pass").reply("primary")
    guard = Guard(primary, [Fallback(to=[other])], model="m")
    answers: dict[str, str] = {}

    async def one(word: str, index: int) -> None:
        answers[f"{word}{index}"] = (await guard.complete(user=word)).provider

    async with anyio.create_task_group() as tg:
        for index in range(10):
            tg.start_soon(one, "fail", index)
            tg.start_soon(one, "pass", index)
    assert {k: v for k, v in answers.items() if k.startswith("pass")} == {
        f"pass{i}": "fake" for i in range(10)
    }
    assert {v for k, v in answers.items() if k.startswith("fail")} == {"other"}


async def test_a_model_target_stays_on_the_provider_the_call_was_routed_to() -> None:
    local = FakeProvider(name="local")
    local.when(lambda r: r.model == "llama-big").reply(DOWN)
    local.when(lambda r: r.model == "llama-small").reply("small local model")
    cloud = FakeProvider(name="cloud", default="the cloud must not be asked")
    router = llmguard.Router([llmguard.Route(model="llama-big", provider=local, tags={"private"})])
    guard = Guard(cloud, [Observe(), router, Fallback(to=["llama-small"])], model="gpt")
    with capture_records() as records, llmguard.context(tags=["private"]):
        response = await guard.complete(user="hi")
    assert response.text == "small local model" and cloud.requests == []
    assert records[0].fallback == "local/llama-small"
    assert records[0].fallback_reasons[0].startswith("local/llama-big: ProviderError")


async def test_reasons_are_cut_short_and_every_failure_is_listed() -> None:
    async def verbose(request: Request) -> Response:
        raise TimeoutError("x" * 1000)

    guard = Guard(FunctionProvider(verbose), [Observe(), Fallback(to=canned)], model="m")
    with capture_records() as records:
        await guard.complete(user="hi")
    (reason,) = records[0].fallback_reasons
    assert reason.startswith("verbose/m: TimeoutError: xxx") and len(reason) < 250
    assert reason.endswith("…")


async def test_a_stream_whose_every_target_fails_raises_the_last_error() -> None:
    async def no_search(request: Request) -> Response:
        raise ConnectionError("the search index is down")

    guard = Guard(FakeProvider(default=DOWN), [Observe(), Fallback(to=["b", no_search])], model="a")
    with capture_records() as records, pytest.raises(ConnectionError):
        await text_of(guard)
    assert len(records[0].fallback_reasons) == 3 and records[0].fallback is None


async def test_the_decorator_chain_when_fallbacks_fail() -> None:
    async def down(query: str) -> str:
        raise TimeoutError("down too")

    async def buggy(query: str) -> str:
        raise KeyError("a bug")

    @llmguard.fallback(to=[down])
    async def first(query: str) -> str:
        raise ConnectionError("primary down")

    with pytest.raises(TimeoutError, match="down too"):
        await first("q")

    @llmguard.fallback(to=[buggy, down])
    async def second(query: str) -> str:
        raise ConnectionError("primary down")

    with pytest.raises(KeyError):  # not a trigger: the chain ends there
        await second("q")
    with pytest.raises(ConfigurationError):
        llmguard.fallback(to=["not a function"])  # type: ignore[list-item]

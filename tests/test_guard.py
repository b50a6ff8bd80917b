from __future__ import annotations

import dataclasses

import anyio
import pytest
from trio.testing import MockClock

import llmguard
from llmguard import (
    BaseLayer,
    CallRecord,
    ConfigurationError,
    DeadlineExceeded,
    FunctionProvider,
    Guard,
    Handler,
    Observe,
    Request,
    Response,
    Usage,
)
from llmguard.testing import FakeProvider, FakeReply, capture_records


class Tag(BaseLayer):
    """Appends its name to a shared trace on the way in and on the way out."""

    def __init__(self, name: str, trace: list[str]) -> None:
        self.name = name
        self.trace = trace

    async def complete(self, request: Request, call_next: Handler) -> Response:
        self.trace.append(f"in:{self.name}")
        response = await call_next(request)
        self.trace.append(f"out:{self.name}")
        return response


class Answer(BaseLayer):
    """Answers by itself, never calling inward (like a cache hit)."""

    async def complete(self, request: Request, call_next: Handler) -> Response:
        state = llmguard.current_call()
        assert state is not None
        state.cache = "hit"
        return Response(text="from the layer", cached=True)


class Twice(BaseLayer):
    """Calls inward again after a failure (like a retry)."""

    async def complete(self, request: Request, call_next: Handler) -> Response:
        try:
            return await call_next(request)
        except llmguard.ProviderError:
            return await call_next(request)


class Elsewhere(BaseLayer):
    """Calls another handler when the inner one fails (like a fallback)."""

    def __init__(self, other: Handler) -> None:
        self.other = other

    async def complete(self, request: Request, call_next: Handler) -> Response:
        try:
            return await call_next(request)
        except llmguard.ProviderError:
            state = llmguard.current_call()
            assert state is not None
            state.fallback = "backup"
            return await self.other(dataclasses.replace(request, model="backup-model"))


@pytest.mark.anyio
async def test_first_layer_listed_is_outermost() -> None:
    trace: list[str] = []
    guard = Guard(FakeProvider(["ok"]), [Tag("a", trace), Tag("b", trace)], model="m")
    assert (await guard.complete(user="hi")).text == "ok"
    assert trace == ["in:a", "in:b", "out:b", "out:a"]


@pytest.mark.anyio
async def test_layer_answers_without_calling_inward() -> None:
    fake = FakeProvider()
    with capture_records() as records:
        guard = Guard(fake, [Observe(), Answer()], model="m")
        response = await guard.complete(user="hi")
    assert response.text == "from the layer"
    assert fake.requests == []
    assert records[0].cache == "hit"
    assert records[0].attempts == 0


@pytest.mark.anyio
async def test_layer_calls_again_and_every_attempt_is_counted() -> None:
    fake = FakeProvider(
        [
            FakeReply(error=llmguard.ProviderError("boom", status_code=500)),
            FakeReply.of_text("second", usage=Usage(input_tokens=10, output_tokens=5)),
        ]
    )
    with capture_records() as records:
        guard = Guard(fake, [Observe(), Twice()], model="m")
        assert (await guard.complete(user="hi")).text == "second"
    (record,) = records
    assert record.attempts == 2
    assert record.usage.input_tokens == 10
    assert record.error is None


@pytest.mark.anyio
async def test_attempt_usage_is_summed_into_the_record() -> None:
    class Ask3(BaseLayer):
        async def complete(self, request: Request, call_next: Handler) -> Response:
            await call_next(request)
            await call_next(request)
            return await call_next(request)

    replies = [
        FakeReply.of_text(f"r{i}", usage=Usage(input_tokens=i, output_tokens=1)) for i in (1, 2, 3)
    ]
    with capture_records() as records:
        guard = Guard(FakeProvider(replies), [Observe(), Ask3()], model="m")
        await guard.complete(user="hi")
    assert records[0].attempts == 3
    assert records[0].usage == Usage(input_tokens=6, output_tokens=3)


@pytest.mark.anyio
async def test_layer_calls_elsewhere() -> None:
    backup = FakeProvider(["from backup"], name="backup")
    fake = FakeProvider([FakeReply.server_error(503)])
    with capture_records() as records:
        guard = Guard(fake, [Observe(), Elsewhere(backup.complete)], model="m")
        response = await guard.complete(user="hi")
    assert response.text == "from backup"
    assert backup.requests[0].model == "backup-model"
    assert records[0].fallback == "backup"


@pytest.mark.anyio
async def test_per_call_data_never_leaks_between_100_concurrent_calls() -> None:
    async def echo_user(request: Request) -> Response:
        await anyio.lowlevel.checkpoint()  # interleave the calls
        ctx = llmguard.current_context()
        await anyio.lowlevel.checkpoint()
        return Response(text=f"{ctx.user}:{request.last_user_text}", model=request.model)

    guard = Guard(FunctionProvider(echo_user), [Observe()], model="m")
    answers: dict[int, str] = {}

    async def one(i: int) -> None:
        with llmguard.context(user=f"user-{i}", endpoint=f"/e{i % 7}"):
            answers[i] = (await guard.complete(user=f"q{i}")).text

    with capture_records() as records:
        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(one, i)
    assert answers == {i: f"user-{i}:q{i}" for i in range(100)}
    assert len(records) == 100
    by_user = {r.user: r for r in records}
    assert len(by_user) == 100
    for i in range(100):
        record = by_user[f"user-{i}"]
        assert record.endpoint == f"/e{i % 7}"
        assert record.attempts == 1
    assert len({r.call_id for r in records}) == 100


@pytest.mark.anyio
async def test_records_carry_the_facts() -> None:
    fake = FakeProvider([FakeReply.of_text("hello", usage=Usage(input_tokens=7, output_tokens=2))])
    seen: list[CallRecord] = []
    guard = Guard(fake, [Observe(callback=seen.append, include_content=True)], model="m")
    with llmguard.context(user="u", tenant="t", endpoint="/chat", tags=["x"]):
        await guard.complete(system="Be brief.", user="hi")
    (record,) = seen
    assert (record.user, record.tenant, record.endpoint, record.tags) == ("u", "t", "/chat", ("x",))
    assert record.provider == "fake"
    assert record.model == "m"
    assert record.usage.total_tokens == 9
    assert record.finish_reason == "stop"
    assert record.stream is False
    assert record.time_to_first_token_s is None
    assert record.latency_s >= 0
    assert record.prompt == "system: Be brief.\nuser: hi"
    assert record.completion == "hello"
    assert record.as_dict()["input_tokens"] == 7


@pytest.mark.anyio
async def test_records_leave_content_out_by_default(caplog: pytest.LogCaptureFixture) -> None:
    guard = Guard(FakeProvider(["secret answer"]), [Observe()], model="m")
    with caplog.at_level("INFO", logger="llmguard.calls"):
        await guard.complete(user="secret question")
    (log,) = [r for r in caplog.records if r.name == "llmguard.calls"]
    fields = log.llmguard  # type: ignore[attr-defined]
    assert fields["prompt"] is None
    assert fields["completion"] is None
    assert "secret" not in log.getMessage()
    assert "secret" not in repr(fields)


@pytest.mark.anyio
async def test_error_record_and_warning_level(caplog: pytest.LogCaptureFixture) -> None:
    guard = Guard(FakeProvider([FakeReply.rate_limited(retry_after=1)]), [Observe()], model="m")
    with caplog.at_level("INFO", logger="llmguard.calls"), pytest.raises(llmguard.RateLimited):
        await guard.complete(user="hi")
    (log,) = [r for r in caplog.records if r.name == "llmguard.calls"]
    assert log.levelname == "WARNING"
    assert log.llmguard["error"] == "RateLimited"  # type: ignore[attr-defined]
    assert log.llmguard["attempts"] == 1  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_a_raising_callback_does_not_break_the_call(caplog: pytest.LogCaptureFixture) -> None:
    def bad(record: CallRecord) -> None:
        raise RuntimeError("callback bug")

    guard = Guard(FakeProvider(["ok"]), [Observe(callback=bad)], model="m")
    assert (await guard.complete(user="hi")).text == "ok"
    assert "callback raised" in caplog.text


@pytest.mark.anyio
async def test_observe_emits_nothing_when_nobody_listens() -> None:
    guard = Guard(FakeProvider(["ok"]), [Observe(level=5)], model="m")
    assert (await guard.complete(user="hi")).text == "ok"


@pytest.mark.parametrize("anyio_backend", [("trio", {"clock": MockClock(autojump_threshold=0)})])
@pytest.mark.anyio
async def test_total_deadline_fires_on_virtual_time() -> None:
    fake = FakeProvider([FakeReply.hanging()])
    with capture_records() as records:
        guard = Guard(fake, [Observe()], model="m", timeout=5, clock=llmguard.AnyioClock())
        start = anyio.current_time()
        with pytest.raises(DeadlineExceeded) as info:
            await guard.complete(user="hi")
    assert anyio.current_time() - start == pytest.approx(5)
    assert info.value.deadline == "total"
    assert info.value.seconds == 5
    assert records[0].error == "DeadlineExceeded"
    assert records[0].latency_s == pytest.approx(5)  # AnyioClock reads the MockClock


@pytest.mark.parametrize("anyio_backend", [("trio", {"clock": MockClock(autojump_threshold=0)})])
@pytest.mark.anyio
async def test_total_deadline_spans_every_attempt() -> None:
    fake = FakeProvider([FakeReply.server_error(500), "late"], latency=3)
    guard = Guard(fake, [Twice()], model="m", timeout=5)
    with pytest.raises(DeadlineExceeded):
        await guard.complete(user="hi")
    assert len(fake.requests) == 2


@pytest.mark.parametrize("anyio_backend", [("trio", {"clock": MockClock(autojump_threshold=0)})])
@pytest.mark.anyio
async def test_no_deadline_when_timeout_is_none() -> None:
    fake = FakeProvider(["slow"], latency=3600)
    guard = Guard(fake, model="m", timeout=None)
    assert (await guard.complete(user="hi")).text == "slow"


@pytest.mark.anyio
async def test_request_building() -> None:
    fake = FakeProvider(["a", "b"])
    guard = Guard(fake, model="default-model")
    await guard.complete(system="Sys.", user="hi", temperature=0.2, extras={"x": 1})
    request = fake.requests[0]
    assert [m.role for m in request.messages] == ["system", "user"]
    assert request.model == "default-model"
    assert request.temperature == 0.2
    assert dict(request.extras) == {"x": 1}
    prebuilt = Request.create(model="other", user="yo")
    await guard.complete(prebuilt)
    assert fake.requests[1] is prebuilt
    with pytest.raises(TypeError):
        await guard.complete(prebuilt, user="both")


@pytest.mark.anyio
async def test_missing_model_is_a_configuration_error() -> None:
    guard = Guard(FakeProvider(["a"]))
    with pytest.raises(ConfigurationError, match="no model"):
        await guard.complete(user="hi")


def test_construction_errors() -> None:
    with pytest.raises(ConfigurationError, match="not a provider"):
        Guard(object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not a layer"):
        Guard(FakeProvider(), [object()])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="timeout"):
        Guard(FakeProvider(), timeout=0)
    with pytest.raises(ConfigurationError):
        FunctionProvider("nope")  # type: ignore[arg-type]


def test_guard_repr_and_properties() -> None:
    fake = FakeProvider()
    observe = Observe()
    guard = Guard(fake, [observe], timeout=12)
    assert guard.provider is fake
    assert guard.layers == (observe,)
    assert guard.timeout == 12
    assert repr(guard) == "Guard('fake', layers=[Observe], timeout=12)"
    assert "Observe(logger='llmguard.calls'" in repr(observe)


@pytest.mark.anyio
async def test_a_layer_decorates_a_plain_handler() -> None:
    async def ask(request: Request) -> Response:
        """Ask something."""
        return Response(text=request.last_user_text.upper(), usage=Usage(output_tokens=1))

    observed = Observe()(ask)
    assert observed.__name__ == "ask"
    assert observed.__doc__ == "Ask something."
    with capture_records() as records:
        response = await observed(Request.create(model="m", user="hi"))
    assert response.text == "HI"
    assert records[0].provider == "ask"
    assert records[0].attempts == 1
    assert records[0].usage.output_tokens == 1


@pytest.mark.anyio
async def test_a_decorated_handler_joins_an_open_call() -> None:
    async def inner(request: Request) -> Response:
        return Response(text="inner")

    decorated = BaseLayer()(inner)
    guard = Guard(FunctionProvider(decorated), [Observe()], model="m")
    with capture_records() as records:
        await guard.complete(user="hi")
    assert len(records) == 1
    assert records[0].attempts == 1  # the innermost recorder counts, never twice


@pytest.mark.anyio
async def test_function_provider_streams_a_completion_as_events() -> None:
    async def answer(request: Request) -> Response:
        return Response(text="whole", finish_reason="stop", usage=Usage(output_tokens=2))

    guard = Guard(FunctionProvider(answer), model="m")
    async with guard.stream(user="hi") as events:
        kinds = [type(e).__name__ async for e in events]
    assert kinds == ["TextDelta", "UsageUpdate", "Finish"]
    assert events.response.text == "whole"
    assert events.response.usage.output_tokens == 2


@pytest.mark.anyio
async def test_attempt_hooks_run_before_every_attempt_and_can_stop_one() -> None:
    seen: list[int] = []

    class Hooked(BaseLayer):
        async def complete(self, request: Request, call_next: Handler) -> Response:
            state = llmguard.current_call()
            assert state is not None

            async def hook(state: llmguard.CallState, request: Request, n: int) -> None:
                seen.append(n)
                if n == 2:
                    raise llmguard.BudgetExceeded(
                        scope="s", limit=1, used=1, remaining=0, unit="tokens", reset_at=None
                    )

            state.before_attempt(hook)
            return await call_next(request)

    fake = FakeProvider([FakeReply.server_error(500), FakeReply.server_error(500), "never"])

    class Retry3(BaseLayer):
        async def complete(self, request: Request, call_next: Handler) -> Response:
            for _ in range(2):
                try:
                    return await call_next(request)
                except llmguard.ProviderError:
                    pass
            return await call_next(request)

    guard = Guard(fake, [Hooked(), Retry3()], model="m")
    with pytest.raises(llmguard.BudgetExceeded):
        await guard.complete(user="hi")
    assert seen == [0, 1, 2]
    assert len(fake.requests) == 2


@pytest.mark.anyio
async def test_keyword_layers_are_stacked_in_the_default_order() -> None:
    trace: list[str] = []
    names = ["cache", "budget", "fallback", "breaker", "retry", "deadlines"]
    tags = {name: Tag(name, trace) for name in names}
    guard = Guard(FakeProvider(["ok"]), model="m", observe=True, **tags)  # type: ignore[arg-type]
    assert isinstance(guard.layers[0], Observe)
    await guard.complete(user="hi")
    assert [t for t in trace if t.startswith("in:")] == [f"in:{n}" for n in names]
    with pytest.raises(ConfigurationError, match="not both"):
        Guard(FakeProvider(), [Observe()], observe=True)
    custom = Observe(include_content=True)
    assert Guard(FakeProvider(), observe=custom).layers == (custom,)

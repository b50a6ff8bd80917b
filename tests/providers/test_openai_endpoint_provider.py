"""OpenAIProvider against the fake OpenAI wire endpoint: what the recordings lack."""

from __future__ import annotations

import pytest

import llmguard
from llmguard import Guard, Observe, OpenAIProvider, TextDelta, Usage
from llmguard.testing import FakeOpenAIEndpoint, FakeReply, Quirk, WireReply, capture_records

pytestmark = pytest.mark.anyio

ANSWER = "The quick brown fox jumps over the lazy dog."
USAGE = Usage(input_tokens=21, output_tokens=11)


def guard_on(endpoint: FakeOpenAIEndpoint, wire: str, **kw: object) -> Guard:
    provider = OpenAIProvider(endpoint.async_client(), wire=wire, **kw)  # type: ignore[arg-type]
    return Guard(provider, [Observe()], model="gpt-4o-mini", timeout=None)


async def stream_text(guard: Guard) -> tuple[str, llmguard.Response]:
    async with guard.stream(user="hi") as events:
        text = "".join([e.text async for e in events if isinstance(e, TextDelta)])
    return text, events.response


@pytest.mark.parametrize(
    "quirk",
    [
        Quirk.USAGE_IN_VENDOR_FIELD,
        Quirk.RUNNING_USAGE,
        Quirk.FILTER_RESULTS_FIRST,
        Quirk.CONTENT_PARTS,
        Quirk.REASONING_CONTENT,
        Quirk.REASONING_FIELD,
        Quirk.FINISH_REASON_EOS,
        Quirk.FINISH_IN_LAST_CHUNK,
        Quirk.COMMENTS,
        Quirk.NO_DONE,
        Quirk.USAGE_IN_VENDOR_FIELD | Quirk.FILTER_RESULTS_FIRST | Quirk.NO_DONE | Quirk.COMMENTS,
    ],
    ids=lambda q: str(q.name),
)
async def test_compatible_server_quirks_give_the_same_answer_and_usage(
    quirk: Quirk, wire: str
) -> None:
    endpoint = FakeOpenAIEndpoint([FakeReply.of_text(ANSWER, usage=USAGE)], compat=quirk)
    with capture_records() as records:
        text, response = await stream_text(guard_on(endpoint, wire))
    assert text == ANSWER  # reasoning never leaks into the answer
    assert response.finish_reason == "stop"
    assert response.usage == USAGE  # read once, never summed, never lost
    assert records[0].usage == USAGE


async def test_an_empty_tool_call_id_keeps_the_call(wire: str) -> None:
    reply = FakeReply.tool_call("lookup", {"q": "x"}, id="call_1")
    endpoint = FakeOpenAIEndpoint([reply], compat=Quirk.EMPTY_TOOL_CALL_ID)
    guard = guard_on(endpoint, wire)
    async with guard.stream(user="hi") as events:
        [_ async for _ in events]
    (call,) = events.response.tool_calls
    assert call.name == "lookup"
    assert call.arguments == '{"q": "x"}'


@pytest.mark.parametrize("quirk", [Quirk.ERROR_EVENT, Quirk.ERROR_CHUNK])
async def test_an_error_after_some_text_is_an_error_never_a_short_answer(
    quirk: Quirk, wire: str
) -> None:
    endpoint = FakeOpenAIEndpoint([FakeReply.of_text(ANSWER)], compat=quirk)
    with capture_records() as records, pytest.raises(llmguard.ProviderError) as info:
        await stream_text(guard_on(endpoint, wire))
    assert info.value.retryable is True
    assert records[0].error == "ProviderError"
    assert records[0].usage.output_tokens > 0  # charged for what it sent


async def test_429_with_retry_after_headers(wire: str) -> None:
    endpoint = FakeOpenAIEndpoint([FakeReply.rate_limited(retry_after=7)])
    guard = guard_on(endpoint, wire)
    with pytest.raises(llmguard.RateLimited) as info:
        await guard.complete(user="hi")
    assert info.value.retry_after == 7.0
    assert info.value.status_code == 429
    assert info.value.retryable


async def test_retry_after_ms_wins(wire: str) -> None:
    reply = WireReply.api_error(
        429,
        "slow down",
        type="requests",
        code="rate_limit_exceeded",
        headers={"retry-after": "9", "retry-after-ms": "250"},
    )
    guard = guard_on(FakeOpenAIEndpoint([reply]), wire)
    with pytest.raises(llmguard.RateLimited) as info:
        await guard.complete(user="hi")
    assert info.value.retry_after == 0.25


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_retryable(status: int, wire: str) -> None:
    guard = guard_on(FakeOpenAIEndpoint([FakeReply.server_error(status)]), wire)
    with pytest.raises(llmguard.ProviderError) as info:
        await guard.complete(user="hi")
    assert info.value.status_code == status
    assert info.value.retryable


async def test_timeouts_and_connection_errors(wire: str) -> None:
    guard = guard_on(FakeOpenAIEndpoint([FakeReply.timeout()]), wire)
    with pytest.raises(llmguard.ProviderTimeout):
        await guard.complete(user="hi")


@pytest.mark.parametrize("failure", [None, "disconnect", "timeout"])
async def test_a_stream_cut_mid_event_is_a_typed_error(failure: str | None, wire: str) -> None:
    reply = WireReply.cut_stream(FakeReply.of_text(ANSWER), after=3, failure=failure)  # type: ignore[arg-type]
    guard = guard_on(FakeOpenAIEndpoint([reply]), wire)
    with capture_records() as records, pytest.raises(llmguard.ProviderError) as info:
        await stream_text(guard)
    expected = (
        llmguard.ProviderTimeout if failure == "timeout" else llmguard.ProviderConnectionError
    )
    assert isinstance(info.value, expected | llmguard.MalformedResponse)
    assert records[0].usage.estimated is True


async def test_malformed_sse_and_json_and_html_pages(wire: str) -> None:
    guard = guard_on(
        FakeOpenAIEndpoint(
            [
                WireReply.malformed_sse(FakeReply.of_text(ANSWER), after=1),
                WireReply.malformed_json(),
                WireReply.html_error(status=502),
            ]
        ),
        wire,
    )
    with pytest.raises(llmguard.MalformedResponse):
        await stream_text(guard)
    with pytest.raises(llmguard.MalformedResponse):
        await guard.complete(user="hi")
    with pytest.raises(llmguard.ProviderError) as info:
        await guard.complete(user="hi")
    assert info.value.status_code == 502
    assert "<html" not in str(info.value).lower()


async def test_leaving_early_closes_the_http_response(wire: str) -> None:
    endpoint = FakeOpenAIEndpoint([FakeReply.of_text(ANSWER * 20)])
    guard = guard_on(endpoint, wire)
    async with guard.stream(user="hi") as events:
        async for _ in events:
            break
    (served,) = endpoint.responses
    assert served.closed
    assert served.closed_early


async def test_cancelling_the_consumer_closes_the_http_response(wire: str) -> None:
    import anyio

    endpoint = FakeOpenAIEndpoint([FakeReply.of_text(ANSWER * 20)])
    guard = guard_on(endpoint, wire)
    with anyio.CancelScope() as scope:
        async with guard.stream(user="hi") as events:
            async for _ in events:
                scope.cancel()
                await anyio.lowlevel.checkpoint()
    (served,) = endpoint.responses
    assert served.closed_early


async def test_responses_api_on_the_endpoint() -> None:
    endpoint = FakeOpenAIEndpoint([FakeReply.of_text("pong", usage=USAGE), "streamed pong"])
    guard = Guard(OpenAIProvider(endpoint.async_client(), api="responses"), model="gpt-4o-mini")
    response = await guard.complete(user="ping")
    assert (response.text, response.usage) == ("pong", USAGE)
    text, streamed = await stream_text(guard)
    assert text == "streamed pong"
    assert streamed.finish_reason == "stop"
    assert endpoint.requests[0].path.endswith("/responses")


async def test_embeddings_on_the_endpoint() -> None:
    endpoint = FakeOpenAIEndpoint(embedding_dimensions=16)
    provider = OpenAIProvider(endpoint.async_client())
    result = await provider.embed(["a", "b", "c"])
    assert len(result.vectors) == 3
    assert all(len(v) == 16 for v in result.vectors)

from __future__ import annotations

import json

import anyio
import pytest
from trio.testing import MockClock

from llmguard import (
    AnyioClock,
    BudgetExceeded,
    ConfigurationError,
    Finish,
    Guard,
    Observe,
    ProviderError,
    RefusalDelta,
    SSEError,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageUpdate,
    aparse_sse,
    parse_sse,
    sse,
)
from llmguard.testing import FakeProvider, FakeReply, ManualClock, capture_records

MOCK_TRIO = [("trio", {"clock": MockClock(autojump_threshold=0)})]

EVENTS: list[StreamEvent] = [
    TextDelta(text='He said "hi"\n'),
    TextDelta(text="é ✓ \u2028 \x85 </script>"),
    ToolCallDelta(index=0, id="call_1", name="get_weather"),
    ToolCallDelta(index=0, arguments='{"city": "Par'),
    RefusalDelta(text='I can\'t "help"'),
    UsageUpdate(usage=Usage(input_tokens=12, output_tokens=3, reasoning_tokens=1)),
    Finish(reason="tool_calls"),
]

WIRE = (
    b'data: {"type":"text","text":"He said \\"hi\\"\\n"}\n\n'
    b'data: {"type":"text","text":"\xc3\xa9 \xe2\x9c\x93 \xe2\x80\xa8 \xc2\x85 </script>"}\n\n'
    b'data: {"type":"tool_call","index":0,"id":"call_1","name":"get_weather","arguments":""}\n\n'
    b'data: {"type":"tool_call","index":0,"id":null,"name":null,"arguments":"{\\"city\\": \\"Par"}\n\n'
    b'data: {"type":"refusal","text":"I can\'t \\"help\\""}\n\n'
    b'data: {"type":"usage","input_tokens":12,"output_tokens":3,"cached_input_tokens":0,"reasoning_tokens":1,"estimated":false}\n\n'
    b'data: {"type":"finish","reason":"tool_calls"}\n\n'
    b"data: [DONE]\n\n"
)


async def source(events: list[StreamEvent]):  # type: ignore[no-untyped-def]
    for event in events:
        yield event


@pytest.mark.anyio
async def test_sse_encodes_the_documented_shape_exactly() -> None:
    body = b"".join([chunk async for chunk in sse(source(EVENTS))])
    assert body == WIRE
    for line in body.split(b"\n\n")[:-2]:
        payload = json.loads(line.removeprefix(b"data: "))
        assert "type" in payload


@pytest.mark.anyio
async def test_parse_sse_reads_back_every_event_in_any_chunking() -> None:
    assert list(parse_sse(WIRE)) == EVENTS
    assert list(parse_sse(WIRE.decode())) == EVENTS
    bytewise = [WIRE[i : i + 1] for i in range(len(WIRE))]
    assert list(parse_sse(bytewise)) == EVENTS
    crlf = WIRE.replace(b"\n", b"\r\n")
    assert list(parse_sse([crlf[i : i + 3] for i in range(0, len(crlf), 3)])) == EVENTS

    async def chunks():  # type: ignore[no-untyped-def]
        for i in range(0, len(WIRE), 7):
            yield WIRE[i : i + 7]

    assert [e async for e in aparse_sse(chunks())] == EVENTS


def test_parse_sse_ignores_comments_and_unknown_types_and_needs_done() -> None:
    body = b': ping\n\nid: 1\ndata: {"type":"future","x":1}\n\nevent: other\ndata: {}\n\ndata: {"type":"text","text":"a"}\n\ndata: [DONE]\n\n'
    assert list(parse_sse(body)) == [TextDelta(text="a")]
    with pytest.raises(SSEError) as info:
        list(parse_sse(b'data: {"type":"text","text":"a"}\n\n'))
    assert info.value.error_type == "IncompleteStream"


@pytest.mark.anyio
async def test_a_failure_ends_with_a_safe_error_event_and_no_done() -> None:
    secret = "sk-live-SECRET-1234 leaked in the provider's message"
    fake = FakeProvider([FakeReply.cut("abcdefgh", after=2, error=ProviderError(secret))])
    guard = Guard(fake, [Observe()], model="m")
    chunks: list[bytes] = []
    with capture_records() as records, pytest.raises(ProviderError):
        async with guard.stream(user="hi") as events:
            async for chunk in sse(events):
                chunks.append(chunk)
    body = b"".join(chunks)
    assert body.endswith(
        b'event: error\ndata: {"type":"error","error":"ProviderError",'
        b'"message":"the model provider failed to answer","status":502}\n\n'
    )
    assert b"[DONE]" not in body and b"SECRET" not in body and b"Traceback" not in body
    assert records[0].error == "ProviderError"  # the error reached the guarded stream
    assert fake.streams[-1].closed
    with pytest.raises(SSEError) as info:
        list(parse_sse(body))
    assert (info.value.error_type, info.value.status_code) == ("ProviderError", 502)


@pytest.mark.anyio
async def test_any_other_exception_is_an_internal_error_without_details() -> None:
    async def broken():  # type: ignore[no-untyped-def]
        yield TextDelta(text="a")
        raise KeyError("/etc/secret/path")

    stream = sse(broken())
    chunks = [await stream.__anext__(), await stream.__anext__()]
    with pytest.raises(KeyError):
        await stream.__anext__()
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()
    assert chunks[1] == (
        b'event: error\ndata: {"type":"error","error":"InternalError",'
        b'"message":"the request could not be completed","status":500}\n\n'
    )


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", MOCK_TRIO)
async def test_heartbeats_while_waiting_on_the_injected_clock() -> None:
    fake = FakeProvider(["hello"], first_token_delay=40, chunk_size=5)
    guard = Guard(fake, model="m", timeout=None)
    async with (
        guard.stream(user="hi") as events,
        sse(events, heartbeat=15, clock=AnyioClock()) as body,
    ):
        chunks = [chunk async for chunk in body]
    assert chunks[:3] == [b": ping\n\n", b": ping\n\n", b'data: {"type":"text","text":"hello"}\n\n']
    assert chunks[-1] == b"data: [DONE]\n\n"
    assert chunks.count(b": ping\n\n") == 2


@pytest.mark.anyio
async def test_heartbeats_follow_a_manual_clock() -> None:
    clock = ManualClock()
    release = anyio.Event()

    async def slow():  # type: ignore[no-untyped-def]
        await release.wait()
        yield TextDelta(text="x")

    got: list[bytes] = []
    async with sse(slow(), heartbeat=10, clock=clock) as body:
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        clock.advance(10)
        got.append(await body.__anext__())
        clock.advance(9)
        release.set()
        got.extend([chunk async for chunk in body])
    assert got == [b": ping\n\n", b'data: {"type":"text","text":"x"}\n\n', b"data: [DONE]\n\n"]


@pytest.mark.anyio
async def test_heartbeat_mode_passes_errors_through_unwrapped() -> None:
    fake = FakeProvider([FakeReply.cut("abcdefgh", after=1)])
    guard = Guard(fake, model="m")
    chunks: list[bytes] = []
    with pytest.raises(ProviderError):
        async with guard.stream(user="hi") as events, sse(events, heartbeat=30) as body:
            async for chunk in body:
                chunks.append(chunk)
    assert chunks[-1].startswith(b"event: error\n")


@pytest.mark.anyio
async def test_heartbeat_needs_entering_and_values_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="async with sse"):
        await sse(source([]), heartbeat=5).__anext__()
    with pytest.raises(ConfigurationError):
        sse(source([]), heartbeat=0)
    stream = sse(source([]))
    async with stream:
        with pytest.raises(ConfigurationError):
            await stream.__aenter__()
    from llmguard._sse import error_frame

    refused = BudgetExceeded(
        scope="user:u1", limit=10, used=10, remaining=0, unit="tokens", reset_at=None
    )
    assert b'"error":"BudgetExceeded"' in error_frame(refused) and b'"status":429' in error_frame(
        refused
    )

"""``FakeOpenAIEndpoint`` through the real openai SDK.

The transport is the SDK's own: ``httpx2.MockTransport`` on openai 3.x, ``httpx``'s on
2.x (``make test`` runs this module in both environments; the respx test runs on 2.x).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import openai
import pytest

from llmguard import ProviderConnectionError, ToolCall, Usage
from llmguard.testing import (
    FakeOpenAIEndpoint,
    FakeProvider,
    FakeReply,
    FakeScriptExhausted,
    ManualClock,
    Quirk,
    UnexpectedRequest,
    WireReply,
    WireRequest,
    WireResponse,
)
from llmguard.testing._cassette import close_now
from llmguard.testing._openai_body import http_module_for_sdk

pytestmark = pytest.mark.anyio

OPENAI_MAJOR = int(openai.__version__.split(".")[0])
KEY = "sk-test-endpoint-abcdef123456"
BASE_URL = "https://api.openai.test/v1"
FIXTURES = Path(
    os.environ.get(
        "LLMGUARD_FIXTURES", Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "openai"
    )
)
MESSAGES: list[Any] = [{"role": "user", "content": "Hi"}]


# The HTTP library of the installed SDK (httpx2 from openai 3.x on, httpx before).
http_module = http_module_for_sdk


HTTP = http_module()


def sdk(endpoint: FakeOpenAIEndpoint, **options: Any) -> openai.AsyncOpenAI:
    """The real SDK on ``MockTransport(endpoint.handler)``."""
    return openai.AsyncOpenAI(
        api_key=KEY,
        base_url=BASE_URL,
        max_retries=0,
        http_client=HTTP.AsyncClient(transport=HTTP.MockTransport(endpoint.handler)),
        **options,
    )


def raised(error: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``kind`` is ``error`` or in its chain of causes. openai 2.x turns any
    exception from the transport into ``APIConnectionError`` (ours is its cause);
    openai 3.x lets ours through."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__
    return False


def escaping(kind: type[BaseException]) -> type[BaseException]:
    """What reaches the caller when the transport raises ``kind``."""
    return kind if OPENAI_MAJOR >= 3 else openai.APIConnectionError


def sse_payloads(text: str) -> list[Any]:
    """The JSON of every ``data:`` line of an SSE body (an independent reading)."""
    out = []
    for line in text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(json.loads(line[6:]))
    return out


def fixture(name: str) -> dict[str, Any]:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"the recorded fixtures are missing: {FIXTURES}")
    return json.loads(path.read_text())  # type: ignore[no-any-return]


async def chat(client: openai.AsyncOpenAI, **options: Any) -> Any:
    return await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, **options)


async def stream_chunks(client: openai.AsyncOpenAI, **options: Any) -> list[Any]:
    stream = await chat(client, stream=True, **options)
    return [chunk async for chunk in stream]


def text_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


# Chat completions: JSON --------------------------------------------------------------


async def test_chat_text_json_and_the_request_log() -> None:
    endpoint = FakeOpenAIEndpoint(["Hello!"])
    completion = await chat(sdk(endpoint), temperature=0.2)
    assert completion.id == "chatcmpl-fake1"
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    choice = completion.choices[0]
    assert (choice.message.content, choice.finish_reason) == ("Hello!", "stop")
    assert (choice.message.role, choice.message.refusal) == ("assistant", None)
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (4, 2)
    assert completion.usage.total_tokens == 6
    [logged] = endpoint.requests
    assert isinstance(logged, WireRequest)
    assert (logged.method, logged.path, logged.api) == ("POST", "/v1/chat/completions", "chat")
    assert logged.url == f"{BASE_URL}/chat/completions"
    assert logged.json == {"messages": MESSAGES, "model": "gpt-4o-mini", "temperature": 0.2}
    assert not logged.stream
    assert logged.headers["authorization"] == "[redacted]"
    assert KEY not in json.dumps(logged.headers)
    assert logged.headers["content-type"] == "application/json"
    response = logged.response
    assert isinstance(response, WireResponse)
    assert response is endpoint.responses[0]
    assert (response.status, response.sse, response.completed, response.closed) == (
        200,
        False,
        True,
        True,
    )
    assert json.loads(response.text)["choices"][0]["message"]["content"] == "Hello!"


async def test_chat_tool_calls_refusal_json_and_scripted_usage() -> None:
    calls = (
        ToolCall(id="call_a", name="get_weather", arguments='{"city": "Paris"}'),
        ToolCall(id="call_b", name="get_weather", arguments='{"city": "Rome"}'),
    )
    usage = Usage(input_tokens=100, output_tokens=40, cached_input_tokens=64, reasoning_tokens=8)
    endpoint = FakeOpenAIEndpoint(
        [
            FakeReply.tool_calls_of(*calls),
            FakeReply.refused("I can't help with that."),
            FakeReply.json({"rating": 5}),
            FakeReply(text="cut", usage=usage, finish_reason="length", model="gpt-4o-2024-08-06"),
        ]
    )
    client = sdk(endpoint)
    tools = await chat(client)
    message = tools.choices[0].message
    assert tools.choices[0].finish_reason == "tool_calls"
    assert message.content is None
    assert [(c.id, c.type, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("call_a", "function", "get_weather", '{"city": "Paris"}'),
        ("call_b", "function", "get_weather", '{"city": "Rome"}'),
    ]
    refused = (await chat(client)).choices[0].message
    assert (refused.content, refused.refusal) == (None, "I can't help with that.")
    assert json.loads((await chat(client)).choices[0].message.content) == {"rating": 5}
    last = await chat(client)
    assert (last.choices[0].finish_reason, last.model) == ("length", "gpt-4o-2024-08-06")
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (100, 40)
    assert last.usage.prompt_tokens_details.cached_tokens == 64
    assert last.usage.completion_tokens_details.reasoning_tokens == 8


async def test_json_bodies_have_the_recorded_shape() -> None:
    recorded = json.loads(fixture("chat_completion_basic.json")["response"]["body"])
    endpoint = FakeOpenAIEndpoint(["Mitochondria"])
    await chat(sdk(endpoint))
    ours = json.loads(endpoint.responses[0].text)
    assert set(ours) == set(recorded)
    assert set(ours["choices"][0]) == set(recorded["choices"][0])
    assert set(ours["choices"][0]["message"]) == set(recorded["choices"][0]["message"])
    assert set(ours["usage"]) == set(recorded["usage"])
    assert ours["usage"]["completion_tokens_details"].keys() == (
        recorded["usage"]["completion_tokens_details"].keys()
    )


# Chat completions: SSE ---------------------------------------------------------------


async def test_chat_stream_with_include_usage() -> None:
    endpoint = FakeOpenAIEndpoint(["Hello there!"])
    chunks = await stream_chunks(sdk(endpoint), stream_options={"include_usage": True})
    assert text_of(chunks) == "Hello there!"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].delta.content for c in chunks[1:4]] == ["Hell", "o th", "ere!"]
    finish = chunks[-2]
    assert finish.choices[0].finish_reason == "stop"
    assert finish.usage is None
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (4, 3)
    raw = endpoint.responses[0]
    assert raw.sse and raw.completed and raw.closed
    assert raw.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert raw.text.endswith("data: [DONE]\n\n")
    assert all(p["object"] == "chat.completion.chunk" for p in sse_payloads(raw.text))
    assert raw.chunks_sent == raw.chunks_total == len(chunks) + 1  # + [DONE]


async def test_chat_stream_without_include_usage_has_no_usage() -> None:
    endpoint = FakeOpenAIEndpoint(["Hello"])
    chunks = await stream_chunks(sdk(endpoint))
    assert text_of(chunks) == "Hello"
    assert all(c.choices for c in chunks)
    assert all("usage" not in p for p in sse_payloads(endpoint.responses[0].text))


async def test_chat_stream_parallel_tool_calls_by_index() -> None:
    calls = (
        ToolCall(id="call_1", name="get_weather", arguments='{"location": "Seattle, WA"}'),
        ToolCall(id="call_2", name="get_weather", arguments='{"location": "San Francisco, CA"}'),
    )
    endpoint = FakeOpenAIEndpoint([FakeReply.tool_calls_of(*calls)], chunk_size=5)
    chunks = await stream_chunks(sdk(endpoint), stream_options={"include_usage": True})
    built: dict[int, dict[str, str]] = {}
    firsts = []
    for chunk in chunks:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            entry = built.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            if delta.id is not None:
                firsts.append((delta.index, delta.id, delta.function.name, delta.type))
                entry["id"], entry["name"] = delta.id, delta.function.name
            entry["arguments"] += delta.function.arguments or ""
    assert firsts == [
        (0, "call_1", "get_weather", "function"),
        (1, "call_2", "get_weather", "function"),
    ]
    assert [built[i] for i in (0, 1)] == [
        {"id": c.id, "name": c.name, "arguments": c.arguments} for c in calls
    ]
    assert chunks[0].choices[0].delta.content is None
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].usage is not None


async def test_chat_stream_refusal() -> None:
    endpoint = FakeOpenAIEndpoint([FakeReply.refused("No can do.")])
    chunks = await stream_chunks(sdk(endpoint))
    assert "".join(c.choices[0].delta.refusal or "" for c in chunks) == "No can do."
    assert text_of(chunks) == ""


async def test_chat_stream_chunks_have_the_recorded_shape() -> None:
    recorded = sse_payloads(fixture("chat_stream_text_include_usage.json")["response"]["body"])
    endpoint = FakeOpenAIEndpoint(["This is a test."])
    await stream_chunks(sdk(endpoint), stream_options={"include_usage": True})
    ours = sse_payloads(endpoint.responses[0].text)
    for mine, theirs in [(ours[0], recorded[0]), (ours[1], recorded[1])]:
        assert set(mine) == set(theirs)
        assert set(mine["choices"][0]) == set(theirs["choices"][0])
        assert set(mine["choices"][0]["delta"]) == set(theirs["choices"][0]["delta"])
    assert set(ours[-2]) == set(recorded[-2])
    assert ours[-2]["choices"][0]["delta"] == {}
    assert set(ours[-1]) == set(recorded[-1])
    assert set(ours[-1]["usage"]) == set(recorded[-1]["usage"])
    tools = sse_payloads(fixture("chat_stream_tool_calls_parallel.json")["response"]["body"])
    endpoint.add(FakeReply.tool_call("get_current_weather", {"location": "Seattle, WA"}))
    await stream_chunks(sdk(endpoint), stream_options={"include_usage": True})
    mine_tools = sse_payloads(endpoint.responses[1].text)
    opening, piece = mine_tools[1]["choices"][0]["delta"], mine_tools[2]["choices"][0]["delta"]
    assert opening.keys() == tools[1]["choices"][0]["delta"].keys()
    assert (
        opening["tool_calls"][0].keys() == tools[1]["choices"][0]["delta"]["tool_calls"][0].keys()
    )
    assert piece["tool_calls"][0].keys() == tools[2]["choices"][0]["delta"]["tool_calls"][0].keys()


# The Responses API -------------------------------------------------------------------


async def test_responses_json_text_and_function_call() -> None:
    endpoint = FakeOpenAIEndpoint(
        ["pong", FakeReply.tool_call("multiply", {"a": 2, "b": 3}, id="call_x")]
    )
    client = sdk(endpoint)
    response = await client.responses.create(model="gpt-5.5", input="Reply with exactly: pong")
    assert response.output_text == "pong"
    assert (response.id, response.status, response.model) == ("resp_fake1", "completed", "gpt-5.5")
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (9, 1)
    assert endpoint.requests[0].api == "responses"
    called = await client.responses.create(model="gpt-5.5", input="multiply")
    [item] = called.output
    assert item.type == "function_call"
    assert (item.call_id, item.name, json.loads(item.arguments)) == (
        "call_x",
        "multiply",
        {"a": 2, "b": 3},
    )
    recorded = json.loads(fixture("responses_create_basic.json")["response"]["body"])
    ours = json.loads(endpoint.responses[0].text)
    assert set(ours) <= set(recorded)
    assert set(ours["output"][0]) == set(recorded["output"][0]) - {"phase"}
    assert ours["output"][0]["content"][0].keys() == recorded["output"][0]["content"][0].keys()
    assert ours["usage"].keys() == recorded["usage"].keys()


def _event_types(body: str) -> list[str]:
    return [line[7:] for line in body.splitlines() if line.startswith("event: ")]


def _collapsed(types: list[str]) -> list[str]:
    """The event types with runs of one type (the deltas) counted once."""
    return [t for i, t in enumerate(types) if i == 0 or types[i - 1] != t]


async def test_responses_stream_text_event_sequence() -> None:
    recorded = fixture("responses_stream_text.json")["response"]["body"]
    endpoint = FakeOpenAIEndpoint(["pong"])
    stream = await sdk(endpoint).responses.create(model="gpt-5.5", input="ping", stream=True)
    events = [event async for event in stream]
    raw = endpoint.responses[0].text
    assert _event_types(raw) == _event_types(recorded)
    assert [e.type for e in events] == _event_types(recorded)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == "pong"
    assert events[-1].response.output_text == "pong"
    assert events[-1].response.usage.total_tokens == events[-1].response.usage.input_tokens + 1
    for mine, theirs in zip(sse_payloads(raw), sse_payloads(recorded), strict=True):
        assert set(mine) == set(theirs) - {"obfuscation"}, mine["type"]


async def test_responses_stream_function_call_event_sequence() -> None:
    recorded = fixture("responses_stream_function_call.json")["response"]["body"]
    reply = FakeReply.tool_call("multiply", {"a": 1231, "b": 2331}, id="call_m")
    endpoint = FakeOpenAIEndpoint([reply], chunk_size=3)
    stream = await sdk(endpoint).responses.create(model="gpt-5.5", input="multiply", stream=True)
    events = [event async for event in stream]
    assert _collapsed([e.type for e in events]) == _collapsed(_event_types(recorded))
    pieces = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert len(pieces) > 1
    assert json.loads("".join(pieces)) == {"a": 1231, "b": 2331}
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.arguments == "".join(pieces)
    final = events[-1].response
    assert (final.output[0].call_id, final.output[0].name) == ("call_m", "multiply")
    theirs_by_type = {p["type"]: p for p in sse_payloads(recorded)}
    for mine in sse_payloads(endpoint.responses[0].text):
        assert set(mine) == set(theirs_by_type[mine["type"]]) - {"obfuscation"}, mine["type"]


async def test_responses_incomplete_and_refusal() -> None:
    endpoint = FakeOpenAIEndpoint(
        [FakeReply.of_text("trunc", finish_reason="length")] * 2 + [FakeReply.refused("No.")]
    )
    client = sdk(endpoint)
    response = await client.responses.create(model="gpt-5.5", input="long")
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    stream = await client.responses.create(model="gpt-5.5", input="long", stream=True)
    events = [e async for e in stream]
    assert events[-1].type == "response.incomplete"
    stream = await client.responses.create(model="gpt-5.5", input="bad", stream=True)
    events = [e async for e in stream]
    assert "".join(e.delta for e in events if e.type == "response.refusal.delta") == "No."
    assert events[-1].response.output[0].content[0].refusal == "No."


# Embeddings --------------------------------------------------------------------------


async def test_embeddings_base64_by_default_and_float() -> None:
    endpoint = FakeOpenAIEndpoint(embedding_dimensions=16)
    client = sdk(endpoint)
    default = await client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert endpoint.requests[0].json["encoding_format"] == "base64"  # what the SDK asks for
    raw = json.loads(endpoint.responses[0].text)
    assert all(isinstance(item["embedding"], str) for item in raw["data"])
    floats = await client.embeddings.create(
        model="text-embedding-3-small", input=["a", "b"], encoding_format="float"
    )
    assert all(
        isinstance(v, float) for v in json.loads(endpoint.responses[1].text)["data"][0]["embedding"]
    )
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert len(default.data) == 2 and len(default.data[0].embedding) == 16
    assert default.data[0].embedding != default.data[1].embedding
    assert abs(sum(v * v for v in default.data[0].embedding) - 1) < 1e-5
    assert (default.usage.prompt_tokens, default.model) == (2, "text-embedding-3-small")


async def test_embeddings_dimensions_scripted_vectors_and_failures() -> None:
    endpoint = FakeOpenAIEndpoint(["a chat answer", WireReply.embeddings([[0.5, -0.25]])])
    client = sdk(endpoint)
    sized = await client.embeddings.create(model="m", input="x", dimensions=3)
    assert len(sized.data[0].embedding) == 3
    assert endpoint.pending == 2  # generated vectors use up nothing
    assert (await chat(client)).choices[0].message.content == "a chat answer"
    scripted = await client.embeddings.create(model="m", input="x")
    assert scripted.data[0].embedding == [0.5, -0.25]
    endpoint.add(FakeReply.server_error(503))  # the chat script is not for embeddings...
    assert len((await client.embeddings.create(model="m", input="x")).data) == 1
    endpoint.when(lambda r: r.api == "embeddings").reply(FakeReply.server_error(503))
    with pytest.raises(openai.InternalServerError):  # ...a rule is
        await client.embeddings.create(model="m", input="x")
    assert endpoint.pending == 1


# Failures ----------------------------------------------------------------------------


async def test_rate_limited_is_a_429_with_retry_after_headers() -> None:
    endpoint = FakeOpenAIEndpoint(
        [FakeReply.rate_limited(retry_after=2), FakeReply.rate_limited(retry_after=0.5)]
    )
    client = sdk(endpoint)
    with pytest.raises(openai.RateLimitError) as info:
        await chat(client)
    assert info.value.status_code == 429
    headers = info.value.response.headers
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("2", "2000")
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert info.value.body == {
        "message": info.value.body["message"],
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    assert "Please try again in 2s" in info.value.body["message"]
    assert json.loads(endpoint.responses[0].text)["error"]["code"] == "rate_limit_exceeded"
    with pytest.raises(openai.RateLimitError) as info:
        await chat(client, stream=True)
    assert (
        info.value.response.headers["retry-after"],
        info.value.response.headers["retry-after-ms"],
    ) == ("1", "500")
    without_ms = FakeOpenAIEndpoint([FakeReply.rate_limited()], retry_after_ms=False)
    with pytest.raises(openai.RateLimitError) as info:
        await chat(sdk(without_ms))
    assert "retry-after" not in info.value.response.headers
    assert "retry-after-ms" not in info.value.response.headers


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, openai.InternalServerError),
        (502, openai.InternalServerError),
        (503, openai.InternalServerError),
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (404, openai.NotFoundError),
        (409, openai.ConflictError),
        (422, openai.UnprocessableEntityError),
    ],
)
async def test_status_errors(status: int, error: type[Exception]) -> None:
    endpoint = FakeOpenAIEndpoint([FakeReply.server_error(status)] * 2)
    with pytest.raises(error) as info:
        await chat(sdk(endpoint))
    assert info.value.status_code == status  # type: ignore[attr-defined]
    body = json.loads(endpoint.responses[0].text)["error"]
    assert set(body) == {"message", "type", "param", "code"}
    assert body["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    with pytest.raises(error):
        await chat(sdk(endpoint), stream=True)


async def test_timeout_and_connection_failures() -> None:
    endpoint = FakeOpenAIEndpoint(
        [FakeReply.timeout(), FakeReply.timeout(), FakeReply(error=ProviderConnectionError())]
    )
    client = sdk(endpoint)
    with pytest.raises(openai.APITimeoutError):
        await chat(client)
    with pytest.raises(openai.APITimeoutError):
        await chat(client, stream=True)
    with pytest.raises(openai.APIConnectionError) as info:
        await chat(client)
    assert not isinstance(info.value, openai.APITimeoutError)
    assert [r.error for r in endpoint.requests] == ["ReadTimeout", "ReadTimeout", "ConnectError"]
    assert endpoint.responses == []


async def test_slow_first_byte_waits_on_the_injected_sleep() -> None:
    clock = ManualClock()
    endpoint = FakeOpenAIEndpoint([WireReply.slow_first_byte(5, "late")], sleep=clock.sleep)
    stream = await chat(sdk(endpoint), stream=True)  # the headers came at once
    received: list[str] = []

    async def read() -> None:
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        await anyio.wait_all_tasks_blocked()
        assert (clock.sleepers, received) == (1, [])
        clock.advance(5)
    assert "".join(received) == "late"
    auto = ManualClock(autojump=True)
    endpoint = FakeOpenAIEndpoint(
        [FakeReply(text="slow", first_token_delay=3, chunk_delay=1)], sleep=auto.sleep, chunk_size=1
    )
    assert text_of(await stream_chunks(sdk(endpoint))) == "slow"
    assert auto.now() == 3 + 1 * (len(endpoint.responses[0].body.split(b"\n\n")) - 2)


async def test_hanging_never_answers() -> None:
    endpoint = FakeOpenAIEndpoint(["warm-up", FakeReply.hanging()])
    client = sdk(endpoint)
    await chat(client)  # the SDK's first call looks up the platform in a worker thread
    finished = False

    async def call() -> None:
        nonlocal finished
        await chat(client)
        finished = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    assert not finished
    assert endpoint.responses[1].chunks_sent == 0


async def test_a_stream_cut_mid_line_ends_silently() -> None:
    endpoint = FakeOpenAIEndpoint([WireReply.cut_stream("abcdefghijkl", after=3)])
    chunks = await stream_chunks(sdk(endpoint), stream_options={"include_usage": True})
    assert text_of(chunks) == "abcdefgh"  # role chunk + two pieces, then the cut
    assert all(c.choices[0].finish_reason is None for c in chunks)
    raw = endpoint.responses[0]
    assert raw.text.splitlines()[-1].startswith('data: {"id":"chatcmpl-fake1"')
    assert not raw.text.endswith("\n")
    assert "[DONE]" not in raw.text
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw.text.splitlines()[-1][6:])
    assert raw.completed


async def test_a_stream_cut_by_a_dropped_connection() -> None:
    endpoint = FakeOpenAIEndpoint(
        [
            WireReply.cut_stream("abcdefghijkl", after=2, failure="disconnect"),
            WireReply.cut_stream("abcdefghijkl", after=2, failure="timeout"),
            FakeReply.cut("abcdefghijkl", after=2),
            FakeReply.cut("abcdefghijkl", after=2),
        ]
    )
    client = sdk(endpoint)
    # openai 3.x wraps a transport error mid-stream; 2.x lets the httpx error through.
    dropped = openai.APIConnectionError if OPENAI_MAJOR >= 3 else HTTP.RemoteProtocolError
    timed_out = openai.APITimeoutError if OPENAI_MAJOR >= 3 else HTTP.ReadTimeout
    received: list[Any] = []
    with pytest.raises(dropped):
        stream = await chat(client, stream=True)
        async for chunk in stream:
            received.append(chunk)
    assert text_of(received) == "abcd"
    with pytest.raises(timed_out):
        await stream_chunks(client)
    received = []
    with pytest.raises(dropped):
        stream = await chat(client, stream=True)
        async for chunk in stream:
            received.append(chunk)
    assert text_of(received) == "abcdefgh"  # FakeReply.cut: after two pieces, at an event boundary
    with pytest.raises(openai.APIConnectionError):  # a body cut while the SDK reads it
        await chat(client)
    assert [r.completed for r in endpoint.responses] == [False] * 4


async def test_malformed_json_and_malformed_sse() -> None:
    endpoint = FakeOpenAIEndpoint(
        [
            WireReply.malformed_json(),
            FakeReply.malformed(),
            WireReply.malformed_sse("Hello there.", after=2),
            FakeReply.malformed(),
        ]
    )
    client = sdk(endpoint)
    with pytest.raises(json.JSONDecodeError):  # the SDK does not wrap a bad JSON body
        await chat(client)
    with pytest.raises(json.JSONDecodeError):
        await chat(client)
    received: list[Any] = []
    with pytest.raises(json.JSONDecodeError):
        stream = await chat(client, stream=True)
        async for chunk in stream:
            received.append(chunk)
    assert text_of(received) == "Hell"
    assert endpoint.responses[2].text.endswith('{"delta": {\n\n')
    with pytest.raises(json.JSONDecodeError):
        await stream_chunks(client)
    assert endpoint.responses[0].status == 200


async def test_an_html_error_page_from_a_proxy() -> None:
    endpoint = FakeOpenAIEndpoint([WireReply.html_error(), WireReply.html_error(504)])
    with pytest.raises(openai.InternalServerError) as info:
        await chat(sdk(endpoint))
    assert info.value.status_code == 502
    assert info.value.response.headers["content-type"] == "text/html"
    assert "<title>502 Bad Gateway</title>" in str(info.value.body)
    with pytest.raises(openai.InternalServerError) as info:
        await chat(sdk(endpoint), stream=True)
    assert info.value.status_code == 504


async def test_raw_and_api_error_replies() -> None:
    endpoint = FakeOpenAIEndpoint(
        [
            WireReply.raw(418, headers={"x-teapot": "yes"}, body="I'm a teapot"),
            WireReply.api_error(
                400, "Unsupported parameter: 'stop'.", code="unsupported_parameter", param="stop"
            ),
        ]
    )
    client = sdk(endpoint)
    with pytest.raises(openai.APIStatusError) as info:
        await chat(client)
    assert (info.value.status_code, info.value.response.headers["x-teapot"]) == (418, "yes")
    with pytest.raises(openai.BadRequestError) as bad:
        await chat(client)
    assert (bad.value.code, bad.value.param, bad.value.type) == (
        "unsupported_parameter",
        "stop",
        "invalid_request_error",
    )


def _fixture_names() -> list[str]:
    return sorted(p.name for p in FIXTURES.glob("*.json")) if FIXTURES.is_dir() else []


@pytest.mark.parametrize("name", _fixture_names())
async def test_replaying_a_fixture_is_byte_identical(name: str) -> None:
    recording = fixture(name)
    endpoint = FakeOpenAIEndpoint([WireReply.fixture(FIXTURES / name)])
    request = recording["request"]
    async with HTTP.AsyncClient(transport=endpoint.mock_transport()) as client:
        response = await client.request(request["method"], request["url"], json=request["body"])
        assert response.status_code == recording["response"]["status"]
        assert response.content == recording["response"]["body"].encode()
        assert dict(response.headers) == recording["response"]["headers"]
    served = endpoint.responses[0]
    assert served.body == recording["response"]["body"].encode()
    if served.sse:
        assert served.chunks_total > 1  # sent event by event


async def test_replaying_fixtures_through_the_sdk() -> None:
    endpoint = FakeOpenAIEndpoint(
        [
            WireReply.fixture(FIXTURES / "chat_stream_tool_calls_parallel.json"),
            WireReply.fixture(FIXTURES / "error_401_invalid_api_key.json"),
            WireReply.fixture(FIXTURES / "embeddings_base64_dimensions.json"),
        ]
    )
    fixture("chat_stream_tool_calls_parallel.json")
    client = sdk(endpoint)
    chunks = await stream_chunks(client)
    names = [
        d.function.name
        for c in chunks
        if c.choices
        for d in c.choices[0].delta.tool_calls or []
        if d.id
    ]
    assert names == ["get_current_weather", "get_current_weather"]
    with pytest.raises(openai.AuthenticationError):
        await chat(client)
    embedded = await client.embeddings.create(model="text-embedding-3-small", input="hello world")
    assert len(embedded.data[0].embedding) == 512


# Serving a FakeProvider's script, rules, defaults ---------------------------------------


async def test_serving_a_fake_providers_script() -> None:
    provider = FakeProvider(["from the queue"], chunk_size=2, default="default answer")
    provider.when("weather").reply("Sunny.")
    endpoint = FakeOpenAIEndpoint(["endpoint first"], provider=provider)
    client = sdk(endpoint)
    assert (await chat(client)).choices[0].message.content == "endpoint first"
    weather = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "weather in Paris?"},
        ],
        tools=[
            {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
        ],
    )
    assert weather.choices[0].message.content == "Sunny."
    chunks = await stream_chunks(client)
    assert [c.choices[0].delta.content for c in chunks[1:-1]] == [
        "fr",
        "om",
        " t",
        "he",
        " q",
        "ue",
        "ue",
    ]
    answered = await client.responses.create(model="gpt-5.5", input="hi", instructions="Be nice.")
    assert answered.output_text == "default answer"
    seen = provider.requests
    assert [r.last_user_text for r in seen] == ["weather in Paris?", "Hi", "hi"]
    assert [m.role for m in seen[0].messages] == ["system", "user"]
    assert seen[0].tools[0].name == "lookup"
    assert seen[2].messages[0].content == "Be nice."


async def test_rules_default_and_an_exhausted_script() -> None:
    endpoint = FakeOpenAIEndpoint()
    endpoint.when(lambda r: r.api == "responses").reply("from the rule")
    endpoint.when(lambda r: r.stream).reply(FakeReply.server_error(503), times=1)
    client = sdk(endpoint)
    assert (await client.responses.create(model="m", input="x")).output_text == "from the rule"
    with pytest.raises(openai.InternalServerError):
        await chat(client, stream=True)
    with pytest.raises(escaping(FakeScriptExhausted)) as info:
        await chat(client)
    assert raised(info.value, FakeScriptExhausted)
    assert "request #3 (POST /v1/chat/completions)" in str(info.value.__cause__ or info.value)
    endpoint.default = FakeReply(text="fallback")
    assert (await chat(client)).choices[0].message.content == "fallback"
    assert "pending=0" in repr(endpoint)


async def test_an_unknown_path_gets_openais_404() -> None:
    endpoint = FakeOpenAIEndpoint(["not used"])
    with pytest.raises(openai.NotFoundError) as info:
        await sdk(endpoint).models.list()
    assert info.value.body["message"] == "Invalid URL (GET /v1/models)"  # type: ignore[index]
    assert endpoint.pending == 1
    endpoint = FakeOpenAIEndpoint(strict=True)
    with pytest.raises(escaping(UnexpectedRequest)) as unexpected:
        await sdk(endpoint).models.list()
    assert raised(unexpected.value, UnexpectedRequest)
    assert "has no answer for request #1" in str(unexpected.value.__cause__ or unexpected.value)


# Closing early -----------------------------------------------------------------------


async def test_closing_a_stream_early_closes_the_response_body() -> None:
    endpoint = FakeOpenAIEndpoint(["a long answer that goes on and on"] * 2)
    client = sdk(endpoint)
    stream = await chat(client, stream=True)
    first = await stream.__anext__()
    assert first.choices[0].delta.role == "assistant"
    assert not endpoint.responses[0].closed
    await stream.close()
    served = endpoint.responses[0]
    assert served.closed and not served.completed and served.closed_early
    assert served.chunks_sent < served.chunks_total
    async with await chat(client, stream=True) as stream:
        async for _ in stream:
            break
    assert endpoint.responses[1].closed_early


# Quirks of OpenAI-compatible servers ---------------------------------------------------


async def _quirk_stream(
    compat: Quirk, reply: FakeReply | str = "Hello there!", **options: Any
) -> tuple[list[Any], str]:
    endpoint = FakeOpenAIEndpoint([reply], compat=compat)
    chunks = await stream_chunks(sdk(endpoint), **options)
    return chunks, endpoint.responses[0].text


USAGE = {"stream_options": {"include_usage": True}}


async def test_quirk_usage_in_vendor_field() -> None:
    chunks, raw = await _quirk_stream(Quirk.USAGE_IN_VENDOR_FIELD, **USAGE)
    payloads = sse_payloads(raw)
    assert all("usage" not in p for p in payloads)
    assert payloads[0]["x_groq"] == {"id": "req_fake1"}
    assert payloads[-1]["choices"][0]["finish_reason"] == "stop"
    assert payloads[-1]["x_groq"]["usage"]["completion_tokens"] == 3
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].x_groq["usage"]["total_tokens"] == 7  # still readable through the SDK


async def test_quirk_running_usage() -> None:
    chunks, raw = await _quirk_stream(Quirk.RUNNING_USAGE, "abcdefghijklmnop", **USAGE)
    totals = [p["usage"]["completion_tokens"] for p in sse_payloads(raw)]
    assert len(totals) == len(chunks)
    assert totals == sorted(totals)
    assert totals[-1] == totals[-2] == 4  # the finish chunk and the usage chunk: the total
    assert sum(totals) > 4  # summing them would overcount
    assert all(c.usage is not None for c in chunks)


async def test_quirk_filter_results_first() -> None:
    chunks, raw = await _quirk_stream(Quirk.FILTER_RESULTS_FIRST)
    first = sse_payloads(raw)[0]
    assert (first["choices"], first["id"], first["model"]) == ([], "", "")
    assert first["prompt_filter_results"][0]["content_filter_results"]["hate"]["filtered"] is False
    assert chunks[0].choices == []
    assert text_of(chunks) == "Hello there!"


async def test_quirk_content_parts() -> None:
    chunks, raw = await _quirk_stream(Quirk.CONTENT_PARTS)
    contents = [p["choices"][0]["delta"].get("content") for p in sse_payloads(raw)]
    parts = [c for c in contents if isinstance(c, list)]
    assert parts[0] == [
        {"type": "thinking", "thinking": [{"type": "text", "text": "Let me think about that."}]}
    ]
    assert "".join(p[0]["text"] for p in parts[1:]) == "Hello there!"
    assert isinstance(chunks[1].choices[0].delta.content, list)  # the SDK passes it through


@pytest.mark.parametrize(
    ("quirk", "key"),
    [(Quirk.REASONING_CONTENT, "reasoning_content"), (Quirk.REASONING_FIELD, "reasoning")],
)
async def test_quirk_reasoning_fields(quirk: Quirk, key: str) -> None:
    chunks, raw = await _quirk_stream(quirk)
    deltas = [p["choices"][0]["delta"] for p in sse_payloads(raw)]
    reasoning = [d[key] for d in deltas if key in d]
    assert "".join(reasoning) == "Let me think about that."
    first_text = next(i for i, d in enumerate(deltas) if d.get("content"))
    assert max(i for i, d in enumerate(deltas) if key in d) < first_text
    streamed = "".join(getattr(c.choices[0].delta, key, None) or "" for c in chunks)
    assert streamed == "Let me think about that."  # the SDK keeps the unknown field
    assert text_of(chunks) == "Hello there!"


async def test_quirk_empty_tool_call_id() -> None:
    chunks, raw = await _quirk_stream(Quirk.EMPTY_TOOL_CALL_ID, FakeReply.tool_call("f", {"x": 1}))
    opening = sse_payloads(raw)[1]["choices"][0]["delta"]["tool_calls"][0]
    assert (opening["id"], opening["function"]["name"]) == ("", "f")
    assert chunks[1].choices[0].delta.tool_calls[0].id == ""


async def test_quirk_finish_reason_eos() -> None:
    chunks, raw = await _quirk_stream(Quirk.FINISH_REASON_EOS)
    assert [p["choices"][0]["finish_reason"] for p in sse_payloads(raw)][-1] == "eos"
    assert chunks[-1].choices[0].finish_reason == "eos"


async def test_quirk_finish_in_last_chunk() -> None:
    chunks, raw = await _quirk_stream(Quirk.FINISH_IN_LAST_CHUNK, **USAGE)
    payloads = sse_payloads(raw)
    assert [p["choices"][0]["finish_reason"] for p in payloads] == [None] * 3 + ["stop"]
    assert payloads[-1]["choices"][0]["delta"] == {"content": "ere!"}
    assert payloads[-1]["usage"]["total_tokens"] == 7
    assert all(p["choices"] for p in payloads)
    assert chunks[-1].usage.total_tokens == 7


async def test_quirk_comments_and_no_done() -> None:
    chunks, raw = await _quirk_stream(Quirk.COMMENTS | Quirk.NO_DONE)
    assert raw.startswith(": keep-alive\n\ndata: ")
    assert raw.count(": keep-alive\n\n") == len(chunks)
    assert "[DONE]" not in raw
    assert text_of(chunks) == "Hello there!"
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("quirk", [Quirk.ERROR_EVENT, Quirk.ERROR_CHUNK])
async def test_quirk_stream_ends_in_an_error(quirk: Quirk) -> None:
    endpoint = FakeOpenAIEndpoint(["abcdefghijklmnopqrstuvwx"], compat=quirk)
    received: list[Any] = []
    with pytest.raises(openai.APIError) as info:
        stream = await chat(sdk(endpoint), stream=True)
        async for chunk in stream:
            received.append(chunk)
    assert not isinstance(info.value, openai.APIStatusError)
    assert text_of(received) == "abcdefghijkl"  # half the answer arrived first
    raw = endpoint.responses[0].text
    assert "[DONE]" not in raw
    if quirk is Quirk.ERROR_EVENT:
        assert raw.endswith(
            'event: error\ndata: {"error":{"message":"The server had an error while generating the answer.","type":"server_error","param":null,"code":"internal_error"}}\n\n'
        )
    else:
        last = sse_payloads(raw)[-1]
        assert last["error"]["code"] == 502
        assert last["choices"][0]["finish_reason"] == "error"
    assert "interrupted" in str(info.value) or "error" in str(info.value)


async def test_quirks_combine() -> None:
    compat = Quirk.USAGE_IN_VENDOR_FIELD | Quirk.FINISH_REASON_EOS | Quirk.FILTER_RESULTS_FIRST
    chunks, raw = await _quirk_stream(compat, **USAGE)
    payloads = sse_payloads(raw)
    assert payloads[0]["choices"] == []
    assert payloads[-1]["choices"][0]["finish_reason"] == "eos"
    assert "x_groq" in payloads[-1] and all("usage" not in p for p in payloads)
    assert text_of(chunks) == "Hello there!"


# The transports, the fixtures, the sync client ------------------------------------------


async def test_the_helpers_pick_the_sdks_transport(
    fake_openai: FakeOpenAIEndpoint, openai_client: openai.AsyncOpenAI
) -> None:
    assert isinstance(fake_openai.mock_transport(), HTTP.MockTransport)
    fake_openai.add("from the fixture")
    assert (await chat(openai_client)).choices[0].message.content == "from the fixture"
    assert str(openai_client.base_url) == "https://api.openai.test/v1/"
    assert openai_client.max_retries == 0
    own = fake_openai.async_client(api_key="sk-test-own")
    fake_openai.add("again")
    assert (await chat(own)).choices[0].message.content == "again"
    assert fake_openai.requests[-1].headers["authorization"] == "[redacted]"


def test_an_idle_client_closes_without_an_event_loop() -> None:
    http_client = HTTP.AsyncClient(transport=FakeOpenAIEndpoint().mock_transport())
    assert close_now(http_client.aclose())
    assert http_client.is_closed


def test_the_handler_refuses_other_request_types() -> None:
    with pytest.raises(TypeError, match=r"httpx2\.Request or an httpx\.Request"):
        FakeOpenAIEndpoint().handler(object())


def test_a_sync_client_works_without_delays() -> None:
    endpoint = FakeOpenAIEndpoint(["sync answer", "streamed", WireReply.slow_first_byte(1)])
    client = openai.OpenAI(
        api_key=KEY,
        base_url=BASE_URL,
        max_retries=0,
        http_client=HTTP.Client(transport=HTTP.MockTransport(endpoint.handler)),
    )
    reply = client.chat.completions.create(model="m", messages=MESSAGES)
    assert reply.choices[0].message.content == "sync answer"
    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == "streamed"
    with pytest.raises(escaping(RuntimeError)) as info:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert raised(info.value, RuntimeError)


@pytest.mark.skipif(
    OPENAI_MAJOR >= 3, reason="respx mocks httpx only; openai 3.x is built on httpx2"
)
async def test_as_a_respx_side_effect_on_openai_2() -> None:
    import respx

    endpoint = FakeOpenAIEndpoint(
        ["via respx", FakeReply.rate_limited(retry_after=1), "long stream answer"]
    )
    client = openai.AsyncOpenAI(api_key=KEY, base_url=BASE_URL, max_retries=0)
    with respx.mock(assert_all_called=True) as router:
        route = router.post(f"{BASE_URL}/chat/completions").mock(side_effect=endpoint.handler)
        assert (await chat(client)).choices[0].message.content == "via respx"
        with pytest.raises(openai.RateLimitError) as info:
            await chat(client)
        assert info.value.response.headers["retry-after"] == "1"
        stream = await chat(client, stream=True)
        await stream.__anext__()
        await stream.close()
        assert route.call_count == 3
    assert endpoint.responses[2].closed_early
    await client.close()


def test_fixture_module_helpers_are_consistent() -> None:
    assert http_module().__name__ == ("httpx2" if OPENAI_MAJOR >= 3 else "httpx")
    assert callable(FakeOpenAIEndpoint().handler)
    make: Callable[..., FakeOpenAIEndpoint] = FakeOpenAIEndpoint
    with pytest.raises(ValueError, match="at least 1"):
        make(chunk_size=0)


# Reading requests back, odd bodies, odd errors ------------------------------------------


async def test_the_provider_sees_structured_inputs_as_messages() -> None:
    provider = FakeProvider(default="ok")
    endpoint = FakeOpenAIEndpoint(provider=provider)
    client = sdk(endpoint)
    await client.responses.create(
        model="gpt-5.5",
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "multiply 2 by 3"}]},
            {"type": "function_call", "call_id": "call_1", "name": "multiply", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "6"},
        ],
        tools=[{"type": "function", "name": "multiply", "parameters": {"type": "object"}}],
        max_output_tokens=50,
    )
    await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "part one, "},
                    {"type": "text", "text": "two"},
                ],
            },
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c", "content": "done"},
        ],
        stop="END",
        max_tokens=10,
    )
    responses, chat_request = provider.requests
    assert [m.role for m in responses.messages] == ["user", "assistant", "tool"]
    assert responses.messages[0].content == "multiply 2 by 3"
    assert responses.messages[1].tool_calls[0].name == "multiply"
    assert (responses.messages[2].content, responses.messages[2].tool_call_id) == ("6", "call_1")
    assert (responses.tools[0].name, responses.max_output_tokens) == ("multiply", 50)
    assert chat_request.messages[0].content == "part one, two"
    assert chat_request.messages[1].tool_calls[0].id == "c"
    assert (chat_request.stop, chat_request.max_output_tokens) == (("END",), 10)


async def test_a_body_that_is_not_json_is_logged_as_none() -> None:
    endpoint = FakeOpenAIEndpoint(
        [
            "still answered",
            WireReply.raw(
                200, headers={"content-type": "text/event-stream"}, body="data: {}\n\ndata: [DONE]"
            ),
        ]
    )
    async with HTTP.AsyncClient(transport=endpoint.mock_transport()) as client:
        response = await client.post(f"{BASE_URL}/chat/completions", content=b"not json")
        assert response.json()["choices"][0]["message"]["content"] == "still answered"
        streamed = await client.post(f"{BASE_URL}/chat/completions", json={})
        assert streamed.text == "data: {}\n\ndata: [DONE]"
    assert endpoint.requests[0].json is None
    assert endpoint.responses[1].chunks_total == 2  # split into events, rejoined byte for byte


async def test_other_failures_a_reply_can_carry() -> None:
    from llmguard import ProviderError

    endpoint = FakeOpenAIEndpoint(
        [
            FakeReply(error=ProviderError("no status")),
            FakeReply(error=KeyError("a bug in the test")),
            FakeReply.server_error(418),
            FakeReply.server_error(429),
            FakeReply.of_text("filtered", finish_reason="content_filter"),
        ]
    )
    client = sdk(endpoint)
    with pytest.raises(openai.APIConnectionError):
        await chat(client)
    with pytest.raises(escaping(KeyError)) as info:
        await chat(client)
    assert raised(info.value, KeyError)
    with pytest.raises(openai.APIStatusError) as teapot:
        await chat(client)
    assert teapot.value.status_code == 418
    with pytest.raises(openai.RateLimitError):
        await chat(client)
    filtered = await client.responses.create(model="m", input="x")
    assert filtered.incomplete_details.reason == "content_filter"


async def test_the_reasoning_quirks_need_reasoning_text() -> None:
    endpoint = FakeOpenAIEndpoint(["plain"], compat=Quirk.REASONING_CONTENT, reasoning="")
    chunks = await stream_chunks(sdk(endpoint))
    assert "reasoning_content" not in endpoint.responses[0].text
    assert text_of(chunks) == "plain"

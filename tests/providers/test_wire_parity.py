"""Parity: ``OpenAIProvider(client, wire="lean")`` against the SDK path (the default).

Every recorded chat exchange in ``shared/fixtures/openai`` and every case the fake
endpoint can script (rate limits, 5xx, timeouts, cut and malformed streams, HTML
pages, every compatible-server quirk) and a set of raw wire bodies (SSE edge cases,
odd JSON) run on both wires; ``on_both`` asserts that the response, every event, the
stream's assembled response, the error (class, message, status, ``retryable``,
``retry_after``, request id, provider), the call record and what happened on the wire
are equal. ``make test`` runs this file on openai 3.x (httpx2) and on 2.x (httpx).
Every case also runs on ``OpenAIProvider(api_key=..., wire="lean")``, llmguard's own
HTTP/1.1 client, against the endpoint served on a loopback socket (``on_loopback``).
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from llmguard import Message, ProviderConnectionError, Request, ToolCall, ToolSpec, Usage
from llmguard.testing import FakeOpenAIEndpoint, FakeReply, Quirk, WireReply

from ._parity import complete_outcome, on_both, stream_outcome
from .conftest import fixture_names, load, request_from
from .test_openai_fixtures import sent_body_matches

pytestmark = pytest.mark.anyio

ANSWER = "The quick brown fox jumps over the lazy dog."
USAGE = Usage(input_tokens=21, output_tokens=11, cached_input_tokens=3, reasoning_tokens=2)
SSE = {"content-type": "text/event-stream; charset=utf-8", "x-request-id": "req_raw"}
JSON = {"content-type": "application/json", "x-request-id": "req_raw"}

CHAT = [n for n in fixture_names() if n.startswith(("chat_", "error_", "compat_"))]


def endpoint_of(*replies: Any, **kw: Any) -> Any:
    return lambda: FakeOpenAIEndpoint(list(replies), **kw)


# The recordings ------------------------------------------------------------------------


@pytest.mark.parametrize("name", CHAT)
async def test_every_recorded_chat_exchange(name: str) -> None:
    recording = load(name)
    body = recording["request"]["body"]
    field = "max_tokens" if "max_tokens" in body else "max_completion_tokens"
    request = request_from(body)
    streamed = "text/event-stream" in recording["response"]["headers"].get("content-type", "")
    action = stream_outcome if streamed else complete_outcome
    outcomes = await on_both(
        endpoint_of(WireReply.recorded(recording)),
        lambda p: action(p, request),
        max_tokens_field=field,
    )
    lean = outcomes["lean"]
    assert lean.response is not None or lean.error is not None
    if recording["response"]["status"] == 200:
        assert lean.error is None
    (sent,) = lean.wire
    sent_body_matches(json.loads(sent[2]), body)


# Scripted answers on the fake endpoint ---------------------------------------------------

TEXT = FakeReply.of_text(ANSWER, usage=USAGE)
CALL = FakeReply.tool_call("lookup", {"q": "x"}, id="call_1")
PARALLEL = FakeReply.tool_calls_of(
    ToolCall(id="call_a", name="weather", arguments='{"city": "Paris"}'),
    ToolCall(id="call_b", name="weather", arguments='{"city": "Lima"}'),
)
SCRIPTED = {
    "text": TEXT,
    "tool-call": CALL,
    "parallel-tool-calls": PARALLEL,
    "refusal": FakeReply.refused("I can't help with that."),
    "json": FakeReply.json({"name": "Ada", "tags": ["x", "ü"]}),
    "finish-length": FakeReply(text=ANSWER, finish_reason="length"),
    "rate-limited": FakeReply.rate_limited(retry_after=7),
    "rate-limited-fraction": FakeReply.rate_limited(retry_after=0.25),
    "rate-limited-no-advice": FakeReply.rate_limited(),
    "500": FakeReply.server_error(500),
    "502": FakeReply.server_error(502),
    "503": FakeReply.server_error(503),
    "timeout": FakeReply.timeout(),
    "connection-refused": FakeReply(error=ProviderConnectionError()),
    "malformed": FakeReply.malformed(),
    "cut": FakeReply.cut(ANSWER, after=3),
    "slow-first-token": FakeReply(text=ANSWER, first_token_delay=0.01),
    "malformed-json": WireReply.malformed_json(),
    "html-502": WireReply.html_error(502),
    "html-503": WireReply.html_error(503),
    "401": WireReply.api_error(401, "Incorrect API key provided: sk-abc****wxyz.", code="x"),
    "400-param": WireReply.api_error(400, "Unsupported parameter: 'max_tokens'.", param="x"),
    "404-model": WireReply.api_error(404, "The model `nope` does not exist", code="m"),
    "429-retry-after-ms-wins": WireReply.api_error(
        429, "slow down", type="requests", headers={"retry-after": "9", "retry-after-ms": "250"}
    ),
    "429-http-date": WireReply.api_error(
        429, "slow down", headers={"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}
    ),
    "429-should-not-retry": WireReply.api_error(429, "quota", headers={"x-should-retry": "false"}),
    "400-should-retry": WireReply.api_error(400, "odd", headers={"x-should-retry": "true"}),
    "slow-first-byte": WireReply.slow_first_byte(0.01, TEXT),
}


@pytest.mark.parametrize("case", list(SCRIPTED))
async def test_scripted_answers_complete(case: str) -> None:
    await on_both(endpoint_of(SCRIPTED[case]), complete_outcome)


@pytest.mark.parametrize("case", list(SCRIPTED))
@pytest.mark.parametrize("include_usage", [True, False])
async def test_scripted_answers_stream(case: str, include_usage: bool) -> None:
    await on_both(endpoint_of(SCRIPTED[case]), stream_outcome, include_usage=include_usage)


@pytest.mark.parametrize("after", [0, 1, 2, 3, 6, 40])
@pytest.mark.parametrize("failure", [None, "disconnect", "timeout"])
async def test_cut_streams(after: int, failure: Any) -> None:
    reply = WireReply.cut_stream(TEXT, after=after, failure=failure)
    outcomes = await on_both(endpoint_of(reply), stream_outcome)
    if after < 6:  # a stream with fewer events is cut in its last one: [DONE]
        assert outcomes["lean"].error is not None
        assert outcomes["lean"].record is not None
        assert outcomes["lean"].record[0].estimated is True  # a cut stream is still counted


@pytest.mark.parametrize("after", [0, 1, 3])
async def test_malformed_sse(after: int) -> None:
    outcomes = await on_both(
        endpoint_of(WireReply.malformed_sse(TEXT, after=after)), stream_outcome
    )
    assert outcomes["lean"].error is not None
    assert outcomes["lean"].error[0] == "MalformedResponse"


QUIRKS = [q for q in Quirk if q is not Quirk.NONE]


@pytest.mark.parametrize("quirk", QUIRKS, ids=lambda q: str(q.name))
@pytest.mark.parametrize("reply", [TEXT, CALL, PARALLEL], ids=["text", "call", "parallel"])
@pytest.mark.parametrize("include_usage", [True, False])
async def test_every_quirk(quirk: Quirk, reply: FakeReply, include_usage: bool) -> None:
    await on_both(endpoint_of(reply, compat=quirk), stream_outcome, include_usage=include_usage)


@pytest.mark.parametrize(
    "quirks",
    [
        Quirk.USAGE_IN_VENDOR_FIELD | Quirk.FILTER_RESULTS_FIRST | Quirk.NO_DONE | Quirk.COMMENTS,
        Quirk.RUNNING_USAGE | Quirk.FINISH_IN_LAST_CHUNK | Quirk.FINISH_REASON_EOS,
        Quirk.CONTENT_PARTS | Quirk.EMPTY_TOOL_CALL_ID | Quirk.COMMENTS,
        Quirk.REASONING_CONTENT | Quirk.RUNNING_USAGE | Quirk.ERROR_CHUNK,
        Quirk.REASONING_FIELD | Quirk.FILTER_RESULTS_FIRST | Quirk.ERROR_EVENT,
    ],
    ids=str,
)
async def test_quirks_combined(quirks: Quirk) -> None:
    await on_both(endpoint_of(TEXT, compat=quirks, chunk_size=3), stream_outcome)


async def test_a_conversation_with_tools_and_every_parameter() -> None:
    request = Request.create(
        model="gpt-4o-mini",
        system="Be brief.",
        user="Weather in Paris?",
        messages=[
            Message.assistant(
                tool_calls=[ToolCall(id="c1", name="weather", arguments='{"city":"Paris"}')]
            ),
            Message.tool("18°C, cloudy", tool_call_id="c1"),
        ],
        tools=[
            ToolSpec(
                name="weather", description="Weather.", parameters={"type": "object"}, strict=True
            )
        ],
        tool_choice={"type": "function", "function": {"name": "weather"}},
        temperature=0.2,
        top_p=0.9,
        max_output_tokens=64,
        stop=["\n\n"],
        seed=7,
        extras={"reasoning_effort": "low", "metadata": {"k": "v"}, "user": "u-1"},
    )
    await on_both(endpoint_of(TEXT), lambda p: complete_outcome(p, request))
    await on_both(endpoint_of(TEXT), lambda p: stream_outcome(p, request))


# Raw wire bodies: SSE and JSON edge cases ------------------------------------------------


def _chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [choice], **extra}  # fmt: skip


def _data(value: Any) -> str:
    return f"data: {json.dumps(value, separators=(',', ':'))}"


HELLO = _data(_chunk({"role": "assistant", "content": "Hel"}))
LO = _data(_chunk({"content": "lo"}))
STOP = _data(_chunk({}, "stop"))
USAGE_LINE = _data(
    {"id": "c1", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
)

RAW_STREAMS: dict[str, str | bytes] = {
    "lf": f"{HELLO}\n\n{LO}\n\n{STOP}\n\n{USAGE_LINE}\n\ndata: [DONE]\n\n",
    "crlf": f"{HELLO}\r\n\r\n{LO}\r\n\r\n{STOP}\r\n\r\ndata: [DONE]\r\n\r\n",
    "cr": f"{HELLO}\r\r{LO}\r\r{STOP}\r\rdata: [DONE]\r\r",
    "comments-and-fields": (
        f": ping\n\nid: 1\nretry: 3000\n{HELLO}\n\nevent: message\n{LO}\n\n{STOP}\n\n"
        "data: [DONE]\n\n"
    ),
    "id-then-blank-lines": f"id: 7\n{HELLO}\n\n\n{STOP}\n\ndata: [DONE]\n\n",
    "multi-line-data": (
        'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",\n'
        'data: "choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}]}\n\n'
        "data: [DONE]\n\n"
    ),
    "no-space-after-colon": f"data:{HELLO[6:]}\n\n{STOP}\n\ndata:[DONE]\n\n",
    "done-with-suffix": f"{HELLO}\n\n{STOP}\n\ndata: [DONE] bye\n\ndata: not json\n\n",
    "garbage-after-done": f"{HELLO}\n\n{STOP}\n\ndata: [DONE]\n\n\xff\xfe oops",
    "no-final-blank-line": f"{HELLO}\n\n{STOP}",
    "no-done": f"{HELLO}\n\n{STOP}\n\n",
    "ends-mid-line": f"{HELLO}\n\n{STOP[:30]}",
    "empty-data": f"{HELLO}\n\ndata:\n\n{STOP}\n\n",
    "event-only": f"{HELLO}\n\nevent: ping\n\n{STOP}\n\n",
    "not-json": f"{HELLO}\n\ndata: {{not json}}\n\n",
    "lone-surrogate": f'{HELLO}\n\n{_data(_chunk({"content": "x"}))[:-10]}"\\ud800"}}}}]}}\n\n',
    "nan": f'{HELLO}\n\n{STOP[:-1]},"usage":{{"prompt_tokens":NaN}}}}\n\ndata: [DONE]\n\n',
    "error-event": f'{HELLO}\n\nevent: error\ndata: {{"error": {{"message": "overloaded"}}}}\n\n',
    "error-string": f'{HELLO}\n\ndata: {{"error": "boom"}}\n\n',
    "error-nested": f'{HELLO}\n\ndata: {{"error": {{"error": {{"message": "deep"}}}}}}\n\n',
    "error-nested-string": f'{HELLO}\n\ndata: {{"error": {{"error": "deep text"}}}}\n\n',
    "error-empty-is-no-error": f'{HELLO}\n\ndata: {{"error": {{}}, "choices": []}}\n\n{STOP}\n\n',
    "thread-event": f'{HELLO}\n\nevent: thread.run\ndata: {{"usage": {{"prompt_tokens": 9}}}}\n\n',
    "vendor-usage": f"{HELLO}\n\n{_data(_chunk({}, 'stop', usage=None, x_v={'usage': {'prompt_tokens': 4}}))}\n\n",
    "usage-not-a-dict": f"{HELLO}\n\n{_data(_chunk({}, 'stop', usage=5))}\n\n",
    "usage-on-every-chunk": (
        f"{_data(_chunk({'content': 'a'}, usage={'prompt_tokens': 1, 'completion_tokens': 1}))}\n\n"
        f"{_data(_chunk({}, 'stop', usage={'prompt_tokens': 1, 'completion_tokens': 2}))}\n\n"
    ),
    "other-choice-index": f"{_data(_chunk({'content': 'x'}) | {'choices': [{'index': 1, 'delta': {'content': 'no'}}]})}\n\n{HELLO}\n\n{STOP}\n\n",
    "content-parts": f"{_data(_chunk({'content': [{'type': 'thinking', 'thinking': 'hm'}, {'type': 'text', 'text': 'Yes'}, 'str']}))}\n\n{STOP}\n\n",
    "tool-call-pieces": (
        f"{_data(_chunk({'tool_calls': [{'index': 0, 'id': 'c', 'function': {'name': 'f', 'arguments': ''}}]}))}\n\n"
        f"{_data(_chunk({'tool_calls': [{'index': 0, 'function': {'arguments': '{}'}}]}))}\n\n"
        f"{_data(_chunk({'tool_calls': [{'index': 1, 'id': '', 'function': None}]}))}\n\n"
        f"{_data(_chunk({}, 'tool_calls'))}\n\n"
    ),
    "finish-not-openai": f"{HELLO}\n\n{_data(_chunk({}, 'eos_token'))}\n\n",
    "invalid-utf8": b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"\xff"}}]}\n\n',
    "invalid-utf8-at-the-end": f"{HELLO}\n\n{STOP}\n\n".encode() + b"\xc3",
    "choices-missing": f'{HELLO}\n\ndata: {{"usage": {{"prompt_tokens": 2}}}}\n\n',
    "choices-a-string": f'{HELLO}\n\ndata: {{"choices": "ab"}}\n\n',
    "choices-not-iterable": f'{HELLO}\n\ndata: {{"choices": 5}}\n\n',
    "delta-a-string": 'data: {"choices": [{"index": 0, "delta": "x"}]}\n\n',
    "chunk-a-list": f"{HELLO}\n\ndata: [1, 2]\n\n",
    "chunk-null": f"{HELLO}\n\ndata: null\n\n",
    "tool-call-no-function": 'data: {"choices": [{"delta": {"tool_calls": ["x"]}}]}\n\n',
    "finish-unhashable": f'{HELLO}\n\ndata: {{"choices": [{{"index": 0, "delta": {{}}, "finish_reason": {{}}}}]}}\n\n',
    "a-choice-that-is-not-an-object": (
        'data: {"choices": [{"index": 0, "delta": {"content": "Hi", "tool_calls": ['
        '{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{}"}}, '
        '{"index": 1, "function": null}]}, "finish_reason": "stop"}, "junk", [0]]}\n\n'
    ),
    "json-body-for-a-stream": json.dumps({"choices": []}),
    "empty-body": "",
}


@pytest.mark.parametrize("case", list(RAW_STREAMS))
async def test_raw_streams(case: str) -> None:
    body = RAW_STREAMS[case]
    await on_both(endpoint_of(WireReply.raw(200, headers=SSE, body=body)), stream_outcome)


def test_raw_streams_arrive_in_pieces_too() -> None:
    # WireReply.raw sends an SSE body event by event (split at blank lines); bodies
    # without LF blank lines (CR, CRLF) arrive whole. test_wire_sse splits at every byte.
    assert "\n\n" in str(RAW_STREAMS["lf"])


COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1},
}


def _completion(**changes: Any) -> str:
    return json.dumps({**COMPLETION, **changes})


def _message(message: Any, **choice: Any) -> str:
    return _completion(
        choices=[{"index": 0, "message": message, "finish_reason": "stop", **choice}]
    )


RAW_BODIES: dict[str, tuple[int, dict[str, str], str | bytes]] = {
    "plain": (200, JSON, _completion()),
    "charset": (200, {"content-type": "application/json; charset=utf-8"}, _completion()),
    "no-content-type": (200, {}, _completion()),
    "text-plain-json": (200, {"content-type": "text/plain"}, _completion()),
    "text-plain-garbage": (200, {"content-type": "text/plain"}, "hello"),
    "html-200": (200, {"content-type": "text/html"}, "<html><body>portal</body></html>"),
    "not-json": (200, JSON, "{not json"),
    "empty": (200, JSON, ""),
    "list": (200, JSON, "[]"),
    "null": (200, JSON, "null"),
    "number": (200, JSON, "42"),
    "empty-object": (200, JSON, "{}"),
    "no-choices": (200, JSON, _completion(choices=[])),
    "choices-null": (200, JSON, _completion(choices=None)),
    "choices-a-string": (200, JSON, _completion(choices="abc")),
    "choices-a-dict": (200, JSON, _completion(choices={"a": 1})),
    "message-null": (200, JSON, _message(None)),
    "message-a-string": (200, JSON, _message("hi")),
    "no-finish-reason": (200, JSON, _message({"content": "hi"}, finish_reason=None)),
    "content-parts": (200, JSON, _message({"content": ["a", {"type": "text", "text": "b"}]})),
    "tool-call-no-id": (200, JSON, _message({"tool_calls": [{"function": {"name": "f"}}]})),
    "tool-call-no-function": (200, JSON, _message({"tool_calls": [{"id": "c"}]})),
    "refusal": (200, JSON, _message({"content": None, "refusal": "No."})),
    "vendor-usage": (200, JSON, _completion(usage=None, x_v={"usage": {"prompt_tokens": 8}})),
    "usage-details": (
        200,
        JSON,
        _completion(
            usage={
                "prompt_tokens": 30,
                "completion_tokens": 9,
                "prompt_tokens_details": {"cached_tokens": 20},
                "completion_tokens_details": {"reasoning_tokens": 4},
            }
        ),
    ),
    "model-null": (200, JSON, _completion(model=None, id=None)),
    "lone-surrogate": (200, JSON, _completion(model="m").replace('"m"', '"\\ud800"')),
    "utf-8-bom": (200, JSON, b"\xef\xbb\xbf" + _completion().encode()),
    "utf-16": (200, JSON, _completion().encode("utf-16")),
    "big-int": (200, JSON, _completion(created=10**30)),
    "gzip": (200, {**JSON, "content-encoding": "gzip"}, gzip.compress(_completion().encode())),
    "500-empty": (500, {}, ""),
    "500-whitespace": (500, {}, "\n"),
    "500-text": (500, {"content-type": "text/plain"}, "upstream failed"),
    "502-json-list": (502, JSON, "[1, 2]"),
    "503-error-string": (503, JSON, '{"error": "overloaded"}'),
    "400-no-error-member": (400, JSON, '{"message": "bad"}'),
    "400-nested-error-string": (400, JSON, '{"error": {"error": "deep"}}'),
    "400-message-not-a-string": (400, JSON, '{"error": {"message": 5}}'),
    "404-long-text": (404, {"content-type": "text/plain"}, "x" * 1000),
    "401-echoed-key": (
        401,
        JSON,
        '{"error": {"message": "Incorrect API key provided: sk-proj-****cdef. Bearer sk-abc"}}',
    ),
    "429-retry-after-inf": (429, {**JSON, "retry-after": "1e999"}, '{"error": {"message": "x"}}'),
    "429-retry-after-bad": (429, {**JSON, "retry-after": "soon"}, '{"error": {"message": "x"}}'),
    "408": (408, JSON, '{"error": {"message": "timeout"}}'),
    "409": (409, JSON, '{"error": {"message": "conflict"}}'),
    "302-no-location": (302, {}, ""),
    "request-id": (500, {**JSON, "x-request-id": "req_123"}, '{"error": {"message": "x"}}'),
}


@pytest.mark.parametrize("case", list(RAW_BODIES))
async def test_raw_bodies_complete(case: str) -> None:
    status, headers, body = RAW_BODIES[case]
    await on_both(endpoint_of(WireReply.raw(status, headers=headers, body=body)), complete_outcome)


@pytest.mark.parametrize("case", [c for c, (s, _, _) in RAW_BODIES.items() if s >= 300])
async def test_raw_error_bodies_stream(case: str) -> None:
    status, headers, body = RAW_BODIES[case]
    await on_both(endpoint_of(WireReply.raw(status, headers=headers, body=body)), stream_outcome)

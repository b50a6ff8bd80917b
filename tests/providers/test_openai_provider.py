"""OpenAIProvider behaviour beyond the recordings: retries, switches, extras, errors."""

from __future__ import annotations

import json
import math
import warnings
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import openai
import pytest

import llmguard
from llmguard import (
    ConfigurationError,
    Guard,
    OpenAIProvider,
    Request,
    RetriesMultiplyWarning,
    ToolCall,
)
from llmguard._providers._openai_errors import scrub
from llmguard._retry_after import parse_retry_after

from .conftest import http_module, load, replay_client, request_from


def test_a_client_built_by_llmguard_never_retries_by_itself() -> None:
    provider = OpenAIProvider(api_key="sk-test-key", base_url="http://127.0.0.1:9/v1")
    assert provider.client.max_retries == 0
    assert provider.client.timeout == 60.0


def test_a_users_retrying_client_gets_one_warning() -> None:
    client = openai.AsyncOpenAI(api_key="sk-test-key", base_url="http://127.0.0.1:9/v1")
    with pytest.warns(RetriesMultiplyWarning, match="with_options\\(max_retries=0\\)"):
        OpenAIProvider(client)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OpenAIProvider(client.with_options(max_retries=0))


def test_misuse_is_a_configuration_error() -> None:
    client = openai.AsyncOpenAI(api_key="k", max_retries=0)
    with pytest.raises(ConfigurationError):
        OpenAIProvider(client, api_key="other")
    with pytest.raises(ConfigurationError):
        OpenAIProvider(client, api="completions")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_extras_and_every_parameter_reach_the_wire() -> None:
    replay = replay_client(load("chat_completion_basic.json"))
    provider = OpenAIProvider(replay.client)
    request = Request.create(
        model="gpt-4o-mini",
        system="Be brief.",
        user="hi",
        messages=[
            llmguard.Message.assistant(tool_calls=[ToolCall(id="c1", name="f", arguments="{}")]),
            llmguard.Message.tool("42", tool_call_id="c1"),
        ],
        tools=[llmguard.ToolSpec(name="f", description="F.", parameters={"type": "object"})],
        tool_choice="auto",
        response_format={"type": "json_object"},
        temperature=0.1,
        top_p=0.9,
        max_output_tokens=50,
        stop=["\n\n"],
        seed=7,
        extras={"reasoning_effort": "low", "metadata": {"k": "v"}, "vendor_flag": True},
    )
    await provider.complete(request)
    body = replay.sent[0]
    assert body["max_completion_tokens"] == 50
    assert body["reasoning_effort"] == "low"
    assert body["vendor_flag"] is True
    assert body["metadata"] == {"k": "v"}
    assert (body["temperature"], body["top_p"], body["seed"], body["stop"]) == (
        0.1,
        0.9,
        7,
        ["\n\n"],
    )
    assert body["messages"][1]["tool_calls"][0]["function"] == {"name": "f", "arguments": "{}"}
    assert body["messages"][2] == {"role": "tool", "content": "42", "tool_call_id": "c1"}
    assert body["tools"][0]["function"]["description"] == "F."


@pytest.mark.anyio
async def test_include_usage_switch_and_estimated_usage() -> None:
    recording = load("chat_stream_text_include_usage.json")
    # A compatible server that ignores stream_options: strip the usage chunk.
    lines = [
        line
        for line in recording["response"]["body"].split("\n\n")
        if '"choices":[]' not in line.replace(" ", "")
    ]
    recording = {**recording, "response": {**recording["response"], "body": "\n\n".join(lines)}}
    replay = replay_client(recording)
    provider = OpenAIProvider(replay.client, include_usage=False)
    guard = Guard(provider, timeout=None)
    async with guard.stream(request_from(recording["request"]["body"])) as events:
        [_ async for _ in events]
    assert "stream_options" not in replay.sent[0]
    usage = events.response.usage
    assert usage.estimated is True
    assert usage.output_tokens == (len(events.response.text) + 3) // 4
    assert usage.input_tokens > 0


@pytest.mark.anyio
async def test_max_tokens_field_for_older_servers() -> None:
    replay = replay_client(load("chat_completion_basic.json"))
    provider = OpenAIProvider(replay.client, max_tokens_field="max_tokens")
    await provider.complete(Request.create(model="m", user="hi", max_output_tokens=5))
    assert replay.sent[0]["max_tokens"] == 5
    assert "max_completion_tokens" not in replay.sent[0]


def _client_answering(status: int, body: str, headers: dict[str, str]) -> openai.AsyncOpenAI:
    http = http_module()

    def handler(request: Any) -> Any:
        return http.Response(status, headers=headers, content=body.encode())

    return openai.AsyncOpenAI(
        api_key="sk-test-key",
        max_retries=0,
        http_client=http.AsyncClient(transport=http.MockTransport(handler)),
    )


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "body", "headers", "error", "retryable"),
    [
        (200, "{not json", {"content-type": "application/json"}, llmguard.MalformedResponse, False),
        (
            200,
            '{"choices": []}',
            {"content-type": "application/json"},
            llmguard.MalformedResponse,
            False,
        ),
        (
            502,
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
            {"content-type": "text/html"},
            llmguard.ProviderError,
            True,
        ),
        (
            200,
            "<html><body>captive portal</body></html>",
            {"content-type": "text/html"},
            llmguard.MalformedResponse,
            False,
        ),
    ],
)
async def test_unreadable_answers_raise_documented_errors(
    status: int, body: str, headers: dict[str, str], error: type[Exception], retryable: bool
) -> None:
    provider = OpenAIProvider(_client_answering(status, body, headers))
    with pytest.raises(error) as info:
        await provider.complete(Request.create(model="m", user="hi"))
    assert isinstance(info.value, llmguard.ProviderError)
    assert info.value.retryable is retryable
    assert "<html>" not in str(info.value)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\ndata: {"id":"x","obj',
        'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\ndata: {not json}\n\n',
        'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n',
    ],
    ids=["cut-mid-event", "malformed-line", "ended-without-finish"],
)
async def test_broken_streams_raise_provider_errors(body: str) -> None:
    client = _client_answering(200, body, {"content-type": "text/event-stream"})
    guard = Guard(OpenAIProvider(client), model="m", timeout=None)
    received: list[llmguard.StreamEvent] = []
    with pytest.raises(llmguard.ProviderError) as info:
        async with guard.stream(user="hi") as events:
            async for event in events:
                received.append(event)
    assert isinstance(info.value, llmguard.MalformedResponse | llmguard.ProviderConnectionError)
    assert events.response.text.startswith("Hel") or not received


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "2"}, 2.0),
        ({"Retry-After": "0.5"}, 0.5),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": "-1"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "1e400"}, math.inf),  # overflow: an excessive wait, as the SDK reads it
        ({"retry-after": "soon"}, None),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after-ms": "bogus", "retry-after": "9"}, 9.0),
    ],
)
def test_retry_after_parsing(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers) == expected


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"retry-after": later}, now=now.timestamp) == 30.0
    earlier = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"retry-after": earlier}, now=now.timestamp) == 0.0


@pytest.mark.parametrize(
    "text",
    [
        "Incorrect API key provided: sk-proj-abc****wxyz. You can find",
        "Authorization: Bearer sk-live-123456",
        "api_key='sk-123456789'",
        "the key sk-test-PLANTED-1234 leaked",
    ],
)
def test_scrub_removes_keys(text: str) -> None:
    cleaned = scrub(text, ("sk-test-PLANTED-1234",))
    assert "sk-" not in cleaned
    assert "[redacted]" in cleaned


def test_scrub_keeps_ordinary_text() -> None:
    assert scrub("the model is overloaded; ask again") == "the model is overloaded; ask again"
    assert json.loads(json.dumps(scrub("task-runner said hi"))) == "task-runner said hi"

"""Every recorded exchange, replayed through the real openai SDK and OpenAIProvider."""

from __future__ import annotations

import json
from typing import Any

import pytest

import llmguard
from llmguard import Guard, Observe, OpenAIProvider, ProviderError, Usage
from llmguard.testing import capture_records

from .conftest import TEST_KEY, fixture_names, load, replay_client, request_from, sse_events

pytestmark = pytest.mark.anyio

CHAT_JSON = [n for n in fixture_names() if n.startswith("chat_") and "stream" not in n]
CHAT_SSE = [n for n in fixture_names() if n.startswith("chat_stream")]


def expected_usage(raw: dict[str, Any] | None) -> Usage:
    assert raw is not None
    inside = raw.get("prompt_tokens_details") or raw.get("input_tokens_details") or {}
    out = raw.get("completion_tokens_details") or raw.get("output_tokens_details") or {}
    return Usage(
        input_tokens=raw.get("prompt_tokens", raw.get("input_tokens", 0)),
        output_tokens=raw.get("completion_tokens", raw.get("output_tokens", 0)),
        cached_input_tokens=inside.get("cached_tokens") or 0,
        reasoning_tokens=out.get("reasoning_tokens") or 0,
    )


def _without_empty_descriptions(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # An empty description and none at all say the same to the model.
    out = []
    for tool in tools:
        spec = {k: v for k, v in tool["function"].items() if not (k == "description" and not v)}
        out.append({**tool, "function": spec})
    return out


def sent_body_matches(sent: dict[str, Any], recorded: dict[str, Any]) -> None:
    recorded = {k: v for k, v in recorded.items() if not (k == "stream" and v is False)}
    if "tools" in recorded and "function" in recorded["tools"][0]:
        recorded["tools"] = _without_empty_descriptions(recorded["tools"])
    if "max_completion_tokens" in sent:
        sent = dict(sent)
        sent["max_tokens"] = sent.pop("max_completion_tokens")
    assert sent == recorded


def provider_for(
    name: str, wire: str = "sdk", **kw: Any
) -> tuple[OpenAIProvider, Any, dict[str, Any]]:
    recording = load(name)
    replay = replay_client(recording)
    api = "responses" if name.startswith("responses") else "chat"
    kw["wire"] = wire if api == "chat" else "sdk"
    field = (
        "max_tokens" if "max_tokens" in recording["request"]["body"] else "max_completion_tokens"
    )
    provider = OpenAIProvider(replay.client, api=api, max_tokens_field=field, **kw)  # type: ignore[arg-type]
    return provider, replay, recording


@pytest.mark.parametrize("name", CHAT_JSON)
async def test_chat_completion_fixtures(name: str, wire: str) -> None:
    provider, replay, recording = provider_for(name, wire)
    request = request_from(recording["request"]["body"])
    response = await provider.complete(request)
    body = json.loads(recording["response"]["body"])
    choice = body["choices"][0]
    message = choice["message"]
    assert response.text == (message.get("content") or "")
    assert response.refusal == message.get("refusal")
    assert response.finish_reason == choice["finish_reason"]
    assert response.usage == expected_usage(body["usage"])
    assert response.model == body["model"]
    assert response.id == body["id"]
    assert [(c.id, c.name, c.arguments) for c in response.tool_calls] == [
        (c["id"], c["function"]["name"], c["function"]["arguments"])
        for c in message.get("tool_calls") or ()
    ]
    sent_body_matches(replay.sent[0], recording["request"]["body"])
    assert replay.paths == ["/v1/chat/completions"]


@pytest.mark.parametrize("name", CHAT_SSE)
async def test_chat_stream_fixtures(name: str, wire: str) -> None:
    provider, replay, recording = provider_for(name, wire)
    request = request_from(recording["request"]["body"])
    guard = Guard(provider, [Observe()], timeout=None)
    with capture_records() as records:
        async with guard.stream(request) as events:
            received = [event async for event in events]
    chunks = sse_events(recording["response"]["body"])
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )
    calls: dict[int, list[str]] = {}
    finish = None
    for chunk in chunks:
        for choice in chunk.get("choices") or ():
            finish = choice.get("finish_reason") or finish
            for call in choice["delta"].get("tool_calls") or ():
                slot = calls.setdefault(call["index"], ["", "", ""])
                slot[0] = call.get("id") or slot[0]
                slot[1] += call.get("function", {}).get("name") or ""
                slot[2] += call.get("function", {}).get("arguments") or ""
    usage = [c["usage"] for c in chunks if c.get("usage")][-1]
    response = events.response
    assert response.text == text
    assert [(c.id, c.name, c.arguments) for c in response.tool_calls] == [
        tuple(calls[i]) for i in sorted(calls)
    ]
    assert response.finish_reason == finish
    assert response.usage == expected_usage(usage)
    assert records[0].usage == expected_usage(usage)
    assert records[0].usage.estimated is False
    kinds = {type(e).__name__ for e in received}
    assert "Finish" in kinds and "UsageUpdate" in kinds
    sent_body_matches(replay.sent[0], recording["request"]["body"])


async def test_arguments_split_across_chunks_and_parallel_calls(wire: str) -> None:
    provider, _, recording = provider_for("chat_stream_tool_calls_parallel.json", wire)
    guard = Guard(provider, timeout=None)
    async with guard.stream(request_from(recording["request"]["body"])) as events:
        deltas = [e async for e in events if isinstance(e, llmguard.ToolCallDelta)]
    assert {d.index for d in deltas} == {0, 1}
    assert sum(1 for d in deltas if d.arguments) > 2  # split across several chunks
    response = events.response
    assert len(response.tool_calls) == 2
    for call in response.tool_calls:
        assert json.loads(call.arguments)["location"]


@pytest.mark.parametrize(
    "name", ["embeddings_base64_dimensions.json", "embeddings_float_dimensions.json"]
)
async def test_embedding_fixtures(name: str) -> None:
    recording = load(name)
    replay = replay_client(recording)
    provider = OpenAIProvider(replay.client)
    sent = recording["request"]["body"]
    result = await provider.embed(sent["input"], model=sent["model"], dimensions=sent["dimensions"])
    body = json.loads(recording["response"]["body"])
    assert len(result.vectors) == len(body["data"])
    assert all(len(v) == sent["dimensions"] for v in result.vectors)
    if isinstance(body["data"][0]["embedding"], list):
        assert result.vectors[0] == pytest.approx(body["data"][0]["embedding"])
    assert result.usage.input_tokens == body["usage"]["prompt_tokens"]
    assert result.model == body["model"]


async def test_responses_create_basic() -> None:
    provider, replay, recording = provider_for("responses_create_basic.json")
    response = await provider.complete(request_from(recording["request"]["body"]))
    body = json.loads(recording["response"]["body"])
    assert response.text == "pong"
    assert response.usage == expected_usage(body["usage"])
    assert response.finish_reason == "stop"
    assert replay.paths == ["/v1/responses"]
    assert replay.sent[0]["input"] == recording["request"]["body"]["input"]
    assert replay.sent[0]["reasoning"] == recording["request"]["body"]["reasoning"]


async def test_responses_stream_text() -> None:
    provider, _, recording = provider_for("responses_stream_text.json")
    guard = Guard(provider, timeout=None)
    async with guard.stream(request_from(recording["request"]["body"])) as events:
        [_ async for _ in events]
    payloads = sse_events(recording["response"]["body"])
    text = "".join(p["delta"] for p in payloads if p["type"] == "response.output_text.delta")
    completed = next(p for p in payloads if p["type"] == "response.completed")
    assert events.response.text == text
    assert events.response.usage == expected_usage(completed["response"]["usage"])
    assert events.response.finish_reason == "stop"


async def test_responses_stream_function_call() -> None:
    provider, _, recording = provider_for("responses_stream_function_call.json")
    guard = Guard(provider, timeout=None)
    async with guard.stream(request_from(recording["request"]["body"])) as events:
        [_ async for _ in events]
    payloads = sse_events(recording["response"]["body"])
    done = [p for p in payloads if p["type"] == "response.output_item.done"]
    items = [p["item"] for p in done if p["item"]["type"] == "function_call"]
    response = events.response
    assert [(c.id, c.name, c.arguments) for c in response.tool_calls] == [
        (i["call_id"], i["name"], i["arguments"]) for i in items
    ]
    assert response.finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("error_400_unsupported_parameter.json", 400),
        ("error_401_invalid_api_key.json", 401),
        ("error_404_model_not_found.json", 404),
        ("responses_error_400_model_not_found.json", 400),
    ],
)
async def test_error_fixtures(name: str, status: int, wire: str) -> None:
    provider, _, recording = provider_for(name, wire)
    with pytest.raises(ProviderError) as info:
        await provider.complete(request_from(recording["request"]["body"]))
    error = info.value
    body = json.loads(recording["response"]["body"])
    assert type(error) is ProviderError
    assert error.status_code == status
    assert error.retryable is False
    assert error.provider == "openai"
    assert str(error).startswith(f"HTTP {status}: ")
    if status != 401:
        assert body["error"]["message"] in str(error)


async def test_compatible_server_429_is_rate_limited(wire: str) -> None:
    provider, _, recording = provider_for("compat_openrouter_chat_429_rate_limited.json", wire)
    with pytest.raises(llmguard.RateLimited) as info:
        await provider.complete(request_from(recording["request"]["body"]))
    assert info.value.status_code == 429
    assert info.value.retryable is True
    assert info.value.retry_after is None  # OpenRouter sends X-RateLimit-Reset, not Retry-After
    assert "Rate limit exceeded" in str(info.value)


async def test_planted_key_never_leaks_on_the_401_path(wire: str) -> None:
    recording = load("error_401_invalid_api_key.json")
    key = "sk-proj-PLANTEDSECRET0123456789abcdef"
    echoed = recording["response"]["body"].replace(
        "\\u003cnot-a-r****key\\u003e", "sk-proj-****cdef"
    )
    recording = {**recording, "response": {**recording["response"], "body": echoed}}
    replay = replay_client(recording, api_key=key)
    provider = OpenAIProvider(replay.client, wire=wire)  # type: ignore[arg-type]
    seen: list[llmguard.CallRecord] = []
    guard = Guard(provider, [Observe(callback=seen.append)], model="gpt-4o-mini")
    with pytest.raises(ProviderError) as info:
        await guard.complete(user="hi")
    texts = [
        str(info.value),
        repr(info.value),
        str(info.value.__cause__),
        repr(info.value.__cause__),
    ]
    texts += [repr(seen[0]), json.dumps(seen[0].as_dict()), repr(provider)]
    for text in texts:
        assert key not in text
        assert "PLANTED" not in text
        assert "sk-proj-****cdef" not in text
    assert "[redacted]" in str(info.value)


def test_no_key_in_provider_repr(wire: str) -> None:
    replay = replay_client(load("chat_completion_basic.json"))
    assert TEST_KEY not in repr(OpenAIProvider(replay.client, wire=wire))  # type: ignore[arg-type]

"""Structured output through the real openai SDK, on the fake OpenAI endpoint."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from llmguard import (
    ConfigurationError,
    Guard,
    Observe,
    OpenAIProvider,
    Refusal,
    Usage,
    output_schema,
)
from llmguard.testing import Cassette, FakeOpenAIEndpoint, FakeReply, capture_records

from .conftest import FIXTURES, load

pytestmark = pytest.mark.anyio

STRUCTURED = "chat_structured_output_json_schema.json"
REFUSED = "chat_structured_output_refusal.json"


class StructuredAnswer(BaseModel):
    rating: int
    joke: str


def replay(name: str, wire: str) -> tuple[Guard, FakeOpenAIEndpoint, dict[str, Any]]:
    recording = load(name)  # skips (or fails on CI) when the fixtures are missing
    endpoint = Cassette.load(FIXTURES / name).endpoint()
    provider = OpenAIProvider(endpoint.async_client(), wire=wire)  # type: ignore[arg-type]
    guard = Guard(provider, [Observe()], model="gpt-4o")
    return guard, endpoint, recording


async def test_the_recorded_structured_output_gives_the_instance(wire: str) -> None:
    guard, endpoint, recording = replay(STRUCTURED, wire)
    body = recording["request"]["body"]
    with capture_records() as records:
        answer = await guard.structured(StructuredAnswer, user=body["messages"][0]["content"])
    choice = json.loads(recording["response"]["body"])["choices"][0]
    message = json.loads(choice["message"]["content"])
    assert answer == StructuredAnswer(**message)
    assert answer.rating == 4
    # What went over the wire is what OpenAI's own SDK sends for this model (parse()).
    (sent,) = endpoint.requests
    assert sent.json["response_format"] == body["response_format"]
    assert sent.json["response_format"]["type"] == "json_schema"
    assert sent.json["response_format"]["json_schema"]["strict"] is True
    assert sent.json["messages"] == body["messages"]
    assert sent.json["model"] == body["model"]
    (record,) = records
    assert (record.attempts, record.usage) == (1, Usage(input_tokens=68, output_tokens=35))


async def test_the_recorded_refusal_is_a_refusal_and_not_re_asked(wire: str) -> None:
    guard, endpoint, recording = replay(REFUSED, wire)
    body = recording["request"]["body"]
    with capture_records() as records, pytest.raises(Refusal) as caught:
        await guard.structured(StructuredAnswer, user=body["messages"][0]["content"])
    assert caught.value.refusal == "I'm very sorry, but I can't assist with that request."
    assert len(endpoint.requests) == 1
    assert endpoint.requests[0].json["response_format"] == body["response_format"]
    (record,) = records
    assert (record.attempts, record.error) == (1, "Refusal")
    assert record.usage == Usage(input_tokens=65, output_tokens=13)


async def test_a_re_ask_through_the_sdk(wire: str) -> None:
    endpoint = FakeOpenAIEndpoint(
        [
            FakeReply.json({"rating": "high", "joke": "j"}),
            FakeReply.json({"rating": 5, "joke": "j"}),
        ]
    )
    provider = OpenAIProvider(endpoint.async_client(), wire=wire)  # type: ignore[arg-type]
    guard = Guard(provider, [Observe()], model="gpt-4o")
    with capture_records() as records:
        answer = await guard.structured(StructuredAnswer, user="joke")
    assert answer == StructuredAnswer(rating=5, joke="j")
    first, second = endpoint.requests
    assert [m["role"] for m in second.json["messages"]] == ["user", "assistant", "user"]
    assert "valid integer" in second.json["messages"][-1]["content"]
    assert second.json["response_format"] == first.json["response_format"]
    (record,) = records
    assert record.attempts == 2


async def test_streaming_through_the_sdk(wire: str) -> None:
    endpoint = FakeOpenAIEndpoint([FakeReply.json({"rating": 3, "joke": "a long joke " * 5})])
    provider = OpenAIProvider(endpoint.async_client(), wire=wire)  # type: ignore[arg-type]
    guard = Guard(provider, model="gpt-4o")
    async with guard.structured_stream(StructuredAnswer, user="joke") as partials:
        seen = [partial async for partial in partials]
    assert seen[-1] == StructuredAnswer(rating=3, joke="a long joke " * 5)
    assert len(seen) > 3
    (sent,) = endpoint.requests
    assert sent.json["stream"] is True
    assert sent.json["response_format"] == output_schema(StructuredAnswer).response_format


async def test_the_responses_api_gets_text_format() -> None:
    endpoint = FakeOpenAIEndpoint([FakeReply.json({"rating": 2, "joke": "j"})])
    provider = OpenAIProvider(endpoint.async_client(), api="responses")
    guard = Guard(provider, model="gpt-4o")
    assert await guard.structured(StructuredAnswer, user="joke") == StructuredAnswer(
        rating=2, joke="j"
    )
    (sent,) = endpoint.requests
    schema = output_schema(StructuredAnswer)
    assert sent.json["text"]["format"] == {
        "type": "json_schema",
        "name": "StructuredAnswer",
        "schema": schema.json_schema,
        "strict": True,
    }


async def test_a_server_without_strict_schemas_gets_json_mode() -> None:
    endpoint = FakeOpenAIEndpoint([FakeReply.json({"rating": 2, "joke": "j"})])
    provider = OpenAIProvider(endpoint.async_client(), structured_output="json")
    await Guard(provider, model="llama3").structured(StructuredAnswer, user="joke")
    (sent,) = endpoint.requests
    assert sent.json["response_format"] == {"type": "json_object"}
    assert sent.json["messages"][0]["role"] == "system"


def test_structured_output_takes_only_the_three_modes() -> None:
    endpoint = FakeOpenAIEndpoint()
    with pytest.raises(ConfigurationError, match="structured_output"):
        OpenAIProvider(endpoint.async_client(), structured_output="xml")  # type: ignore[arg-type]
    assert OpenAIProvider(endpoint.async_client()).structured_output_mode("gpt-4o") == "strict"

"""Parallel tool-call deltas from a recorded OpenAI stream pass through ``sse()`` intact."""

from __future__ import annotations

import json

import pytest

from llmguard import Guard, OpenAIProvider, ToolCallDelta, parse_sse, sse

from .conftest import load, replay_client, request_from, sse_events


@pytest.mark.anyio
async def test_parallel_tool_call_deltas_survive_sse_encoding(wire: str) -> None:
    recording = load("chat_stream_tool_calls_parallel.json")
    request = request_from(recording["request"]["body"])
    provider = OpenAIProvider(replay_client(recording).client, wire=wire)  # type: ignore[arg-type]
    guard = Guard(provider, timeout=None)
    async with guard.stream(request) as events:
        seen = []

        async def tee():  # type: ignore[no-untyped-def]
            async for event in events:
                seen.append(event)
                yield event

        body = b"".join([chunk async for chunk in sse(tee())])
        response = events.response
    assert body.endswith(b"data: [DONE]\n\n")
    parsed = list(parse_sse(body))
    assert parsed == seen  # every event, in order, field for field
    deltas = [e for e in parsed if isinstance(e, ToolCallDelta)]
    assert {d.index for d in deltas} == {0, 1}

    # What the recorded chunks said, read independently of llmguard's mapping.
    expected: dict[int, dict[str, str]] = {}
    for chunk in sse_events(recording["response"]["body"]):
        for choice in chunk.get("choices") or ():
            for call in choice["delta"].get("tool_calls") or ():
                slot = expected.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
                slot["id"] = call.get("id") or slot["id"]
                slot["name"] += call.get("function", {}).get("name") or ""
                slot["arguments"] += call.get("function", {}).get("arguments") or ""
    rebuilt: dict[int, dict[str, str]] = {}
    for d in deltas:
        slot = rebuilt.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
        slot["id"] = d.id or slot["id"]
        slot["name"] += d.name or ""
        slot["arguments"] += d.arguments
    assert rebuilt == expected
    for slot in rebuilt.values():
        assert "location" in json.loads(slot["arguments"])
    assert [c.name for c in response.tool_calls] == [expected[0]["name"], expected[1]["name"]]

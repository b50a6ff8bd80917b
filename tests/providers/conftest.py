"""Replaying the recorded OpenAI traffic in ``shared/fixtures/openai`` through the real SDK.

The transport is the SDK's own: ``httpx2.MockTransport`` under openai 3.x,
``httpx.MockTransport`` under openai 2.x (``make test`` runs these tests on both).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest

from llmguard import Message, Request, ToolCall, ToolSpec
from llmguard.testing._openai_body import http_module_for_sdk

OPENAI_MAJOR = int(openai.__version__.split(".")[0])
REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("LLMGUARD_FIXTURES", REPO.parent / "shared" / "fixtures" / "openai"))
TEST_KEY = "sk-test-PLANTED-abcdef1234567890"


def fixture_names() -> list[str]:
    if not FIXTURES.is_dir():
        return []
    return sorted(p.name for p in FIXTURES.glob("*.json"))


def load(name: str) -> dict[str, Any]:
    if not FIXTURES.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"the recorded fixtures are missing: {FIXTURES}")
        pytest.skip(f"the recorded fixtures are missing: {FIXTURES}")
    return json.loads((FIXTURES / name).read_text())  # type: ignore[no-any-return]


# The HTTP library of the installed SDK (httpx2 from openai 3.x on, httpx before).
http_module = http_module_for_sdk


@dataclass
class Replay:
    """A client whose every request is answered with one recorded response."""

    client: openai.AsyncOpenAI
    sent: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)


def replay_client(
    recording: dict[str, Any],
    *,
    api_key: str = TEST_KEY,
    base_url: str | None = None,
    max_retries: int = 0,
) -> Replay:
    http = http_module()
    sent: list[dict[str, Any]] = []
    paths: list[str] = []

    def handler(request: Any) -> Any:
        body = request.content
        sent.append(json.loads(body) if body else {})
        paths.append(request.url.path)
        response = recording["response"]
        return http.Response(
            response["status"], headers=response["headers"], content=response["body"].encode()
        )

    client = openai.AsyncOpenAI(
        api_key=api_key,
        base_url=base_url,
        max_retries=max_retries,
        http_client=http.AsyncClient(transport=http.MockTransport(handler)),
    )
    return Replay(client=client, sent=sent, paths=paths)


def _message(raw: dict[str, Any]) -> Message:
    calls = tuple(
        ToolCall(id=c["id"], name=c["function"]["name"], arguments=c["function"]["arguments"])
        for c in raw.get("tool_calls") or ()
    )
    content = raw.get("content")
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content)
    return Message(
        role=raw["role"],
        content=content,
        name=raw.get("name"),
        tool_call_id=raw.get("tool_call_id"),
        tool_calls=calls,
    )


_CHAT_FIELDS = {"model", "messages", "tools", "tool_choice", "response_format", "temperature"}
_CHAT_FIELDS |= {"top_p", "max_tokens", "stop", "seed", "stream", "stream_options", "input"}


def request_from(body: dict[str, Any]) -> Request:
    """The llmguard ``Request`` that should produce the recorded request body."""
    tools = []
    for tool in body.get("tools") or ():
        spec = tool.get("function", tool)
        tools.append(
            ToolSpec(
                name=spec["name"],
                description=spec.get("description", ""),
                parameters=spec.get("parameters", {}),
                strict=bool(spec.get("strict", False)),
            )
        )
    messages = body.get("messages") or body.get("input") or []
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    stop = body.get("stop")
    return Request(
        model=body["model"],
        messages=tuple(_message(m) for m in messages),
        tools=tuple(tools),
        tool_choice=body.get("tool_choice"),
        response_format=body.get("response_format"),
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        max_output_tokens=body.get("max_tokens"),
        stop=(stop,) if isinstance(stop, str) else tuple(stop or ()),
        seed=body.get("seed"),
        extras={k: v for k, v in body.items() if k not in _CHAT_FIELDS},
    )


def sse_events(body: str) -> list[dict[str, Any]]:
    """The JSON payloads of an SSE body (an independent, minimal reading)."""
    events = []
    for line in body.splitlines():
        if line.startswith("data:"):
            data = line[5:].strip()
            if data and data != "[DONE]":
                events.append(json.loads(data))
    return events


@pytest.fixture
def make_replay() -> Callable[..., Replay]:
    return replay_client


@pytest.fixture(params=["sdk", "lean"])
def wire(request: pytest.FixtureRequest) -> str:
    """The chat tests run on both wires: through the SDK, and the lean wire client."""
    return str(request.param)

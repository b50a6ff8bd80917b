"""What ``FakeOpenAIEndpoint`` logs: the requests it received and the responses it
served, and the reading of a request body back into an llmguard ``Request``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from .._types import Message, Request, Role, ToolCall, ToolSpec

__all__ = [
    "SECRET_HEADERS",
    "WireRequest",
    "WireResponse",
    "api_path",
    "request_from_wire",
    "wire_request",
]

SECRET_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "cookie"})
"""Request headers the log keeps only as ``[redacted]``."""


@dataclass(slots=True, kw_only=True)
class WireResponse:
    """A response the endpoint served, and what the client did with its body.

    ``body`` is the whole body as scripted (for a cut stream: up to the cut).
    ``completed``: every chunk was handed to the client (and no failure was scripted
    after them); ``closed``: the client closed it. ``closed`` without ``completed`` is an
    early close, e.g. ``await stream.close()`` after the first chunk.
    """

    status: int
    headers: dict[str, str]
    body: bytes
    sse: bool
    chunks_total: int = 0
    chunks_sent: int = 0
    completed: bool = False
    closed: bool = False

    @property
    def text(self) -> str:
        """The body as text."""
        return self.body.decode("utf-8", errors="replace")

    @property
    def closed_early(self) -> bool:
        """The client closed the body before reading it all."""
        return self.closed and not self.completed


@dataclass(slots=True, kw_only=True)
class WireRequest:
    """A request the endpoint received.

    ``headers`` are lower-cased, with ``authorization`` (and other credentials) replaced
    by ``[redacted]``; ``json`` is the parsed body (``None`` if there is none or it is
    not JSON). ``response`` is what was served, or ``None`` when the transport failed
    instead; ``error`` then names what was raised (``"ReadTimeout"``,
    ``"ConnectError"``, ``"FakeScriptExhausted"``...).
    """

    method: str
    url: str
    path: str
    headers: dict[str, str]
    json: Any
    response: WireResponse | None = None
    error: str | None = None

    @property
    def stream(self) -> bool:
        """Whether the body asked for ``"stream": true``."""
        return isinstance(self.json, Mapping) and self.json.get("stream") is True

    @property
    def api(self) -> str:
        """``"chat"``, ``"responses"``, ``"embeddings"`` or ``""`` (any other path)."""
        for suffix, api in _APIS:
            if self.path.rstrip("/").endswith(suffix):
                return api
        return ""


_APIS = (("/chat/completions", "chat"), ("/responses", "responses"), ("/embeddings", "embeddings"))


def api_path(path: str) -> str:
    """The path from the API's name on (``/v1/chat/completions`` and
    ``/openai/v1/chat/completions`` are both ``/chat/completions``), so a recording
    replays whatever base URL it was made with; any other path as it is."""
    for suffix, _ in _APIS:
        where = path.find(suffix)
        if where >= 0:
            return path[where:]
    return path


def wire_request(request: Any) -> WireRequest:
    """The log entry of an ``httpx2``/``httpx`` request."""
    try:
        content = request.content
    except Exception:  # a streamed request body that was never read
        content = request.read()
    try:
        body = json.loads(content) if content else None
    except ValueError:
        body = None
    headers = {
        name.lower(): "[redacted]" if name.lower() in SECRET_HEADERS else value
        for name, value in request.headers.items()
    }
    return WireRequest(
        method=str(request.method).upper(),
        url=str(request.url),
        path=request.url.path,
        headers=headers,
        json=body,
    )


# Reading a request body back -------------------------------------------------------


def _text_of(content: Any) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return str(content)


def _chat_message(raw: Mapping[str, Any]) -> Message:
    calls = tuple(
        ToolCall(
            id=str(c.get("id", "")),
            name=str(c.get("function", {}).get("name", "")),
            arguments=str(c.get("function", {}).get("arguments", "{}")),
        )
        for c in raw.get("tool_calls") or ()
    )
    return Message(
        role=cast(Role, raw.get("role", "user")),
        content=_text_of(raw.get("content")),
        name=raw.get("name"),
        tool_call_id=raw.get("tool_call_id"),
        tool_calls=calls,
    )


def _responses_item(raw: Any) -> Message:
    if isinstance(raw, str):
        return Message.user(raw)
    kind = raw.get("type")
    if kind == "function_call":
        call = ToolCall(
            id=raw.get("call_id", ""),
            name=raw.get("name", ""),
            arguments=raw.get("arguments", "{}"),
        )
        return Message.assistant(tool_calls=[call])
    if kind == "function_call_output":
        return Message.tool(str(raw.get("output", "")), tool_call_id=raw.get("call_id", ""))
    return Message(role=cast(Role, raw.get("role", "user")), content=_text_of(raw.get("content")))


def _tool_spec(raw: Mapping[str, Any]) -> ToolSpec:
    spec = raw.get("function", raw)
    return ToolSpec(
        name=str(spec.get("name", "")),
        description=str(spec.get("description") or ""),
        parameters=spec.get("parameters") or {},
        strict=bool(spec.get("strict", False)),
    )


def request_from_wire(api: str, body: Any, *, model: str) -> Request:
    """The llmguard ``Request`` a chat-completions or Responses API body asks for.

    Tolerant: a shape it does not know becomes an empty request, never an error.
    """
    if not isinstance(body, Mapping):
        return Request(model=model, messages=())
    messages: list[Message] = []
    if api == "responses":
        if body.get("instructions"):
            messages.append(Message(role="system", content=str(body["instructions"])))
        items = body.get("input") or []
        items = [items] if isinstance(items, str) else items
        messages.extend(_responses_item(item) for item in items if isinstance(item, str | Mapping))
    else:
        messages.extend(
            _chat_message(m) for m in body.get("messages") or () if isinstance(m, Mapping)
        )
    stop = body.get("stop")
    return Request(
        model=str(body.get("model") or model),
        messages=tuple(messages),
        tools=tuple(_tool_spec(t) for t in body.get("tools") or () if isinstance(t, Mapping)),
        tool_choice=body.get("tool_choice"),
        response_format=body.get("response_format"),
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        max_output_tokens=body.get("max_completion_tokens")
        or body.get("max_tokens")
        or body.get("max_output_tokens"),
        stop=(stop,) if isinstance(stop, str) else tuple(stop or ()),
        seed=body.get("seed"),
    )

"""The Responses API: ``Request`` to SDK arguments, SDK objects to ``Response`` and events."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .._errors import ProviderError
from .._types import (
    EMPTY_USAGE,
    Finish,
    Message,
    RefusalDelta,
    Request,
    Response,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    UsageUpdate,
)
from ._openai_chat import usage_from

__all__ = ["ResponsesStreamState", "responses_arguments", "responses_events", "responses_response"]


def _items(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [
            {
                "type": "function_call_output",
                "call_id": message.tool_call_id,
                "output": message.content or "",
            }
        ]
    items: list[dict[str, Any]] = []
    if message.content is not None or not message.tool_calls:
        items.append({"role": message.role, "content": message.content or ""})
    items.extend(
        {"type": "function_call", "call_id": c.id, "name": c.name, "arguments": c.arguments}
        for c in message.tool_calls
    )
    return items


def responses_arguments(request: Request, *, stream: bool) -> dict[str, Any]:
    """Keyword arguments for ``client.responses.create``."""
    args: dict[str, Any] = {
        "model": request.model,
        "input": [item for m in request.messages for item in _items(m)],
    }
    if request.tools:
        tools = []
        for tool in request.tools:
            spec: dict[str, Any] = {
                "type": "function",
                "name": tool.name,
                "parameters": dict(tool.parameters),
                "strict": tool.strict,
            }
            if tool.description:
                spec["description"] = tool.description
            tools.append(spec)
        args["tools"] = tools
    if request.tool_choice is not None:
        args["tool_choice"] = request.tool_choice
    if request.response_format is not None:
        args["text"] = {"format": _text_format(request.response_format)}
    if request.temperature is not None:
        args["temperature"] = request.temperature
    if request.top_p is not None:
        args["top_p"] = request.top_p
    if request.max_output_tokens is not None:
        args["max_output_tokens"] = request.max_output_tokens
    if stream:
        args["stream"] = True
    extra: dict[str, Any] = dict(request.extras)
    if request.stop:
        extra.setdefault("stop", list(request.stop))
    if request.seed is not None:
        extra.setdefault("seed", request.seed)
    if extra:
        args["extra_body"] = extra
    return args


def _text_format(response_format: Any) -> dict[str, Any]:
    """Chat's ``response_format`` in the Responses API's ``text.format`` shape."""
    fmt = dict(response_format)
    if fmt.get("type") == "json_schema" and isinstance(fmt.get("json_schema"), dict):
        inner = dict(fmt["json_schema"])
        return {"type": "json_schema", **inner}
    return fmt


def _finish(raw: Any, has_calls: bool) -> str | None:
    status = getattr(raw, "status", None)
    if status == "incomplete":
        reason = getattr(getattr(raw, "incomplete_details", None), "reason", None)
        return "length" if reason == "max_output_tokens" else (reason or "length")
    if has_calls:
        return "tool_calls"
    if status in ("completed", None):
        return "stop"
    return str(status)


def responses_response(raw: Any, *, provider: str) -> Response:
    """A ``Response`` from a Responses API ``Response`` object."""
    texts: list[str] = []
    refusal: str | None = None
    calls: list[ToolCall] = []
    for item in raw.output or ():
        kind = getattr(item, "type", None)
        if kind == "message":
            for part in item.content or ():
                if part.type == "output_text":
                    texts.append(part.text)
                elif part.type == "refusal":
                    refusal = part.refusal
        elif kind == "function_call":
            calls.append(
                ToolCall(id=item.call_id, name=item.name, arguments=item.arguments or "{}")
            )
    return Response(
        text="".join(texts),
        tool_calls=tuple(calls),
        finish_reason=_finish(raw, bool(calls)),
        usage=usage_from(raw.usage) or EMPTY_USAGE,
        model=raw.model or "",
        provider=provider,
        id=raw.id,
        refusal=refusal,
        raw=raw,
    )


class ResponsesStreamState:
    """Tool-call slots by output index, and whether the response completed."""

    __slots__ = ("calls", "finished", "saw_usage")

    def __init__(self) -> None:
        self.calls: dict[int, int] = {}
        self.finished = False
        self.saw_usage = False


def responses_events(event: Any, state: ResponsesStreamState) -> Iterator[StreamEvent]:
    """The llmguard events one Responses API stream event carries."""
    kind = getattr(event, "type", "")
    if kind == "response.output_text.delta":
        if event.delta:
            yield TextDelta(text=event.delta)
    elif kind == "response.refusal.delta":
        if event.delta:
            yield RefusalDelta(text=event.delta)
    elif kind == "response.output_item.added":
        item = event.item
        if getattr(item, "type", None) == "function_call":
            slot = state.calls.setdefault(event.output_index, len(state.calls))
            yield ToolCallDelta(index=slot, id=item.call_id or None, name=item.name or None)
    elif kind == "response.function_call_arguments.delta":
        slot = state.calls.setdefault(event.output_index, len(state.calls))
        yield ToolCallDelta(index=slot, arguments=event.delta or "")
    elif kind in ("response.completed", "response.incomplete"):
        response = event.response
        state.finished = True
        usage = usage_from(response.usage)
        if usage is not None:
            state.saw_usage = True
            yield UsageUpdate(usage=usage)
        yield Finish(reason=_finish(response, bool(state.calls)))
    elif kind in ("response.failed", "error"):
        error = getattr(getattr(event, "response", None), "error", None) or event
        message = getattr(error, "message", None) or "the response failed"
        raise ProviderError(f"the provider reported an error mid-stream: {message}", retryable=True)

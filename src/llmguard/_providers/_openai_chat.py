"""Chat Completions: ``Request`` to SDK arguments, SDK objects to ``Response`` and events.

Tolerant of what OpenAI-compatible servers send (see docs/providers.md): usage in a
vendor field or as a running total, chunks with no choices, content as a list of
parts, reasoning fields, empty tool-call ids, finish reasons outside OpenAI's set.
"""

from __future__ import annotations

from typing import Any

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
    Usage,
    UsageUpdate,
)

__all__ = ["chat_arguments", "chat_events", "chat_response", "finish_reason", "usage_from"]

_FINISH = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "eos": "stop",
    "eos_token": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}


def finish_reason(raw: str | None) -> str | None:
    """OpenAI's finish reasons as they are; other servers' spellings mapped onto them."""
    if raw is None:
        return None
    return _FINISH.get(raw, raw)


def _message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name is not None:
        out["name"] = message.name
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    return out


def chat_arguments(
    request: Request, *, stream: bool, include_usage: bool, max_tokens_field: str
) -> dict[str, Any]:
    """Keyword arguments for ``client.chat.completions.create``.

    ``extras`` go out through ``extra_body``: exactly as given, never dropped.
    """
    args: dict[str, Any] = {
        "model": request.model,
        "messages": [_message(m) for m in request.messages],
    }
    if request.tools:
        tools = []
        for tool in request.tools:
            function: dict[str, Any] = {"name": tool.name, "parameters": dict(tool.parameters)}
            if tool.description:
                function["description"] = tool.description
            if tool.strict:
                function["strict"] = True
            tools.append({"type": "function", "function": function})
        args["tools"] = tools
    if request.tool_choice is not None:
        args["tool_choice"] = request.tool_choice
    if request.response_format is not None:
        args["response_format"] = dict(request.response_format)
    if request.temperature is not None:
        args["temperature"] = request.temperature
    if request.top_p is not None:
        args["top_p"] = request.top_p
    if request.max_output_tokens is not None:
        args[max_tokens_field] = request.max_output_tokens
    if request.stop:
        args["stop"] = list(request.stop)
    if request.seed is not None:
        args["seed"] = request.seed
    if stream:
        args["stream"] = True
        if include_usage:
            args["stream_options"] = {"include_usage": True}
    if request.extras:
        args["extra_body"] = dict(request.extras)
    return args


def _get(obj: Any, name: str) -> Any:
    """``obj[name]`` of a dict, else the attribute ``name`` or None. On a pydantic model
    a field absent from the model (``input_tokens`` on ``CompletionUsage``) is looked up
    in its extras directly: ``getattr(model, missing, None)`` goes through pydantic's
    ``__getattr__`` and a caught ``AttributeError``, about 4 µs each."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    fields = getattr(obj, "__dict__", None)
    if fields is not None and name in fields:
        return fields[name]
    extra = getattr(obj, "__pydantic_extra__", _NOT_PYDANTIC)
    if extra is _NOT_PYDANTIC:
        return getattr(obj, name, None)
    return None if not extra else extra.get(name)


_NOT_PYDANTIC: Any = object()


def usage_from(raw: Any) -> Usage | None:
    """``Usage`` from an OpenAI usage object or dict (``None`` when there is none)."""
    if raw is None:
        return None
    fields = getattr(raw, "__dict__", None)
    if (
        fields is not None
        and type(fields.get("prompt_tokens")) is int
        and not getattr(raw, "__pydantic_extra__", None)
    ):
        # openai's CompletionUsage with no vendor fields (the common case), read directly.
        completion = fields.get("completion_tokens")
        if type(completion) is int:
            details_in = fields.get("prompt_tokens_details")
            details_out = fields.get("completion_tokens_details")
            return Usage(
                input_tokens=fields["prompt_tokens"],
                output_tokens=completion,
                cached_input_tokens=0
                if details_in is None
                else int(_get(details_in, "cached_tokens") or 0),
                reasoning_tokens=0
                if details_out is None
                else int(_get(details_out, "reasoning_tokens") or 0),
            )
    prompt = _get(raw, "prompt_tokens")
    if prompt is None:
        prompt = _get(raw, "input_tokens")  # Responses-style or vendor usage
    completion = _get(raw, "completion_tokens")
    if completion is None:
        completion = _get(raw, "output_tokens")
    details_in = _get(raw, "prompt_tokens_details") or _get(raw, "input_tokens_details")
    details_out = _get(raw, "completion_tokens_details") or _get(raw, "output_tokens_details")
    return Usage(
        input_tokens=int(prompt or 0),
        output_tokens=int(completion or 0),
        cached_input_tokens=int(_get(details_in, "cached_tokens") or 0),
        reasoning_tokens=int(_get(details_out, "reasoning_tokens") or 0),
    )


def _vendor_usage(obj: Any) -> Any:
    """Usage a compatible server put in a vendor field, e.g. Groq's ``x_groq.usage``."""
    extra = getattr(obj, "model_extra", None) or {}
    for value in extra.values():
        usage = _get(value, "usage")
        if usage is not None:
            return usage
    return None


def _text(content: Any) -> str:
    """Message content as text: a string, or the text parts of a list (reasoning parts
    are left out)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        kind = _get(part, "type")
        if kind in ("text", "output_text", None):
            text = _get(part, "text")
            if isinstance(text, str):
                parts.append(text)
    return "".join(parts)


def chat_response(completion: Any, *, provider: str) -> Response:
    """A ``Response`` from a ``ChatCompletion``."""
    choices = completion.choices
    if not choices:
        raise ValueError("the completion has no choices")
    choice = choices[0]
    message = choice.message
    calls = tuple(
        ToolCall(
            id=call.id or f"call_{index}",
            name=call.function.name,
            arguments=call.function.arguments or "{}",
        )
        for index, call in enumerate(message.tool_calls or ())
    )
    usage = usage_from(completion.usage) or usage_from(_vendor_usage(completion)) or EMPTY_USAGE
    return Response(
        text=_text(message.content),
        tool_calls=calls,
        finish_reason=finish_reason(choice.finish_reason),
        usage=usage,
        model=completion.model or "",
        provider=provider,
        id=completion.id,
        refusal=getattr(message, "refusal", None),
        raw=completion,
    )


class ChatStreamState:
    """What a chat stream has shown so far (to tell a whole answer from a cut one)."""

    __slots__ = ("finished", "saw_usage")

    def __init__(self) -> None:
        self.finished = False
        self.saw_usage = False


def chat_events(chunk: Any, state: ChatStreamState) -> list[StreamEvent]:
    """The events one ``ChatCompletionChunk`` carries."""
    events: list[StreamEvent] = []
    for choice in chunk.choices or ():
        if choice.index not in (0, None):
            continue
        delta = choice.delta
        if delta is not None:
            content = delta.content
            if content:
                text = content if type(content) is str else _text(content)
                if text:
                    events.append(TextDelta(text=text))
            refusal = delta.refusal
            if refusal and type(refusal) is str:
                events.append(RefusalDelta(text=refusal))
            if delta.tool_calls:
                for call in delta.tool_calls:
                    function = call.function
                    events.append(
                        ToolCallDelta(
                            index=call.index,
                            id=call.id or None,
                            name=(function.name if function is not None else None) or None,
                            arguments=(function.arguments if function is not None else None) or "",
                        )
                    )
        if choice.finish_reason is not None:
            state.finished = True
            events.append(Finish(reason=finish_reason(choice.finish_reason)))
    usage = chunk.usage
    if usage is None and chunk.model_extra:
        usage = _vendor_usage(chunk)
    if usage is not None:
        state.saw_usage = True
        parsed = usage_from(usage)
        if parsed is not None:
            events.append(UsageUpdate(usage=parsed))
    return events

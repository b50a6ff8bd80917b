"""Chat Completions on the lean wire path: the request body as bytes, and parsed JSON
(plain dicts and lists) straight to ``Response`` and stream events.

The mapping mirrors ``_openai_chat`` (which reads the SDK's objects) access for access,
so both paths give the same result for the same bytes. The openai SDK builds its
objects without validation (``construct``): a field that is missing reads as ``None``,
and a value of the wrong type is kept as it is. Here a dict plays the model (``_f``
returns ``None`` for a missing key), and anything else is read with ``getattr``, as
the SDK path reads what the SDK kept (so a str's ``index`` is its method there too,
and a missing attribute raises the same ``AttributeError``).
Usage in a vendor field is found among the keys the SDK's model does not know.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from jiter import from_json

from .._types import (
    EMPTY_USAGE,
    Finish,
    RefusalDelta,
    Request,
    Response,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    UsageUpdate,
)
from ._openai_chat import ChatStreamState, _text, chat_arguments, finish_reason, usage_from

__all__ = ["chunk_events", "completion_response", "encode_body", "loads"]

# The fields of the SDK's ChatCompletion and ChatCompletionChunk (openai 3.x; 2.x has
# fewer): other top-level keys are what the SDK calls ``model_extra``.
_COMPLETION_FIELDS = frozenset(
    {"choices", "created", "id", "metadata", "model", "moderation", "object"}
    | {"service_tier", "system_fingerprint", "usage"}
)
_CHUNK_FIELDS = frozenset(
    {"choices", "created", "id", "model", "moderation", "obfuscation", "object"}
    | {"service_tier", "system_fingerprint", "usage"}
)


def _f(obj: Any, name: str) -> Any:
    """``obj.name`` as the SDK path reads it: a dict is a model whose missing fields are
    ``None``; anything else is what the SDK kept as it was (a str, a list, ``None``…),
    read with ``getattr`` as the SDK path reads it."""
    if type(obj) is dict:
        return obj.get(name)
    return getattr(obj, name)


def loads(data: bytes | str) -> Any:
    """JSON as the SDK reads it (``json.loads``), parsed by jiter when it can: whatever
    jiter rejects is read again by ``json``, which returns the same value or raises the
    same error the SDK path raises (jiter refuses lone surrogates, ``json`` keeps them)."""
    try:
        return from_json(data.encode() if isinstance(data, str) else data)
    except ValueError:
        return json.loads(data)


class _Encoder(json.JSONEncoder):
    """The SDK's request encoder (``openai._utils._json``): compact, UTF-8 kept as is, no
    NaN; a ``datetime`` or a pydantic model in ``extras`` is written as the SDK writes it."""

    def default(self, o: Any) -> Any:
        if isinstance(o, datetime):
            return o.isoformat()
        from pydantic import BaseModel  # only for what plain JSON cannot hold

        if isinstance(o, BaseModel):
            return o.model_dump(exclude_unset=True, mode="json", by_alias=True)
        return super().default(o)


_ENCODE = _Encoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def encode_body(
    request: Request, *, stream: bool, include_usage: bool, max_tokens_field: str
) -> bytes:
    """The JSON body the SDK sends for ``chat_arguments(...)``: the arguments, with
    ``extra_body`` merged in at the top level (an extra wins over an argument)."""
    args = chat_arguments(
        request, stream=stream, include_usage=include_usage, max_tokens_field=max_tokens_field
    )
    extras = args.pop("extra_body", None)
    if extras:
        args.update(extras)
    return _ENCODE(args).encode()


def _vendor_usage(data: dict[str, Any], known: frozenset[str]) -> Any:
    """Usage a compatible server put in a vendor field, e.g. Groq's ``x_groq.usage``."""
    for key, value in data.items():
        if key not in known and value is not None:
            usage = value.get("usage") if type(value) is dict else getattr(value, "usage", None)
            if usage is not None:
                return usage
    return None


def completion_response(data: Any, *, provider: str) -> Response:
    """A ``Response`` from a parsed ``chat.completion`` body (``raw`` is the dict)."""
    choices = _f(data, "choices")
    if not choices:
        raise ValueError("the completion has no choices")
    choice = choices[0]
    message = _f(choice, "message")
    calls = []
    for index, call in enumerate(_f(message, "tool_calls") or ()):
        call_id = _f(call, "id") or f"call_{index}"
        name = _f(_f(call, "function"), "name")
        arguments = _f(_f(call, "function"), "arguments") or "{}"
        calls.append(ToolCall(id=call_id, name=name, arguments=arguments))
    usage = (
        usage_from(_f(data, "usage"))
        or usage_from(_vendor_usage(data, _COMPLETION_FIELDS))
        or EMPTY_USAGE
    )
    return Response(
        text=_text(_f(message, "content")),
        tool_calls=tuple(calls),
        finish_reason=finish_reason(_f(choice, "finish_reason")),
        usage=usage,
        model=_f(data, "model") or "",
        provider=provider,
        id=_f(data, "id"),
        refusal=_f(message, "refusal"),
        raw=data,
    )


def chunk_events(chunk: Any, state: ChatStreamState) -> list[StreamEvent]:
    """The events one parsed ``chat.completion.chunk`` carries.

    The common case (dicts all the way down) is read with ``dict.get``; anything else
    makes that raise, and the chunk is read again the exact way (``_f``), which gives
    what the SDK path gives: the same events, or the same error.
    """
    try:
        return _dict_chunk_events(chunk, state)
    except (AttributeError, TypeError):
        return _chunk_events(chunk, state)


def _dict_chunk_events(chunk: Any, state: ChatStreamState) -> list[StreamEvent]:
    events: list[StreamEvent] = []
    for choice in chunk.get("choices") or ():
        if choice.get("index") not in (0, None):
            continue
        delta = choice.get("delta")
        if delta is not None:
            content = delta.get("content")
            if content:
                text = content if type(content) is str else _text(content)
                if text:
                    events.append(TextDelta(text=text))
            refusal = delta.get("refusal")
            if refusal and type(refusal) is str:
                events.append(RefusalDelta(text=refusal))
            calls = delta.get("tool_calls")
            if calls:
                for call in calls:
                    function = call.get("function")
                    events.append(
                        ToolCallDelta(
                            index=call.get("index"),
                            id=call.get("id") or None,
                            name=(function.get("name") if function is not None else None) or None,
                            arguments=(function.get("arguments") if function is not None else None)
                            or "",
                        )
                    )
        reason = choice.get("finish_reason")
        if reason is not None:
            state.finished = True
            events.append(Finish(reason=finish_reason(reason)))
    return _usage_events(chunk, state, events)


def _chunk_events(chunk: Any, state: ChatStreamState) -> list[StreamEvent]:
    events: list[StreamEvent] = []
    for choice in _f(chunk, "choices") or ():
        if _f(choice, "index") not in (0, None):
            continue
        delta = _f(choice, "delta")
        if delta is not None:
            content = _f(delta, "content")
            if content:
                text = content if type(content) is str else _text(content)
                if text:
                    events.append(TextDelta(text=text))
            refusal = _f(delta, "refusal")
            if refusal and type(refusal) is str:
                events.append(RefusalDelta(text=refusal))
            calls = _f(delta, "tool_calls")
            if calls:
                for call in calls:
                    function = _f(call, "function")
                    events.append(
                        ToolCallDelta(
                            index=_f(call, "index"),
                            id=_f(call, "id") or None,
                            name=(_f(function, "name") if function is not None else None) or None,
                            arguments=(_f(function, "arguments") if function is not None else None)
                            or "",
                        )
                    )
        reason = _f(choice, "finish_reason")
        if reason is not None:
            state.finished = True
            events.append(Finish(reason=finish_reason(reason)))
    return _usage_events(chunk, state, events)


def _usage_events(
    chunk: dict[str, Any], state: ChatStreamState, events: list[StreamEvent]
) -> list[StreamEvent]:
    usage = chunk.get("usage")
    if usage is None and not chunk.keys() <= _CHUNK_FIELDS:
        usage = _vendor_usage(chunk, _CHUNK_FIELDS)
    if usage is not None:
        state.saw_usage = True
        parsed = usage_from(usage)
        if parsed is not None:
            events.append(UsageUpdate(usage=parsed))
    return events

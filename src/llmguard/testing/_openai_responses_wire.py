"""The Responses API on the wire: the ``response`` object and its SSE event sequence.

Shapes copied from ``shared/fixtures/openai/responses_*.json``: ``response.created``,
``response.in_progress``, then per output item ``response.output_item.added``, its
content (``response.content_part.added``, ``response.output_text.delta``...,
``response.output_text.done``, ``response.content_part.done``, or
``response.function_call_arguments.delta``... and ``.done``),
``response.output_item.done``, and finally ``response.completed`` with the usage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._types import Usage
from ._openai_wire import CREATED, Answer, SSEBody, pieces, sse_event

__all__ = ["responses_json", "responses_stream", "responses_usage"]


def responses_usage(usage: Usage) -> dict[str, Any]:
    """``Usage`` as a Responses API ``usage`` object."""
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def _status(answer: Answer) -> tuple[str, dict[str, Any] | None]:
    if answer.finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if answer.finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def _message_item(answer: Answer, *, done: bool) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if done:
        content = [_part(answer, full=True)]
    return {
        "id": f"msg_fake{answer.number}",
        "type": "message",
        "status": "completed" if done else "in_progress",
        "content": content,
        "role": "assistant",
    }


def _part(answer: Answer, *, full: bool) -> dict[str, Any]:
    if answer.refusal is not None:
        return {"type": "refusal", "refusal": answer.refusal if full else ""}
    text = answer.text if full else ""
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _call_item(answer: Answer, index: int, *, done: bool) -> dict[str, Any]:
    call = answer.tool_calls[index]
    return {
        "id": f"fc_fake{answer.number}_{index}",
        "type": "function_call",
        "status": "completed" if done else "in_progress",
        "arguments": call.arguments if done else "",
        "call_id": call.id,
        "name": call.name,
    }


def _output(answer: Answer) -> list[dict[str, Any]]:
    items = []
    if answer.text or answer.refusal is not None or not answer.tool_calls:
        items.append(_message_item(answer, done=True))
    items.extend(_call_item(answer, i, done=True) for i in range(len(answer.tool_calls)))
    return items


def responses_json(
    answer: Answer, body: Mapping[str, Any], *, final: bool = True
) -> dict[str, Any]:
    """A ``response`` object; ``final=False`` gives the in-progress one a stream opens with."""
    status, incomplete = _status(answer) if final else ("in_progress", None)
    return {
        "id": f"resp_fake{answer.number}",
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "background": False,
        "completed_at": CREATED + 1 if final else None,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": answer.model,
        "output": _output(answer) if final else [],
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": list(body.get("tools") or []),
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": responses_usage(answer.usage) if final else None,
        "user": None,
        "metadata": {},
    }


class _Events:
    """Numbers the events as they are added (``sequence_number``)."""

    def __init__(self) -> None:
        self.blocks: list[str] = []

    def add(self, kind: str, **fields: Any) -> None:
        self.blocks.append(
            sse_event(kind, {"type": kind, **fields, "sequence_number": len(self.blocks)})
        )


def _message_events(events: _Events, answer: Answer, size: int) -> None:
    item_id = f"msg_fake{answer.number}"
    where = {"item_id": item_id, "output_index": 0}
    events.add("response.output_item.added", item=_message_item(answer, done=False), output_index=0)
    events.add(
        "response.content_part.added", content_index=0, **where, part=_part(answer, full=False)
    )
    if answer.refusal is not None:
        for piece in pieces(answer.refusal, size):
            events.add("response.refusal.delta", content_index=0, delta=piece, **where)
        events.add("response.refusal.done", content_index=0, **where, refusal=answer.refusal)
    else:
        for piece in pieces(answer.text, size):
            events.add(
                "response.output_text.delta", content_index=0, delta=piece, **where, logprobs=[]
            )
        events.add(
            "response.output_text.done", content_index=0, **where, logprobs=[], text=answer.text
        )
    events.add(
        "response.content_part.done", content_index=0, **where, part=_part(answer, full=True)
    )
    events.add("response.output_item.done", item=_message_item(answer, done=True), output_index=0)


def _call_events(events: _Events, answer: Answer, index: int, output_index: int, size: int) -> None:
    item_id = f"fc_fake{answer.number}_{index}"
    where = {"item_id": item_id, "output_index": output_index}
    opening = _call_item(answer, index, done=False)
    events.add("response.output_item.added", item=opening, output_index=output_index)
    arguments = answer.tool_calls[index].arguments
    for piece in pieces(arguments, size):
        events.add("response.function_call_arguments.delta", delta=piece, **where)
    events.add("response.function_call_arguments.done", arguments=arguments, **where)
    done = _call_item(answer, index, done=True)
    events.add("response.output_item.done", item=done, output_index=output_index)


def responses_stream(answer: Answer, body: Mapping[str, Any], *, chunk_size: int) -> SSEBody:
    """The SSE event sequence of a streamed Responses API answer."""
    events = _Events()
    opening = responses_json(answer, body, final=False)
    events.add("response.created", response=opening)
    events.add("response.in_progress", response=opening)
    with_message = bool(answer.text or answer.refusal is not None or not answer.tool_calls)
    first_content = 4 if with_message else 3  # the first delta, after its item opens
    if with_message:
        _message_events(events, answer, chunk_size)
    for index in range(len(answer.tool_calls)):
        _call_events(events, answer, index, index + int(with_message), chunk_size)
    final = responses_json(answer, body)
    kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
    events.add(kind, response=final)
    return SSEBody(events.blocks, first_content)

"""The OpenAI wire formats that ``FakeOpenAIEndpoint`` speaks.

Pure functions from an ``Answer`` (what the fake model says) to the JSON body and SSE
stream of chat completions, with the stream quirks of OpenAI-compatible servers
(``Quirk``); the shared SSE helpers. The Responses API is in ``_openai_responses_wire``,
embeddings in ``_openai_embeddings_wire``, OpenAI's error bodies in
``_openai_errors_wire`` (re-exported here). No I/O and no HTTP library here. The shapes
are copied from the recorded traffic in ``shared/fixtures/openai`` (the tests compare
them).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._types import EMPTY_USAGE, ToolCall, Usage
from ._openai_errors_wire import (  # their old home: still importable from here
    HTML_ERROR_PAGE,
    error_json,
    rate_limit_json,
    status_error_json,
)

__all__ = [
    "AZURE_FILTER_CHUNK",
    "CREATED",
    "DONE",
    "HTML_ERROR_PAGE",
    "STREAM_ERROR",
    "Answer",
    "Quirk",
    "SSEBody",
    "chat_json",
    "chat_stream",
    "chat_usage",
    "compact",
    "error_json",
    "pieces",
    "rate_limit_json",
    "sse_data",
    "sse_event",
    "status_error_json",
]

CREATED = 1_700_000_000
"""The ``created`` timestamp of every fake answer: fixed, so bodies are reproducible."""

DONE = "data: [DONE]\n\n"


class Quirk(enum.Flag):
    """Stream quirks of OpenAI-compatible servers, for ``FakeOpenAIEndpoint(compat=...)``.

    Each is measured on a real server and independently selectable; combine them with
    ``|``. They change chat-completions streams only (``"stream": true``).

    - ``USAGE_IN_VENDOR_FIELD``: no ``usage`` anywhere; the final chunk carries it as
      ``x_groq.usage`` (Groq), even when ``include_usage`` was asked for.
    - ``RUNNING_USAGE``: every chunk carries ``usage`` as a running total (vLLM's
      continuous usage stats): summing them overcounts; the last one is right.
    - ``FILTER_RESULTS_FIRST``: a first chunk with ``choices: []``, empty ``id`` and
      ``model`` and Azure's ``prompt_filter_results``.
    - ``CONTENT_PARTS``: ``delta.content`` is a list of parts; the first is a
      ``thinking`` part holding reasoning (Mistral's shape), then ``text`` parts.
    - ``REASONING_CONTENT``: reasoning streamed in ``delta.reasoning_content`` before
      the answer (DeepSeek, vLLM); ``REASONING_FIELD``: in ``delta.reasoning``
      (OpenRouter, Ollama).
    - ``EMPTY_TOOL_CALL_ID``: tool calls start with ``"id": ""``.
    - ``FINISH_REASON_EOS``: ``"eos"`` where OpenAI says ``"stop"``.
    - ``FINISH_IN_LAST_CHUNK``: no separate finish chunk and no ``choices: []`` usage
      chunk: the last content chunk carries the finish reason (and the usage, if asked).
    - ``COMMENTS``: an SSE comment line (``: keep-alive``) before every event.
    - ``NO_DONE``: the stream ends without ``data: [DONE]``.
    - ``ERROR_EVENT``: after about half the answer, ``event: error`` with an OpenAI
      error body, and the stream ends there.
    - ``ERROR_CHUNK``: after about half the answer, a chunk carrying a top-level
      ``error`` and ``finish_reason: "error"`` (OpenRouter), and the stream ends there.
    """

    NONE = 0
    USAGE_IN_VENDOR_FIELD = enum.auto()
    RUNNING_USAGE = enum.auto()
    FILTER_RESULTS_FIRST = enum.auto()
    CONTENT_PARTS = enum.auto()
    REASONING_CONTENT = enum.auto()
    REASONING_FIELD = enum.auto()
    EMPTY_TOOL_CALL_ID = enum.auto()
    FINISH_REASON_EOS = enum.auto()
    FINISH_IN_LAST_CHUNK = enum.auto()
    COMMENTS = enum.auto()
    NO_DONE = enum.auto()
    ERROR_EVENT = enum.auto()
    ERROR_CHUNK = enum.auto()


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """What the fake model answers, before it is put on the wire."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    refusal: str | None = None
    finish_reason: str = "stop"
    usage: Usage = EMPTY_USAGE
    model: str = "gpt-4o-mini"
    number: int = 1  # ids are derived from it: chatcmpl-fake1, resp_fake1, ...
    reasoning: str = ""


@dataclass(frozen=True, slots=True)
class SSEBody:
    """An SSE body as its event blocks (each ends in a blank line).

    ``first_content`` is the index of the first block that carries a piece of the
    answer (blocks before it are the preamble), so a cut "after n pieces" is exact.
    """

    blocks: list[str]
    first_content: int


def compact(value: Any) -> str:
    """JSON as the SSE lines carry it: no spaces, UTF-8 text kept as is."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def sse_data(value: Any) -> str:
    """One ``data:`` event block."""
    return f"data: {compact(value)}\n\n"


def sse_event(name: str, value: Any) -> str:
    """One named event block (``event:`` then ``data:``), as the Responses API sends."""
    return f"event: {name}\ndata: {compact(value)}\n\n"


def pieces(text: str, size: int) -> list[str]:
    """``text`` in pieces of ``size`` characters."""
    return [text[i : i + size] for i in range(0, len(text), size)]


# Chat completions ---------------------------------------------------------------


def chat_usage(usage: Usage) -> dict[str, Any]:
    """``Usage`` as a chat-completions ``usage`` object."""
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _wire_tool_call(call: ToolCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def chat_json(answer: Answer) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": answer.text
        if answer.text or not (answer.tool_calls or answer.refusal)
        else None,
    }
    if answer.tool_calls:
        message["tool_calls"] = [_wire_tool_call(c) for c in answer.tool_calls]
    message["refusal"] = answer.refusal
    message["annotations"] = []
    return {
        "id": f"chatcmpl-fake{answer.number}",
        "object": "chat.completion",
        "created": CREATED,
        "model": answer.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": answer.finish_reason,
            }
        ],
        "usage": chat_usage(answer.usage),
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }


def _reasoning_deltas(answer: Answer, quirks: Quirk, size: int) -> list[dict[str, Any]]:
    if not answer.reasoning:
        return []
    if Quirk.CONTENT_PARTS in quirks:
        thinking = [{"type": "text", "text": answer.reasoning}]
        return [{"content": [{"type": "thinking", "thinking": thinking}]}]
    for quirk, key in (
        (Quirk.REASONING_CONTENT, "reasoning_content"),
        (Quirk.REASONING_FIELD, "reasoning"),
    ):
        if quirk in quirks:
            return [{key: piece} for piece in pieces(answer.reasoning, size)]
    return []


def _chat_deltas(answer: Answer, quirks: Quirk, size: int) -> list[dict[str, Any]]:
    """The deltas of a chat stream, the role delta first."""
    first: dict[str, Any] = {"role": "assistant", "content": "" if answer.text else None}
    if not answer.tool_calls:
        first["refusal"] = None
    deltas = [first, *_reasoning_deltas(answer, quirks, size)]
    for piece in pieces(answer.text, size):
        content: Any = [{"type": "text", "text": piece}] if Quirk.CONTENT_PARTS in quirks else piece
        deltas.append({"content": content})
    deltas.extend({"refusal": piece} for piece in pieces(answer.refusal or "", size))
    for index, call in enumerate(answer.tool_calls):
        opening = {
            "index": index,
            "id": "" if Quirk.EMPTY_TOOL_CALL_ID in quirks else call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        deltas.append({"tool_calls": [opening]})
        deltas.extend(
            {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
            for piece in pieces(call.arguments, size)
        )
    return deltas


def _running_usage(usage: Usage, done: int, total: int) -> dict[str, Any]:
    produced = usage.output_tokens * done // total if total else 0
    return chat_usage(
        Usage(
            input_tokens=usage.input_tokens,
            output_tokens=produced,
            cached_input_tokens=usage.cached_input_tokens,
        )
    )


def _groq_usage(usage: Usage) -> dict[str, Any]:
    return {
        "queue_time": 0.01,
        "prompt_tokens": usage.input_tokens,
        "prompt_time": 0.002,
        "completion_tokens": usage.output_tokens,
        "completion_time": 0.05,
        "total_tokens": usage.total_tokens,
        "total_time": 0.052,
    }


AZURE_FILTER_CHUNK: dict[str, Any] = {
    "choices": [],
    "created": 0,
    "id": "",
    "model": "",
    "object": "",
    "prompt_filter_results": [
        {
            "prompt_index": 0,
            "content_filter_results": {
                name: {"filtered": False, "severity": "safe"}
                for name in ("hate", "self_harm", "sexual", "violence")
            },
        }
    ],
}

STREAM_ERROR = {
    "message": "The server had an error while generating the answer.",
    "type": "server_error",
    "param": None,
    "code": "internal_error",
}


def _chunk(base: Mapping[str, Any], delta: Mapping[str, Any], finish: str | None) -> dict[str, Any]:
    choice = {"index": 0, "delta": dict(delta), "logprobs": None, "finish_reason": finish}
    return {**base, "choices": [choice]}


def _finished_chunks(
    base: Mapping[str, Any],
    deltas: list[dict[str, Any]],
    answer: Answer,
    *,
    include_usage: bool,
    quirks: Quirk,
) -> list[dict[str, Any]]:
    """The chunks of the deltas plus the finish and the usage, as the quirks place them."""
    finish = answer.finish_reason
    if Quirk.FINISH_REASON_EOS in quirks and finish == "stop":
        finish = "eos"
    vendor = Quirk.USAGE_IN_VENDOR_FIELD in quirks
    usage_key = include_usage and not vendor
    chunks = [_chunk(base, delta, None) for delta in deltas]
    if Quirk.FINISH_IN_LAST_CHUNK in quirks:
        chunks[-1]["choices"][0]["finish_reason"] = finish
    else:
        chunks.append(_chunk(base, {}, finish))
    finish_chunk = chunks[-1]
    for done, chunk in enumerate(chunks):
        if Quirk.RUNNING_USAGE in quirks:
            chunk["usage"] = _running_usage(answer.usage, done, len(chunks) - 1)
        elif usage_key:
            chunk["usage"] = None
    if usage_key and Quirk.FINISH_IN_LAST_CHUNK in quirks:
        finish_chunk["usage"] = chat_usage(answer.usage)
    elif usage_key:
        chunks.append({**base, "choices": [], "usage": chat_usage(answer.usage)})
    if vendor:
        vendor_id = f"req_fake{answer.number}"
        chunks[0]["x_groq"] = {"id": vendor_id}
        finish_chunk["x_groq"] = {"id": vendor_id, "usage": _groq_usage(answer.usage)}
    return chunks


def _stream_error(base: Mapping[str, Any], quirks: Quirk) -> str:
    if Quirk.ERROR_EVENT in quirks:
        return sse_event("error", {"error": STREAM_ERROR})
    error = {"code": 502, "message": "Upstream provider error: the stream was interrupted."}
    choice = {"index": 0, "delta": {"content": ""}, "finish_reason": "error"}
    return sse_data({**base, "error": error, "choices": [choice]})


def chat_stream(answer: Answer, *, include_usage: bool, quirks: Quirk, chunk_size: int) -> SSEBody:
    """A chat-completions SSE stream of ``answer``, with the ``quirks`` asked for."""
    base: dict[str, Any] = {
        "id": f"chatcmpl-fake{answer.number}",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": answer.model,
        "system_fingerprint": "fp_fake",
    }
    deltas = _chat_deltas(answer, quirks, chunk_size)
    if quirks & (Quirk.ERROR_EVENT | Quirk.ERROR_CHUNK):
        deltas = deltas[: 1 + max(1, (len(deltas) - 1) // 2)]  # about half the answer
        plain = quirks & ~Quirk.FINISH_IN_LAST_CHUNK
        chunks = _finished_chunks(base, deltas, answer, include_usage=include_usage, quirks=plain)
        blocks = [sse_data(chunk) for chunk in chunks[: len(deltas)]]
        blocks.append(_stream_error(base, quirks))
    else:
        chunks = _finished_chunks(base, deltas, answer, include_usage=include_usage, quirks=quirks)
        blocks = [sse_data(chunk) for chunk in chunks]
        if Quirk.NO_DONE not in quirks:
            blocks.append(DONE)
    first_content = 1
    if Quirk.FILTER_RESULTS_FIRST in quirks:
        blocks.insert(0, sse_data(AZURE_FILTER_CHUNK))
        first_content += 1
    if Quirk.COMMENTS in quirks:
        blocks = [f": keep-alive\n\n{block}" for block in blocks]
    return SSEBody(blocks, first_content)

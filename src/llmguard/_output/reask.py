"""The requests of a structured call: the first one (per mode) and each re-ask.

A re-ask is the conversation so far plus the rejected answer (as the assistant's
message) and a user message with what was wrong with it, so the model can correct
itself. Validation errors are described in plain lines, at most ``MAX_ERRORS``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from .._errors import ConfigurationError
from .._types import Message, Request
from .types import OutputMode, OutputSchema

__all__ = ["InvalidOutput", "describe_errors", "prepare", "reask"]

MAX_ERRORS = 10
_MAX_INPUT = 80
JSON_MODE: Mapping[str, Any] = {"type": "json_object"}


class InvalidOutput(Exception):
    """An answer that could not be used; ``message`` is what the re-ask tells the model.
    Internal: the structured call turns the last one into ``OutputValidationError``."""

    def __init__(self, message: str, *, syntax: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.syntax = syntax  # not JSON at all (so the JSON may be somewhere inside it)


def prepare(request: Request, schema: OutputSchema, mode: OutputMode) -> Request:
    """The request of the first attempt: the schema as ``response_format`` (strict) or
    as instructions (``json``: with JSON mode; ``prompt``: alone)."""
    if request.response_format is not None:
        raise ConfigurationError(
            "structured output sets response_format from the output type; leave it unset"
        )
    if mode == "strict":
        return replace(request, response_format=schema.response_format)
    messages = _with_instructions(request.messages, schema.instructions)
    if mode == "json":
        return replace(request, messages=messages, response_format=JSON_MODE)
    return replace(request, messages=messages)


def _with_instructions(messages: Sequence[Message], instructions: str) -> tuple[Message, ...]:
    """The instructions as a system message after the leading system messages."""
    head = 0
    while head < len(messages) and messages[head].role in ("system", "developer"):
        head += 1
    added = Message(role="system", content=instructions)
    return (*messages[:head], added, *messages[head:])


def reask(request: Request, answer: str, error: str) -> Request:
    """The next attempt: ``request`` plus the rejected ``answer`` and what was wrong."""
    feedback = (
        f"Your previous answer could not be used: {error}\n"
        "Reply again with only the corrected JSON."
    )
    messages = (*request.messages, Message.assistant(answer), Message.user(feedback))
    return replace(request, messages=messages)


def _location(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "the answer"


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):  # pragma: no cover - default=str handles the rest
        text = repr(value)
    return text if len(text) <= _MAX_INPUT else text[: _MAX_INPUT - 1] + "…"


def describe_errors(errors: Sequence[Mapping[str, Any]], prefix: tuple[Any, ...] = ()) -> str:
    """Pydantic's errors as plain lines: where, what, and what was given."""
    if len(errors) == 1 and errors[0].get("type") in ("json_invalid", "string_unicode"):
        message = str(errors[0].get("msg", "")).removeprefix("Invalid JSON: ")
        return f"the answer is not valid JSON ({message})"
    count = len(errors)
    lines = [f"{count} validation error{'s' if count != 1 else ''}:"]
    for error in errors[:MAX_ERRORS]:
        where = _location((*prefix, *error.get("loc", ())))
        if error.get("type") == "missing":
            lines.append(f"- {where}: field required")
        else:
            given = _shown(error.get("input"))
            lines.append(f"- {where}: {error.get('msg', 'invalid')} (got {given})")
    if count > MAX_ERRORS:
        lines.append(f"- and {count - MAX_ERRORS} more")
    return "\n".join(lines)

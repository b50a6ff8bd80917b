"""``FakeReply``: one scripted answer of a fake provider, and the error a used-up
script raises."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._errors import (
    LLMGuardError,
    MalformedResponse,
    ProviderError,
    ProviderTimeout,
    RateLimited,
)
from .._types import ToolCall, Usage

__all__ = ["FakeReply", "FakeScriptExhausted", "as_reply"]


class FakeScriptExhausted(LLMGuardError, AssertionError):
    """The fake provider was called more often than its script has replies for."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FakeReply:
    """One scripted answer. Build it with the class methods; a plain ``str`` is text.

    ``error`` is raised instead of answering (for a stream: before the first event,
    or after ``error_after`` events, which makes a cut stream). ``hang`` never
    answers. Delays, when set, override the provider's defaults.
    """

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None
    refusal: str | None = None
    model: str | None = None
    error: BaseException | None = None
    error_after: int | None = None
    hang: bool = False
    first_token_delay: float | None = None
    chunk_delay: float | None = None

    @classmethod
    def of_text(
        cls, text: str, *, usage: Usage | None = None, finish_reason: str = "stop"
    ) -> FakeReply:
        """A plain text answer."""
        return cls(text=text, usage=usage, finish_reason=finish_reason)

    @classmethod
    def tool_call(
        cls, name: str, arguments: Mapping[str, Any] | str = "{}", *, id: str | None = None
    ) -> FakeReply:
        """One tool call; ``arguments`` as a mapping (sent as JSON) or raw text."""
        raw = arguments if isinstance(arguments, str) else json.dumps(dict(arguments))
        return cls(tool_calls=(ToolCall(id=id or f"call_{name}", name=name, arguments=raw),))

    @classmethod
    def tool_calls_of(cls, *calls: ToolCall) -> FakeReply:
        """Several (parallel) tool calls in one answer."""
        return cls(tool_calls=calls)

    @classmethod
    def json(cls, value: Any) -> FakeReply:
        """A structured answer: ``value`` serialised as JSON text."""
        return cls(text=json.dumps(value))

    @classmethod
    def rate_limited(cls, *, retry_after: float | None = None) -> FakeReply:
        """A 429 with an optional ``retry_after`` in seconds."""
        return cls(error=RateLimited(retry_after=retry_after, provider="fake"))

    @classmethod
    def server_error(cls, status_code: int = 500) -> FakeReply:
        """A 5xx (retryable) or any other status."""
        return cls(
            error=ProviderError(f"fake provider error {status_code}", status_code=status_code)
        )

    @classmethod
    def timeout(cls) -> FakeReply:
        """The provider's own request timing out (``ProviderTimeout``)."""
        return cls(error=ProviderTimeout(provider="fake"))

    @classmethod
    def malformed(cls) -> FakeReply:
        """An answer that cannot be read (``MalformedResponse``)."""
        return cls(error=MalformedResponse("fake provider sent malformed output", provider="fake"))

    @classmethod
    def refused(cls, refusal: str) -> FakeReply:
        """The model refuses; ``Response.refusal`` carries the text."""
        return cls(refusal=refusal, finish_reason="stop")

    @classmethod
    def cut(cls, text: str, *, after: int, error: BaseException | None = None) -> FakeReply:
        """A stream that sends ``after`` events of ``text`` and then breaks."""
        return cls(
            text=text,
            error=error or ProviderError("fake stream cut", retryable=True),
            error_after=after,
        )

    @classmethod
    def hanging(cls) -> FakeReply:
        """Never answers (to test deadlines)."""
        return cls(hang=True)


def as_reply(reply: FakeReply | str) -> FakeReply:
    """A reply as given, a ``str`` as a text reply."""
    return FakeReply(text=reply) if isinstance(reply, str) else reply

"""Provider-neutral data: messages, requests, responses, usage and stream events.

All of these are frozen, slotted, keyword-only dataclasses: cheap to build on the
hot path (no validation beyond what the type checker does) and safe to share
between concurrent calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, LiteralString

from ._fast_init import fast_init

__all__ = [
    "EMPTY_USAGE",
    "Finish",
    "Message",
    "RefusalDelta",
    "Request",
    "Response",
    "Role",
    "StreamEvent",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolSpec",
    "Usage",
    "UsageUpdate",
]

Role = Literal["system", "developer", "user", "assistant", "tool"]
"""Who wrote a ``Message``."""

_NO_EXTRAS: Mapping[str, Any] = MappingProxyType({})


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCall:
    """A tool call the model asked for. ``arguments`` is the raw JSON text: untrusted."""

    id: str
    name: str
    arguments: str = "{}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolSpec:
    """A tool offered to the model: a name, a description and a JSON schema."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    strict: bool = False


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One chat message. ``tool_calls`` on assistant messages, ``tool_call_id`` on tool ones."""

    role: Role
    content: str | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()

    @classmethod
    def system(cls, content: LiteralString) -> Message:
        """A system message; its text must be a literal (see ``Request.create``)."""
        return cls(role="system", content=content)

    @classmethod
    def user(cls, content: str) -> Message:
        """A user message: the place for text that came from a user."""
        return cls(role="user", content=content)

    @classmethod
    def assistant(
        cls, content: str | None = None, *, tool_calls: Sequence[ToolCall] = ()
    ) -> Message:
        """An assistant message, e.g. a previous answer or the tool calls it made."""
        return cls(role="assistant", content=content, tool_calls=tuple(tool_calls))

    @classmethod
    def tool(cls, content: str, *, tool_call_id: str) -> Message:
        """A tool result answering the tool call ``tool_call_id``."""
        return cls(role="tool", content=content, tool_call_id=tool_call_id)


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """Token usage of one call.

    ``input_tokens`` includes ``cached_input_tokens`` and ``output_tokens`` includes
    ``reasoning_tokens`` (as OpenAI reports them): the parts are reported, never added
    on top. ``estimated`` is true when the provider gave no figures and llmguard
    estimated them (see docs/concepts.md).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens (parts are already inside these two)."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_input_tokens=self.cached_input_tokens + other.cached_input_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            estimated=self.estimated or other.estimated,
        )


EMPTY_USAGE = Usage()


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """A provider-neutral request.

    Build it directly, or with ``Request.create`` which keeps instructions and user
    text apart by construction. Provider-specific parameters go in ``extras``, an
    explicit mapping that is passed through as is.
    """

    model: str
    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str | Mapping[str, Any] | None = None
    response_format: Mapping[str, Any] | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    extras: Mapping[str, Any] = field(default_factory=lambda: _NO_EXTRAS)

    @classmethod
    def create(
        cls,
        *,
        model: str,
        system: LiteralString | None = None,
        user: str | None = None,
        messages: Sequence[Message] = (),
        tools: Sequence[ToolSpec] = (),
        tool_choice: str | Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        max_output_tokens: int | None = None,
        stop: Sequence[str] = (),
        seed: int | None = None,
        extras: Mapping[str, Any] | None = None,
    ) -> Request:
        """Build a request: ``system`` first, then ``messages``, then ``user``.

        ``system`` is typed ``LiteralString``: a type checker that enforces PEP 675
        (pyright, pyre) flags a system prompt built from a variable, such as text a
        user typed. User text belongs in ``user=`` (or a user ``Message``), where the
        model treats it as a request rather than as instructions.
        """
        built: list[Message] = []
        if system is not None:
            built.append(Message(role="system", content=system))
        built.extend(messages)
        if user is not None:
            built.append(Message(role="user", content=user))
        return cls(
            model=model,
            messages=tuple(built),
            tools=tuple(tools),
            tool_choice=tool_choice,
            response_format=response_format,
            temperature=temperature,
            top_p=top_p,
            max_output_tokens=max_output_tokens,
            stop=tuple(stop),
            seed=seed,
            extras=_NO_EXTRAS if not extras else MappingProxyType(dict(extras)),
        )

    @property
    def last_user_text(self) -> str:
        """The text of the last user message, or ``""`` (handy in fake-provider rules)."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content or ""
        return ""


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    """A provider-neutral response.

    ``cost_micros`` is the price in integer micro-dollars, ``None`` when unknown
    (never 0 for unknown). ``cached`` is true when a cache answered. ``raw`` holds the
    provider's own object, for what llmguard does not map.
    """

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    usage: Usage = EMPTY_USAGE
    model: str = ""
    provider: str = ""
    id: str | None = None
    refusal: str | None = None
    cost_micros: int | None = None
    cached: bool = False
    raw: Any = field(default=None, repr=False, compare=False)


# Stream events ---------------------------------------------------------------


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class TextDelta:
    """A piece of the answer's text."""

    text: str


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class RefusalDelta:
    """A piece of the model's refusal (OpenAI's ``delta.refusal``): the model declined to
    answer; the stream's ``Response.refusal`` carries the whole text."""

    text: str


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallDelta:
    """A piece of a tool call: deltas with the same ``index`` belong to one call."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class UsageUpdate:
    """Usage so far. A later update replaces an earlier one; updates are never summed."""

    usage: Usage


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Finish:
    """The model finished; ``reason`` is e.g. ``"stop"``, ``"length"``, ``"tool_calls"``."""

    reason: str | None


StreamEvent = TextDelta | ToolCallDelta | UsageUpdate | Finish | RefusalDelta
"""What a stream yields: text, tool-call pieces, usage, and the ``Finish`` at the end (a
refusal's pieces instead of text when the model refuses)."""

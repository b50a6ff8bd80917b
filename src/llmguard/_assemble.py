"""Assemble stream events into a ``Response``, and estimate usage a stream never sent."""

from __future__ import annotations

from ._types import (
    EMPTY_USAGE,
    Finish,
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

__all__ = ["StreamAssembler", "estimate_tokens", "estimate_usage", "events_from_response"]


def estimate_tokens(text: str) -> int:
    """The documented estimate: one token per 4 characters, rounded up."""
    return (len(text) + 3) // 4


def estimate_usage(request: Request | None, output: str | int) -> Usage:
    """Usage for a call whose provider reported none (a cut stream, say).

    Input: 4 characters a token over every message's text and tool-call arguments,
    plus 3 tokens of framing per message. Output: 4 characters a token over the text
    and tool-call arguments received (``output`` is that text, or its length).
    Flagged ``estimated=True``.
    """
    input_tokens = 0
    if request is not None:
        for message in request.messages:
            input_tokens += 3 + estimate_tokens(message.content or "")
            for call in message.tool_calls:
                input_tokens += estimate_tokens(call.name) + estimate_tokens(call.arguments)
    return Usage(
        input_tokens=input_tokens,
        output_tokens=(output + 3) // 4 if isinstance(output, int) else estimate_tokens(output),
        estimated=True,
    )


class StreamAssembler:
    """Feeds on stream events and builds the ``Response`` they add up to."""

    __slots__ = ("_calls", "_refusal", "_text", "finish_reason", "model", "provider", "usage")

    def __init__(self, *, model: str = "", provider: str = "") -> None:
        self._text: list[str] = []
        self._refusal: list[str] | None = None
        self._calls: dict[int, list[str]] = {}
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model = model
        self.provider = provider

    def feed(self, event: StreamEvent) -> None:
        """Take one event into account."""
        if type(event) is TextDelta:
            self._text.append(event.text)
        elif type(event) is ToolCallDelta:
            parts = self._calls.get(event.index)
            if parts is None:
                parts = self._calls[event.index] = ["", "", ""]
            if event.id:
                parts[0] = event.id
            if event.name:
                parts[1] += event.name
            parts[2] += event.arguments
        elif type(event) is UsageUpdate:
            self.usage = event.usage
        elif type(event) is Finish:
            self.finish_reason = event.reason
        elif type(event) is RefusalDelta:
            if self._refusal is None:
                self._refusal = []
            self._refusal.append(event.text)

    @property
    def text(self) -> str:
        """The text received so far."""
        return "".join(self._text)

    @property
    def refusal(self) -> str | None:
        """The refusal received so far (``None``: the model did not refuse)."""
        return None if self._refusal is None else "".join(self._refusal)

    def output_chars(self) -> str:
        """Everything the model produced so far, for estimating output tokens."""
        calls = "".join(p[1] + p[2] for p in self._calls.values())
        return self.text + (self.refusal or "") + calls

    def response(self) -> Response:
        """The response the events so far add up to."""
        calls = tuple(
            ToolCall(id=parts[0], name=parts[1], arguments=parts[2] or "{}")
            for _, parts in sorted(self._calls.items())
        )
        return Response(
            text=self.text,
            tool_calls=calls,
            finish_reason=self.finish_reason,
            usage=self.usage or EMPTY_USAGE,
            model=self.model,
            provider=self.provider,
            refusal=self.refusal,
        )


def events_from_response(response: Response) -> list[StreamEvent]:
    """The events a one-piece response would have streamed as (text, refusal, tools,
    usage, finish)."""
    events: list[StreamEvent] = []
    if response.text:
        events.append(TextDelta(text=response.text))
    if response.refusal is not None:
        events.append(RefusalDelta(text=response.refusal))
    for index, call in enumerate(response.tool_calls):
        events.append(
            ToolCallDelta(index=index, id=call.id, name=call.name, arguments=call.arguments)
        )
    events.append(UsageUpdate(usage=response.usage))
    events.append(Finish(reason=response.finish_reason))
    return events

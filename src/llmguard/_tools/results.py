"""What running tools produces: one ``ToolResult`` per call, loop events, the loop's result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .._types import Message, Response, StreamEvent, ToolCall, Usage

if TYPE_CHECKING:
    from .decorator import Tool

__all__ = ["ToolFinished", "ToolLoopEvent", "ToolResult", "ToolRunResult", "ToolStarted"]

ToolStatus = Literal["ok", "unknown_tool", "invalid_arguments", "not_approved", "timeout", "error"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResult:
    """The outcome of one tool call, and the text the model is sent about it.

    Attributes:
        call: the tool call the model made (its ``arguments`` are the raw, untrusted text).
        status: ``"ok"``, or why it did not run or did not succeed: ``"unknown_tool"``,
            ``"invalid_arguments"``, ``"not_approved"``, ``"timeout"``, ``"error"``.
        content: what the model is sent (serialised and size-capped result, or the error).
        value: what the function returned (``"ok"`` only).
        exception: the original exception, for your hooks and logs: what the tool
            raised, the ``pydantic.ValidationError`` of invalid arguments, the
            approval callback's own exception, or ``DeadlineExceeded`` for a timeout.
            It is never sent to the model unless the tool listed its type in
            ``safe_errors``.
        tool: the tool that was asked for, ``None`` for an unknown name.
        truncated: the content was cut to the toolbox's ``max_result_chars``.
    """

    call: ToolCall
    status: ToolStatus
    content: str
    value: Any = None
    exception: BaseException | None = None
    tool: Tool[..., Any] | None = field(default=None, repr=False)
    truncated: bool = False

    @property
    def ok(self) -> bool:
        """The function ran and returned."""
        return self.status == "ok"

    @property
    def message(self) -> Message:
        """The tool message answering the call (same ``tool_call_id``)."""
        return Message.tool(self.content, tool_call_id=self.call.id)


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolStarted:
    """A tool call is being handled (its arguments not yet checked)."""

    call: ToolCall


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolFinished:
    """A tool call was handled; ``result`` says how."""

    result: ToolResult


ToolLoopEvent = StreamEvent | ToolStarted | ToolFinished
"""What ``guard.run_tools_stream`` yields: the model's events and the tool events."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolRunResult:
    """What ``guard.run_tools`` returns.

    Attributes:
        response: the final response (the model's answer without tool calls).
        messages: the whole transcript: the request's messages, then each assistant
            message and its tool results, ending with the final answer.
        usage: the usage of every model call in the loop, summed.
        steps: how many model calls were made.
        tool_results: every tool call's result, in the order they were made.
    """

    response: Response
    messages: tuple[Message, ...]
    usage: Usage
    steps: int
    tool_results: tuple[ToolResult, ...] = ()

    @property
    def text(self) -> str:
        """The final answer's text."""
        return self.response.text

"""The tool loop: call the model with the tools, run what it asks for, feed the results
back, until it answers without tool calls or ``max_steps`` model calls were made.

The whole loop is ONE call: one ``CallState`` (so one record), whose attempts are the
model calls; each model call goes through every layer of the Guard, and the Guard's
``timeout`` applies to each model call on its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, LiteralString, TypedDict

import anyio

from .._errors import ConfigurationError, DeadlineExceeded, ToolLoopLimit
from .._pipeline import _new_state
from .._state import _CURRENT_CALL
from .._types import EMPTY_USAGE, Message, Request, Response, ToolCall, Usage
from .decorator import Tool
from .results import ToolResult, ToolRunResult
from .toolbox import Toolbox

if TYPE_CHECKING:
    from .._clock import Clock
    from .._layer import Handler

__all__ = ["DEFAULT_MAX_STEPS", "LoopTranscript", "ToolRunOptions", "as_toolbox", "run_tool_loop"]

from ._limits import DEFAULT_MAX_STEPS


class ToolRunOptions(TypedDict, total=False):
    """The keyword options of ``guard.run_tools``: ``RequestOptions`` without ``tools``
    (the tools come from ``tools=``, a ``Toolbox``)."""

    model: str
    system: LiteralString
    user: str
    messages: Sequence[Message]
    tool_choice: str | Mapping[str, Any]
    response_format: Mapping[str, Any]
    temperature: float
    top_p: float
    max_output_tokens: int
    stop: Sequence[str]
    seed: int
    extras: Mapping[str, Any]


def as_toolbox(tools: Toolbox | Sequence[Tool[..., Any]]) -> Toolbox:
    """A ``Toolbox`` as is; a sequence of tools in a ``Toolbox`` with the defaults."""
    if isinstance(tools, Toolbox):
        return tools
    if isinstance(tools, Tool):
        raise ConfigurationError("tools= takes a Toolbox or a list of tools, not one tool")
    return Toolbox(tools)


def check_max_steps(max_steps: int) -> None:
    if type(max_steps) is not int or max_steps < 1:
        raise ConfigurationError(f"max_steps must be a positive integer, not {max_steps!r}")


class LoopTranscript:
    """The messages so far, the usage, the steps: the per-call state of one loop."""

    __slots__ = ("base", "max_steps", "messages", "results", "steps", "usage")

    def __init__(self, request: Request, toolbox: Toolbox, max_steps: int) -> None:
        check_max_steps(max_steps)
        if request.tools and tuple(request.tools) != toolbox.specs:
            raise ConfigurationError(
                "the Request already carries tools: pass them through tools= (a Toolbox) "
                "so that the tools offered are exactly the tools that may run"
            )
        self.base = replace(request, tools=toolbox.specs)
        self.max_steps = max_steps
        self.messages: list[Message] = list(request.messages)
        self.results: list[ToolResult] = []
        self.steps = 0
        self.usage: Usage = EMPTY_USAGE

    def next_request(self) -> Request:
        return replace(self.base, messages=tuple(self.messages))

    def add_response(self, response: Response) -> tuple[ToolCall, ...]:
        """Record the model's answer; return the tool calls to run (none: done).

        Raises ``ToolLoopLimit`` when the answer asks for tools at the last step.
        """
        self.steps += 1
        self.usage = self.usage + response.usage
        calls = _with_ids(response.tool_calls, self.steps)
        self.messages.append(Message.assistant(response.text or None, tool_calls=calls))
        if calls and self.steps >= self.max_steps:
            raise ToolLoopLimit(
                f"the model still asked for tools after {self.steps} steps (max_steps="
                f"{self.max_steps}); its last tool calls were not run. Raise max_steps, or "
                "look at .transcript for a model that keeps calling tools",
                transcript=self.messages,
            )
        return calls

    def add_results(self, results: Sequence[ToolResult]) -> None:
        self.results.extend(results)
        self.messages.extend(result.message for result in results)

    def result(self, response: Response) -> ToolRunResult:
        return ToolRunResult(
            response=response,
            messages=tuple(self.messages),
            usage=self.usage,
            steps=self.steps,
            tool_results=tuple(self.results),
        )


def _with_ids(calls: tuple[ToolCall, ...], step: int) -> tuple[ToolCall, ...]:
    """Give a call with an empty or repeated id (some compatible servers) a unique one,
    so each tool message answers exactly one call."""
    seen: set[str] = set()
    fixed: list[ToolCall] | None = None
    for index, call in enumerate(calls):
        if not call.id or call.id in seen:
            if fixed is None:
                fixed = list(calls)
            fixed[index] = replace(call, id=f"call_llmguard_{step}_{index}")
        seen.add(call.id)
    return calls if fixed is None else tuple(fixed)


async def call_model(handler: Handler, request: Request, deadline_s: float | None) -> Response:
    """One model call through the layers, under the Guard's per-call deadline."""
    if deadline_s is None:
        return await handler(request)
    response: Response | None = None
    with anyio.CancelScope(deadline=anyio.current_time() + deadline_s) as scope:
        response = await handler(request)
    if scope.cancelled_caught or response is None:
        raise DeadlineExceeded("total", deadline_s)
    return response


async def run_tool_loop(
    handler: Handler,
    request: Request,
    toolbox: Toolbox,
    max_steps: int,
    *,
    provider: str,
    clock: Clock,
    deadline_s: float | None,
) -> ToolRunResult:
    """Run the loop as the owner of one call state (see the module docstring)."""
    transcript = LoopTranscript(request, toolbox, max_steps)
    state = _new_state(request, provider, clock, stream=False)
    token = _CURRENT_CALL.set(state)
    response: Response | None = None
    error: BaseException | None = None
    try:
        while True:
            response = await call_model(handler, transcript.next_request(), deadline_s)
            calls = transcript.add_response(response)
            if not calls:
                return transcript.result(response)
            transcript.add_results(await toolbox.run_all(calls))
    except BaseException as exc:
        error = exc
        raise
    finally:
        _CURRENT_CALL.reset(token)
        state.finish(response, error, now=clock.now())

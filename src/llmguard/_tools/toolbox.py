"""``Toolbox``: the allowlist. Only its tools run, and only with valid arguments.

Everything the model sends is untrusted input. For each tool call, in this order:

1. the name is looked up exactly (no case folding, no Unicode normalisation: a
   look-alike is an unknown tool);
2. the raw argument text is measured against the size cap before it is parsed;
3. its nesting depth is measured by an iterative scan (no recursion to blow up);
4. it is validated strictly against the tool's pydantic model (not JSON, not an
   object, unknown keys, missing keys, wrong types are refused);
5. a tool that requires approval awaits the approval callback;
6. the function runs under its timeout; an exception becomes an error result;
7. the return value is serialised and cut to ``max_result_chars``.

A failure at any step becomes a ``ToolResult`` whose ``content`` tells the model
what went wrong; the function is never called with arguments that failed a check.
The checks of steps 2 to 4 are in ``_checks``, the call and serialisation in ``_invoke``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import anyio

from .._errors import ConfigurationError, DeadlineExceeded
from .._state import current_call
from .._types import ToolCall, ToolSpec
from ._checks import describe_validation, echo_name, nesting_depth_exceeds
from ._invoke import invoke, serialise
from .decorator import Tool, effective_timeout
from .results import ToolFinished, ToolResult, ToolStarted

__all__ = ["ApprovalCallback", "ResultHook", "Toolbox"]

ApprovalCallback = Callable[[ToolCall, Mapping[str, Any]], Awaitable[bool]]
"""``await approve(call, arguments) -> bool``: ``arguments`` are the validated ones."""

ResultHook = Callable[[ToolResult], None]
"""Called with every ``ToolResult``; raising from it stops the loop with that error."""

EventSink = Callable[[ToolStarted | ToolFinished], Awaitable[None]]

_GENERIC_FAILURE = "Error: the tool failed. No details are available; do not retry the same call."


class Toolbox:
    """The tools the model may use: an allowlist, with limits on what it may send.

    >>> from llmguard import tool
    >>> @tool
    ... def add(a: int, b: int) -> int:
    ...     "Add two integers."
    ...     return a + b
    >>> box = Toolbox([add])
    >>> [spec.name for spec in box.specs]
    ['add']

    Args:
        tools: the tools; names must be unique.
        timeout: seconds one tool run may take unless the tool sets its own;
            ``None`` for no limit. A sync tool in a worker thread cannot be stopped:
            at the timeout the loop stops waiting for it, the thread runs on.
        max_concurrency: how many tool calls of one model answer run at once.
        max_argument_chars: the longest argument text accepted (checked before parsing).
        max_argument_depth: the deepest nesting of arrays and objects accepted.
        max_result_chars: results longer than this are cut (and marked as cut).
        approve: ``await approve(call, arguments) -> bool`` for tools with
            ``requires_approval=True``; required if any tool requires approval.
            Its exception counts as a denial (fail closed).
        on_result: called with every ``ToolResult`` (the original exception included);
            an exception raised from it stops the loop and propagates.
    """

    __slots__ = (
        "_approve",
        "_max_argument_chars",
        "_max_argument_depth",
        "_max_concurrency",
        "_max_result_chars",
        "_on_result",
        "_timeout",
        "_tools",
        "specs",
    )

    def __init__(
        self,
        tools: Iterable[Tool[..., Any]],
        *,
        timeout: float | None = 30.0,
        max_concurrency: int = 8,
        max_argument_chars: int = 65_536,
        max_argument_depth: int = 20,
        max_result_chars: int = 16_000,
        approve: ApprovalCallback | None = None,
        on_result: ResultHook | None = None,
    ) -> None:
        by_name: dict[str, Tool[..., Any]] = {}
        for item in tools:
            if not isinstance(item, Tool):
                raise ConfigurationError(f"{item!r} is not a tool: decorate it with @tool")
            if item.name in by_name:
                raise ConfigurationError(f"two tools are named {item.name!r}")
            by_name[item.name] = item
        if timeout is not None and not timeout > 0:
            raise ConfigurationError(f"timeout must be positive seconds or None, not {timeout!r}")
        for label, value in (
            ("max_concurrency", max_concurrency),
            ("max_argument_chars", max_argument_chars),
            ("max_argument_depth", max_argument_depth),
            ("max_result_chars", max_result_chars),
        ):
            if not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{label} must be a positive integer, not {value!r}")
        needing = sorted(t.name for t in by_name.values() if t.requires_approval)
        if needing and approve is None:
            raise ConfigurationError(
                f"tools {needing} require approval: pass approve= to the Toolbox"
            )
        self._tools = by_name
        self._timeout = timeout
        self._max_concurrency = max_concurrency
        self._max_argument_chars = max_argument_chars
        self._max_argument_depth = max_argument_depth
        self._max_result_chars = max_result_chars
        self._approve = approve
        self._on_result = on_result
        self.specs: tuple[ToolSpec, ...] = tuple(t.spec for t in by_name.values())

    @property
    def names(self) -> tuple[str, ...]:
        """The allowed tool names."""
        return tuple(self._tools)

    def get(self, name: str) -> Tool[..., Any] | None:
        """The tool of exactly this name, or ``None``."""
        return self._tools.get(name) if type(name) is str else None

    def __contains__(self, name: object) -> bool:
        return type(name) is str and name in self._tools

    def __iter__(self) -> Iterator[Tool[..., Any]]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def __repr__(self) -> str:
        return f"Toolbox({list(self._tools)!r})"

    async def run(self, call: ToolCall) -> ToolResult:
        """Handle one tool call. Never raises for the call's own faults; see the module doc."""
        return await self._handle(call, None)

    async def run_all(
        self, calls: Sequence[ToolCall], *, events: EventSink | None = None
    ) -> tuple[ToolResult, ...]:
        """Handle several calls concurrently (at most ``max_concurrency`` at once).

        Results come back in the order of ``calls``, each answering its call's id.
        ``events`` (optional) is awaited with ``ToolStarted``/``ToolFinished`` as they
        happen. Tasks copy the caller's context, so ``llmguard.context`` reaches tools.
        """
        if len(calls) == 1:
            return (await self._handle(calls[0], events),)
        results: list[ToolResult | None] = [None] * len(calls)
        # A limiter only when it can bind: acquiring one yields to the event loop, and
        # for a few calls that cost more than running the tools (issue 8).
        limiter = None
        if len(calls) > self._max_concurrency:
            limiter = anyio.CapacityLimiter(self._max_concurrency)
        failure: list[BaseException] = []

        async def one(index: int, call: ToolCall, scope: anyio.CancelScope) -> None:
            try:
                if limiter is None:
                    results[index] = await self._handle(call, events)
                else:
                    async with limiter:
                        results[index] = await self._handle(call, events)
            except Exception as exc:  # a hook raised: stop the others, re-raise bare
                failure.append(exc)
                scope.cancel()

        async with anyio.create_task_group() as group:
            for index, call in enumerate(calls):
                group.start_soon(one, index, call, group.cancel_scope)
        if failure:
            raise failure[0]
        return tuple(r for r in results if r is not None)

    async def _handle(self, call: ToolCall, events: EventSink | None) -> ToolResult:
        if events is not None:
            await events(ToolStarted(call=call))
        state = current_call()
        if state is None or not state._tool_observers:
            result = await self._check_and_run(call)
        else:
            finishers = state.tool_started(call)
            try:
                result = await self._check_and_run(call)
            except BaseException as exc:  # cancelled: the observers still hear the end
                state.tool_finished(finishers, None, exc)
                raise
            state.tool_finished(finishers, result, None)
        if state is not None:
            state.tool_calls += 1
            if not result.ok:
                state.tool_errors += 1
        if self._on_result is not None:
            self._on_result(result)
        if events is not None:
            await events(ToolFinished(result=result))
        return result

    async def _check_and_run(self, call: ToolCall) -> ToolResult:
        tool = self.get(call.name)
        if tool is None:
            return ToolResult(
                call=call,
                status="unknown_tool",
                content=(
                    f"Error: there is no tool named {echo_name(call.name)}; nothing was run. "
                    f"The available tools are: {', '.join(self._tools) or '(none)'}."
                ),
            )
        raw = call.arguments if isinstance(call.arguments, str) else ""
        if len(raw) > self._max_argument_chars:
            return self._invalid(
                call,
                tool,
                f"the arguments are {len(raw)} characters long, over the limit of "
                f"{self._max_argument_chars}",
            )
        if not raw.strip():
            raw = "{}"
        if nesting_depth_exceeds(raw, self._max_argument_depth):
            return self._invalid(
                call, tool, f"the arguments nest deeper than {self._max_argument_depth} levels"
            )
        try:
            arguments = tool.validate_json(raw)
        except Exception as exc:  # fail closed: anything odd here is invalid input
            return self._invalid(call, tool, describe_validation(exc), exc)
        if tool.requires_approval:
            refusal = await self._ask_approval(call, tool, arguments)
            if refusal is not None:
                return refusal
        return await self._execute(call, tool, arguments)

    def _invalid(
        self,
        call: ToolCall,
        tool: Tool[..., Any],
        reason: str,
        exc: BaseException | None = None,
    ) -> ToolResult:
        return ToolResult(
            call=call,
            status="invalid_arguments",
            content=(
                f"Error: the arguments for {tool.name!r} are invalid, so it was not run: "
                f"{reason}. Call it again with arguments that match its schema."
            ),
            exception=exc,
            tool=tool,
        )

    async def _ask_approval(
        self, call: ToolCall, tool: Tool[..., Any], arguments: Mapping[str, Any]
    ) -> ToolResult | None:
        assert self._approve is not None
        exception: BaseException | None = None
        try:
            approved = await self._approve(call, arguments)
        except Exception as exc:
            approved, exception = False, exc
        if approved is True:
            return None
        return ToolResult(
            call=call,
            status="not_approved",
            content=(
                f"Error: running {tool.name!r} was not approved, so it was not run. "
                "Do not try it again; tell the user it needs approval."
            ),
            exception=exception,
            tool=tool,
        )

    async def _execute(
        self, call: ToolCall, tool: Tool[..., Any], arguments: dict[str, Any]
    ) -> ToolResult:
        limit = effective_timeout(tool.timeout, self._timeout)
        value: Any = None
        scope: anyio.CancelScope | None = None
        try:
            if limit is None:  # nothing to time: no scope to enter and leave
                value = await invoke(tool, arguments)
            else:
                with anyio.move_on_after(limit) as scope:
                    value = await invoke(tool, arguments)
        except Exception as exc:
            return self._failed(call, tool, exc)
        if scope is not None and scope.cancelled_caught:
            assert limit is not None
            return ToolResult(
                call=call,
                status="timeout",
                content=f"Error: {tool.name!r} did not finish within {limit:g} s and was stopped.",
                exception=DeadlineExceeded("tool", limit),
                tool=tool,
            )
        return self._success(call, tool, value)

    def _failed(self, call: ToolCall, tool: Tool[..., Any], exc: BaseException) -> ToolResult:
        if tool.safe_errors and isinstance(exc, tool.safe_errors):
            content = f"Error: {tool.name!r} failed: {type(exc).__name__}: {exc}"
            content = self._cap(content)[0]
        else:
            content = _GENERIC_FAILURE
        return ToolResult(call=call, status="error", content=content, exception=exc, tool=tool)

    def _success(self, call: ToolCall, tool: Tool[..., Any], value: Any) -> ToolResult:
        try:
            text = serialise(value)
        except Exception as exc:
            return ToolResult(
                call=call,
                status="error",
                content=f"Error: the result of {tool.name!r} could not be serialised.",
                exception=exc,
                tool=tool,
            )
        content, truncated = self._cap(text)
        return ToolResult(
            call=call, status="ok", content=content, value=value, tool=tool, truncated=truncated
        )

    def _cap(self, text: str) -> tuple[str, bool]:
        limit = self._max_result_chars
        if len(text) <= limit:
            return text, False
        return f"{text[:limit]}\n[truncated: {len(text) - limit} more characters]", True

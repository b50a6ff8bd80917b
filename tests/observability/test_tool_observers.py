"""``CallState.on_tool``: the generic hook a ``Toolbox`` calls around each tool call."""

from __future__ import annotations

import logging

import pytest

from llmguard import (
    BaseLayer,
    CallState,
    Guard,
    Handler,
    Request,
    Response,
    ToolCall,
    ToolResult,
    current_call,
    tool,
)
from llmguard._state import ToolFinish
from llmguard.testing import FakeProvider, FakeReply

pytestmark = pytest.mark.anyio


@tool
def echo(text: str) -> str:
    """Echo the text."""
    return text


async def test_observers_hear_each_tool_call_start_and_end_in_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    heard: list[str] = []

    def watching(state: CallState, call: ToolCall) -> ToolFinish:
        heard.append(f"start {call.name} {state.tool_calls}")

        def finish(result: ToolResult | None, error: BaseException | None) -> None:
            assert result is not None and error is None
            heard.append(f"end {result.status}")

        return finish

    def silent(state: CallState, call: ToolCall) -> None:
        heard.append("silent start")

    def broken(state: CallState, call: ToolCall) -> ToolFinish:
        raise RuntimeError("observer bug")

    def broken_end(state: CallState, call: ToolCall) -> ToolFinish:
        def finish(result: ToolResult | None, error: BaseException | None) -> None:
            heard.append("broken end")
            raise RuntimeError("observer bug at the end")

        return finish

    class Register(BaseLayer):
        """A layer that adds the observers (twice: adding again changes nothing)."""

        async def complete(self, request: Request, call_next: Handler) -> Response:
            state = current_call()
            assert state is not None
            for observer in (watching, silent, broken, broken_end, watching):
                state.on_tool(observer)
            return await call_next(request)

    fake = FakeProvider([FakeReply.tool_call("echo", {"text": "hi"}, id="c1"), "done"])
    guard = Guard(fake, [Register()], model="m", timeout=None)
    with caplog.at_level(logging.ERROR, logger="llmguard"):
        result = await guard.run_tools(user="go", tools=[echo])
    assert result.text == "done"
    # the last started ends first; a raising observer is logged and skipped
    assert heard == ["start echo 0", "silent start", "broken end", "end ok"]
    assert [r.getMessage() for r in caplog.records] == [
        "llmguard: a tool observer raised; the call goes on",
        "llmguard: a tool observer raised; the call goes on",
    ]


async def test_without_observers_or_outside_a_call_tools_run_as_before() -> None:
    from llmguard import Toolbox

    box = Toolbox([echo])
    result = await box.run(ToolCall(id="c1", name="echo", arguments='{"text": "x"}'))
    assert result.ok and result.content == "x"

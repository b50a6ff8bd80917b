"""Calling a tool's function with validated arguments, and its value as text.

An async function is awaited; a sync one runs in a worker thread (or inline when the
tool says so), and an awaitable it returns is awaited. ``serialise`` turns the value
into the text the model reads.
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import Any

import anyio

from .decorator import Tool

__all__ = ["invoke", "serialise"]


async def invoke(tool: Tool[..., Any], arguments: dict[str, Any]) -> Any:
    """Run ``tool`` on ``arguments`` and return its value (exceptions propagate)."""
    function = tool.function
    if tool.is_async:
        return await function(**arguments)
    if tool.run_in_thread:
        value = await anyio.to_thread.run_sync(
            partial(function, **arguments), abandon_on_cancel=True
        )
    else:
        value = function(**arguments)
    if inspect.isawaitable(value):
        value = await value
    return value


def serialise(value: Any) -> str:
    """A tool's return value as text: a ``str`` as is, anything else as JSON
    (pydantic models, dataclasses, dicts, lists, dates, UUIDs… through pydantic)."""
    if isinstance(value, str):
        return value
    from pydantic_core import to_json

    return to_json(value).decode()

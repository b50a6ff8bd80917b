"""The checks on what the model sends, and how their failures are put to the model.

The nesting-depth scan of raw argument text (iterative: no recursion to blow up), the
escaped echo of an unknown tool name, and a validation error in a few plain lines.
``Toolbox`` runs them in the order its module docstring gives.
"""

from __future__ import annotations

import re

__all__ = ["describe_validation", "echo_name", "nesting_depth_exceeds"]

_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_ECHO_CHARS = 64  # how much of an unknown name is echoed back to the model
_MAX_ERRORS = 8


def nesting_depth_exceeds(raw: str, limit: int) -> bool:
    """Whether the JSON text nests arrays/objects deeper than ``limit`` (iterative)."""
    if raw.count("[") + raw.count("{") <= limit:
        return False
    depth = 0
    for match in _TOKENS.finditer(raw):
        char = match.group()
        if char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def echo_name(name: object) -> str:
    """An unknown tool name as the model may see it again: cut short, escaped."""
    text = name if isinstance(name, str) else repr(name)
    if len(text) > _ECHO_CHARS:
        text = text[:_ECHO_CHARS] + "…"
    return ascii(text)  # look-alikes and control characters are shown escaped


def describe_validation(exc: BaseException) -> str:
    """A pydantic validation error as ``loc: msg`` parts (no inputs, no URLs)."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return type(exc).__name__
    try:
        items = errors(include_url=False, include_input=False)
    except TypeError:  # pragma: no cover - not a pydantic error after all
        return type(exc).__name__
    parts = []
    for item in items[:_MAX_ERRORS]:
        loc = ".".join(str(p) for p in item.get("loc", ())) or "(arguments)"
        parts.append(f"{loc}: {item.get('msg', 'invalid')}")
    if len(items) > _MAX_ERRORS:
        parts.append(f"and {len(items) - _MAX_ERRORS} more")
    return "; ".join(parts)

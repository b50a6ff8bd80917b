"""How a ``Fallback`` names targets and failures in the call's record.

A target's provider name (the routed one when a target routed the call), a function's
name, one failure as ``"target: Error: message"``, and noting the answering target and
the reasons on the call state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._layer import Provider
from .._state import CallState, current_call
from .._targets import routed_provider_name

_REASON_CHARS = 200


def _provider_name(provider: Provider | None) -> str:
    if provider is not None:
        return provider.name
    routed = routed_provider_name()
    if routed is not None:
        return routed
    state = current_call()
    return state.provider if state is not None else ""


def _function_name(function: Callable[..., Any]) -> str:
    return str(getattr(function, "__qualname__", None) or getattr(function, "__name__", function))


def _reason(label: str, error: BaseException) -> str:
    text = str(error)
    if len(text) > _REASON_CHARS:
        text = text[: _REASON_CHARS - 1] + "…"
    return (
        f"{label}: {type(error).__name__}: {text}" if text else f"{label}: {type(error).__name__}"
    )


def _note(state: CallState | None, answered: str | None, reasons: list[str]) -> None:
    if state is None:
        return
    state.fallback_reasons.extend(reasons)
    if answered is not None:
        state.fallback = answered

"""Per-call state (``CallState``) and the one record per call (``CallRecord``).

One ``CallState`` travels down the layer stack on a contextvar for the length of
one call. Layers write into it (attempts, cache status, fallback taken, budget
scope); whoever opened the call (the Guard, or the outermost decorator) finishes
it, and observe turns it into the one ``CallRecord``. Layers never keep per-call
data on themselves.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from random import getrandbits
from typing import TYPE_CHECKING, Any

from ._context import CallContext
from ._fast_init import fast_init
from ._types import EMPTY_USAGE, Request, Response, ToolCall, Usage

if TYPE_CHECKING:
    from ._tools.results import ToolResult

__all__ = ["Attempt", "CallRecord", "CallState", "current_call"]


@dataclass(slots=True, kw_only=True)
class Attempt:
    """One call to a provider (or to the wrapped function) inside a call."""

    provider: str
    model: str
    started_at: float
    ended_at: float | None = None
    first_event_at: float | None = None
    usage: Usage = EMPTY_USAGE
    error: str | None = None


FinishCallback = Callable[["CallState", "Response | None", "BaseException | None"], None]
AttemptHook = Callable[["CallState", "Request", int], Awaitable[None]]
ToolFinish = Callable[["ToolResult | None", "BaseException | None"], None]
"""``finish(result, error)``: a tool call was handled (``result``) or interrupted (``error``)."""
ToolObserver = Callable[["CallState", ToolCall], "ToolFinish | None"]
"""``observer(state, call)``, when a ``Toolbox`` starts handling ``call``; it may return
the ``ToolFinish`` to call when that call has been handled."""

_log = logging.getLogger("llmguard")


@dataclass(slots=True, kw_only=True)
class CallState:
    """What happened during one call so far. Mutable; one per call, never shared.

    Layers read ``request`` and ``context`` and write their facts: ``cache``
    (``"hit"``, ``"miss"``, ``"refresh"``, ``"bypass"``), ``fallback`` and ``fallback_reasons``,
    ``budget_scopes``, ``cost_micros``, and anything of their own in ``extra``.
    Attempts are appended by the stack itself around each provider call; a
    ``Toolbox`` counts the tool calls it handled (``tool_calls``) and how many of
    them did not succeed (``tool_errors``), and tells the observers added with
    ``on_tool`` when each one starts and ends.
    """

    call_id: str
    context: CallContext
    started_at: float
    request: Request | None = None
    stream: bool = False
    provider: str = ""
    attempts: list[Attempt] = field(default_factory=list)
    cache: str | None = None
    fallback: str | None = None
    fallback_reasons: list[str] = field(default_factory=list)
    budget_scopes: list[str] = field(default_factory=list)
    cost_micros: int | None = None
    tool_calls: int = 0
    tool_errors: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    ended_at: float | None = None
    _on_finish: list[FinishCallback] = field(default_factory=list, repr=False)
    _before_attempt: list[tuple[AttemptHook, int]] = field(default_factory=list, repr=False)
    _hooks_from: float = field(default=math.inf, repr=False)  # the lowest ``first`` of them
    _tool_observers: tuple[ToolObserver, ...] = field(default=(), repr=False)
    _finished: bool = field(default=False, repr=False)

    @staticmethod
    def new_id() -> str:
        """A fresh random call id (16 hex characters; an id, not a secret)."""
        return f"{getrandbits(64):016x}"

    @property
    def usage(self) -> Usage:
        """The usage of every attempt, summed."""
        attempts = self.attempts
        if len(attempts) == 1:
            return attempts[0].usage
        total = EMPTY_USAGE
        for attempt in attempts:
            total = total + attempt.usage
        return total

    def before_attempt(self, hook: AttemptHook, *, first: int = 0) -> None:
        """Await ``hook(state, request, n)`` before each provider attempt (``n`` counts
        from 0), whichever layer makes it: a retry, a re-ask, a tool step, a fallback
        hop. An exception from the hook (``BudgetExceeded``, say) stops that attempt.
        ``first``: the hook starts with attempt number ``first`` (a budget, say, skips
        the attempt it reserved for up front).

        A layer may be passed through several times in one call (each step of a tool
        loop goes through every layer): adding a hook that is already there (an equal
        callable, e.g. the same bound method) does nothing.
        """
        for added, _ in self._before_attempt:
            if added == hook:
                return
        self._before_attempt.append((hook, first))
        if first < self._hooks_from:
            self._hooks_from = first

    async def run_before_attempt(self, request: Request) -> None:
        """Run the attempt hooks (called by the stack itself, not by layers)."""
        number = len(self.attempts)
        for hook, first in self._before_attempt:
            if number >= first:
                await hook(self, request, number)

    def on_tool(self, observer: ToolObserver) -> None:
        """Call ``observer(state, call)`` each time a ``Toolbox`` starts handling a tool
        call within this call (``guard.run_tools``); what it returns, if not ``None``, is
        called as ``finish(result, error)`` once that tool call has been handled, in the
        same task. Observers must be fast and must not raise (an exception is logged and
        ignored). Adding an observer that is already there does nothing.
        """
        if observer not in self._tool_observers:
            self._tool_observers = (*self._tool_observers, observer)

    def tool_started(self, call: ToolCall) -> list[ToolFinish]:
        """Tell the tool observers that ``call`` is being handled (called by the
        ``Toolbox``); returns what to pass to ``tool_finished``."""
        finishers: list[ToolFinish] = []
        for observer in self._tool_observers:
            try:
                finish = observer(self, call)
            except Exception:
                _log.exception("llmguard: a tool observer raised; the call goes on")
                continue
            if finish is not None:
                finishers.append(finish)
        return finishers

    @staticmethod
    def tool_finished(
        finishers: Sequence[ToolFinish],
        result: ToolResult | None,
        error: BaseException | None,
    ) -> None:
        """Run what ``tool_started`` returned, the last started first."""
        for finish in reversed(finishers):
            try:
                finish(result, error)
            except Exception:
                _log.exception("llmguard: a tool observer raised; the call goes on")

    def on_finish(self, callback: FinishCallback) -> None:
        """Run ``callback(state, response, error)`` once when the call ends.

        Adding a callback that is already there (an equal callable, e.g. the same bound
        method of a layer passed through again by a tool-loop step) does nothing.
        """
        if callback not in self._on_finish:
            self._on_finish.append(callback)

    def finish(self, response: Response | None, error: BaseException | None, *, now: float) -> None:
        """End the call at ``now``: run the finish callbacks once, in the order added."""
        if self._finished:
            return
        self._finished = True
        self.ended_at = now
        for callback in self._on_finish:
            callback(self, response, error)


_CURRENT_CALL: ContextVar[CallState | None] = ContextVar("llmguard_call", default=None)


def current_call() -> CallState | None:
    """The ``CallState`` of the call running here, or ``None`` outside a guarded call."""
    return _CURRENT_CALL.get()


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class CallRecord:
    """The one record of one call, built by observe from the ``CallState``.

    Times are in seconds. ``prompt`` and ``completion`` are ``None`` unless the
    ``Observe`` layer was told to include content. ``fallback`` names the fallback
    target that answered (``None``: the primary did) and ``fallback_reasons`` says why
    each earlier one failed (``"target: Error: message"``).
    """

    call_id: str
    provider: str
    model: str
    user: str | None
    tenant: str | None
    endpoint: str | None
    tags: tuple[str, ...]
    stream: bool
    usage: Usage
    cost_micros: int | None
    latency_s: float
    time_to_first_token_s: float | None
    cache: str | None
    attempts: int
    fallback: str | None
    finish_reason: str | None
    error: str | None
    prompt: str | None = None
    completion: str | None = None
    tool_calls: int = 0
    tool_errors: int = 0
    fallback_reasons: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The record as plain JSON-able fields (usage flattened)."""
        return {
            "call_id": self.call_id,
            "provider": self.provider,
            "model": self.model,
            "user": self.user,
            "tenant": self.tenant,
            "endpoint": self.endpoint,
            "tags": list(self.tags),
            "stream": self.stream,
            "input_tokens": self.usage.input_tokens,
            "output_tokens": self.usage.output_tokens,
            "cached_input_tokens": self.usage.cached_input_tokens,
            "reasoning_tokens": self.usage.reasoning_tokens,
            "usage_estimated": self.usage.estimated,
            "cost_micros": self.cost_micros,
            "latency_s": self.latency_s,
            "time_to_first_token_s": self.time_to_first_token_s,
            "cache": self.cache,
            "attempts": self.attempts,
            "fallback": self.fallback,
            "finish_reason": self.finish_reason,
            "error": self.error,
            "prompt": self.prompt,
            "completion": self.completion,
            "tool_calls": self.tool_calls,
            "tool_errors": self.tool_errors,
            "fallback_reasons": list(self.fallback_reasons),
        }

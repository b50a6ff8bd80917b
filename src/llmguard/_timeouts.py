"""Cancel scopes with a deadline, cheaper on asyncio: one loop timer per ``Bound``.

On trio a cancel scope with a deadline costs what one without does, so there a bound is
plainly ``CancelScope(deadline=now + seconds)``. On asyncio each timed scope arms a loop
timer when entered and cancels it when left (a handle made, pushed on the loop's heap,
cancelled, dropped later), which makes it cost about twice an untimed scope; a guarded
call opens several (the Guard's total deadline, the attempt's, the budget's settle).

A ``Bound`` has one length, so the scopes it opens on one loop end in the order they
were opened. It keeps the open ones in that order and one timer, set for the oldest:
when the timer fires it cancels the scopes whose time is up, exactly as their own
deadline would have, and sets itself for the next. So a scope costs a dict entry, and
the timer fires about once per length while calls keep coming.

Such a scope has no deadline of its own, so ``anyio.current_effective_deadline()`` inside
it does not see the bound: ``effective_deadline()`` does (the retry layer asks it).
"""

from __future__ import annotations

import math
import sys
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    import asyncio

__all__ = ["Bound", "effective_deadline"]

#: The nearest bound (loop time) of the asyncio scopes opened by ``Bound`` around here.
_BOUND_AT: ContextVar[float] = ContextVar("llmguard_bound_at", default=math.inf)

_modules = sys.modules


def _running_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop when this runs in an asyncio task, else None (trio, or no
    loop). asyncio is never imported here: if it is not loaded, nothing runs on it (and
    ``import llmguard`` stays free of its ~30 ms import)."""
    aio = _modules.get("asyncio")
    if aio is None:
        return None
    loop = aio._get_running_loop()
    if loop is None or aio.current_task(loop) is None:
        return None
    return loop  # type: ignore[no-any-return]


def effective_deadline() -> float:
    """``anyio.current_effective_deadline()``, counting the bounds of ``Bound`` scopes."""
    return min(anyio.current_effective_deadline(), _BOUND_AT.get())


class _Timer:
    """The open scopes of one ``Bound`` on one asyncio loop, oldest first, and the timer."""

    __slots__ = ("_handle", "loop", "open", "scope_class", "seconds")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, seconds: float, scope_class: type[anyio.CancelScope]
    ) -> None:
        self.loop = loop
        self.seconds = seconds
        self.scope_class = scope_class
        self.open: dict[anyio.CancelScope, float] = {}  # oldest first: deadlines only grow
        self._handle: asyncio.TimerHandle | None = None

    def add(self, scope: anyio.CancelScope) -> float:
        at = self.loop.time() + self.seconds
        self.open[scope] = at
        if self._handle is None:  # else it fires earlier, for an older scope
            self._handle = self.loop.call_at(at, self._fire)
        return at

    def _fire(self) -> None:
        self._handle = None
        open_ = self.open
        now = self.loop.time()
        while open_:
            scope = next(iter(open_))
            at = open_[scope]
            if at > now:
                self._handle = self.loop.call_at(at, self._fire)
                return
            del open_[scope]
            scope.cancel()  # what its own deadline would have done, at the same moment


def _asyncio_scope_class() -> type[anyio.CancelScope]:
    """anyio's asyncio cancel scope class: made directly, a scope skips anyio's backend
    lookup (its public ``CancelScope(...)`` returns an instance of this class)."""
    scope_class = type(anyio.CancelScope())
    return scope_class if issubclass(scope_class, anyio.CancelScope) else anyio.CancelScope


class Bound:
    """Opens cancel scopes that are cancelled ``seconds`` after they were entered.

    ``with bound.scope() as scope: ...`` then ``scope.cancelled_caught`` as with
    ``anyio.CancelScope(deadline=...)``; ``shield=True`` makes them shielded. One
    ``Bound`` may serve any number of concurrent calls, loops and threads.
    """

    __slots__ = ("_scope_class", "_shield", "_timer", "seconds")

    def __init__(self, seconds: float, *, shield: bool = False) -> None:
        self.seconds = seconds
        self._shield = shield
        self._timer: _Timer | None = None  # the last loop's (most programs run one)
        self._scope_class: type[anyio.CancelScope] | None = None

    def scope(self) -> _Scoped:
        """A context manager entering a bounded cancel scope (and returning it)."""
        return _Scoped(self)

    def _timer_for(self, loop: asyncio.AbstractEventLoop) -> _Timer:
        timer = self._timer
        if timer is None or timer.loop is not loop:
            scope_class = self._scope_class
            if scope_class is None:
                scope_class = self._scope_class = _asyncio_scope_class()
            timer = self._timer = _Timer(loop, self.seconds, scope_class)
        return timer


class _Scoped:
    """One bounded scope: entered by ``with``, left and forgotten by the timer on exit."""

    __slots__ = ("_bound", "_scope", "_timer", "_token")

    def __init__(self, bound: Bound) -> None:
        self._bound = bound
        self._timer: _Timer | None = None
        self._token: Token[float] | None = None

    def __enter__(self) -> anyio.CancelScope:
        bound = self._bound
        loop = _running_asyncio_loop()
        if loop is None:  # trio (or no asyncio task)
            scope = self._scope = anyio.CancelScope(
                deadline=anyio.current_time() + bound.seconds, shield=bound._shield
            )
            return scope.__enter__()
        timer = self._timer = bound._timer_for(loop)
        scope = self._scope = timer.scope_class(shield=bound._shield)
        scope.__enter__()
        at = timer.add(scope)
        if at < _BOUND_AT.get() or bound._shield:  # a shield hides the outer bounds
            self._token = _BOUND_AT.set(at)
        return scope

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        timer = self._timer
        if timer is not None:
            timer.open.pop(self._scope, None)
            token = self._token
            if token is not None:
                _BOUND_AT.reset(token)
        return self._scope.__exit__(exc_type, exc, tb)

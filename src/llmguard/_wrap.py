"""The decorator machinery every guard shares: wrap any ``async def``, keep its type.

A guard's decorator form is an *advice*: an async function that receives the
``Invocation`` of the wrapped function and decides whether, how often and how to
``proceed()``. ``around(advice)`` turns it into a decorator typed with ``ParamSpec``,
so ``async def search(query: str, k: int) -> list[Hit]`` stays exactly that.

The outermost llmguard decorator on a call opens a ``CallState`` (so records,
attempts and budgets work without a Guard) and finishes it when the call ends.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, cast, overload

import anyio

from ._clock import SystemClock
from ._context import current_context
from ._errors import ConfigurationError, DeadlineExceeded
from ._state import _CURRENT_CALL, CallState

__all__ = ["Advice", "Invocation", "around", "timeout"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_CLOCK = SystemClock()


class Invocation(Generic[T]):
    """One call of a wrapped function. ``await proceed()`` runs it (again, if need be)."""

    __slots__ = ("args", "function", "kwargs")

    def __init__(
        self,
        function: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> None:
        self.function = function
        self.args = args
        self.kwargs = kwargs

    async def proceed(self) -> T:
        """Call the wrapped function with the original arguments."""
        return await self.function(*self.args, **self.kwargs)

    @property
    def name(self) -> str:
        """The wrapped function's qualified name (for records and error messages)."""
        return getattr(self.function, "__qualname__", repr(self.function))


class Advice(Protocol):
    """What a guard does around one call: ``async def advice(call) -> result``."""

    async def __call__(self, call: Invocation[T], /) -> T: ...


@overload
def around(
    advice: Advice,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]]: ...


@overload
def around(
    advice: Callable[[Invocation[R]], Awaitable[R]],
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]]: ...


def around(advice: Any) -> Any:
    """Make a decorator for any ``async def`` out of an ``advice``.

    The advice may be generic (``async def advice(call: Invocation[T]) -> T``: it
    works for any function) or tied to one return type (``Invocation[list[Hit]]``:
    it decorates functions returning ``list[Hit]``, e.g. a fallback that returns
    other hits).

    >>> async def twice(call):
    ...     await call.proceed()
    ...     return await call.proceed()
    >>> run_twice = around(twice)
    """

    def decorate(function: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        if not callable(function):
            raise ConfigurationError(f"{function!r} is not callable")

        @functools.wraps(function)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            call: Invocation[R] = Invocation(function, args, kwargs)
            if _CURRENT_CALL.get() is not None:
                return cast(R, await advice(call))
            state = CallState(
                call_id=CallState.new_id(),
                context=current_context(),
                started_at=_CLOCK.now(),
                provider=call.name,
            )
            token = _CURRENT_CALL.set(state)
            error: BaseException | None = None
            try:
                return cast(R, await advice(call))
            except BaseException as exc:
                error = exc
                raise
            finally:
                _CURRENT_CALL.reset(token)
                state.finish(None, error, now=_CLOCK.now())

        return wrapper

    return decorate


def timeout(
    seconds: float,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Decorate any ``async def`` with a total deadline; raises ``DeadlineExceeded``.

    >>> @timeout(2.5)
    ... async def search(query: str, k: int) -> list[str]:
    ...     return [query] * k
    """
    if not seconds > 0:
        raise ConfigurationError(f"timeout needs a positive number of seconds, not {seconds!r}")

    async def advice(call: Invocation[T]) -> T:
        with anyio.CancelScope(deadline=anyio.current_time() + seconds) as scope:
            return await call.proceed()
        assert scope.cancelled_caught
        raise DeadlineExceeded("total", seconds)

    return around(advice)

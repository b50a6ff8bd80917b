"""``Fallback``: when the call fails, try the next target in an ordered chain.

Targets are other models on the same provider, other providers (with a model), and
finally plain async functions that need no LLM at all (a full-text search, a canned
answer). Model and provider targets are called *inward*, through every layer listed
after the ``Fallback`` (circuit breaker, retry, deadlines), so each target gets its
own circuit and its own retries; functions are called directly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeGuard, TypeVar

from .._clock import Clock, SystemClock
from .._errors import ConfigurationError
from .._fast_init import replace
from .._layer import BaseLayer, Handler, Provider, StreamHandler, StreamOpener
from .._state import Attempt, CallState, current_call
from .._targets import route_to
from .._types import Request, Response
from .._wrap import Invocation, around
from ._classify import triggers_fallback
from ._fallback_labels import _function_name, _note, _provider_name, _reason
from ._fallback_stream import _FallbackStream

__all__ = ["Fallback", "FallbackOn", "FallbackTarget", "fallback"]

P = ParamSpec("P")
R = TypeVar("R")

FallbackOn = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]
"""What makes a call fall back: exception types, or a predicate on the error."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FallbackTarget:
    """One place a ``Fallback`` may send a call, spelled out.

    Give ``model`` (same provider, another model), ``provider`` (optionally with
    ``model``), or ``function`` (an ``async def (Request) -> Response`` that answers by
    itself). ``adapt`` rewrites the request for this target (drop a parameter it does
    not support, shorten the prompt…); ``name`` is how records call it.

    >>> from dataclasses import replace
    >>> def no_temperature(request: Request) -> Request:
    ...     return replace(request, temperature=None)
    >>> FallbackTarget(model="o4-mini", adapt=no_temperature)
    FallbackTarget(model='o4-mini', adapt=no_temperature)
    """

    model: str | None = None
    provider: Provider | None = None
    function: Handler | None = None
    adapt: Callable[[Request], Request] | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if self.function is not None:
            if self.model is not None or self.provider is not None:
                raise ConfigurationError("a function target takes no model= or provider=")
            if not callable(self.function):
                raise ConfigurationError(f"{self.function!r} is not callable")
        elif self.model is None and self.provider is None:
            raise ConfigurationError("a FallbackTarget needs model=, provider= or function=")
        if self.provider is not None and not isinstance(self.provider, Provider):
            raise ConfigurationError(f"{self.provider!r} is not a provider")
        if self.adapt is not None and not callable(self.adapt):
            raise ConfigurationError(
                f"adapt= must be a function Request -> Request, not {self.adapt!r}"
            )

    def __repr__(self) -> str:
        shown = [f"model={self.model!r}"] if self.model is not None else []
        if self.provider is not None:
            shown.append(f"provider={self.provider.name!r}")
        if self.function is not None:
            shown.append(f"function={_function_name(self.function)}")
        if self.adapt is not None:
            shown.append(f"adapt={_function_name(self.adapt)}")
        if self.name is not None:
            shown.append(f"name={self.name!r}")
        return f"FallbackTarget({', '.join(shown)})"

    def label(self, request: Request) -> str:
        """This target's name in records, for ``request``."""
        if self.name is not None:
            return self.name
        if self.function is not None:
            return _function_name(self.function)
        model = self.model if self.model is not None else request.model
        return f"{_provider_name(self.provider)}/{model}"

    def prepare(self, request: Request) -> Request:
        """The request as this target receives it."""
        if self.model is not None and self.model != request.model:
            request = replace(request, model=self.model)
        return request if self.adapt is None else self.adapt(request)


TargetSpec = str | Provider | tuple[Provider, str] | FallbackTarget | Handler
"""A fallback target: a model name, a provider, a ``(provider, model)`` pair, a
``FallbackTarget``, or an ``async def (Request) -> Response``."""


def _as_target(spec: TargetSpec) -> FallbackTarget:
    if isinstance(spec, FallbackTarget):
        return spec
    if isinstance(spec, str):
        return FallbackTarget(model=spec)
    if isinstance(spec, tuple):
        if len(spec) != 2 or not isinstance(spec[0], Provider) or not isinstance(spec[1], str):
            raise ConfigurationError(f"a target pair is (provider, model name), not {spec!r}")
        return FallbackTarget(provider=spec[0], model=spec[1])
    if isinstance(spec, Provider):
        return FallbackTarget(provider=spec)
    if callable(spec):
        return FallbackTarget(function=spec)
    raise ConfigurationError(
        f"{spec!r} is not a fallback target: give a model name, a provider, a "
        "(provider, model) pair, a FallbackTarget or an async function"
    )


def _is_pair(spec: object) -> TypeGuard[tuple[Provider, str]]:
    return (
        isinstance(spec, tuple)
        and len(spec) == 2
        and isinstance(spec[0], Provider)
        and isinstance(spec[1], str)
    )


def as_trigger(on: FallbackOn | None) -> Callable[[BaseException], bool]:
    """``on=`` as a predicate (default: retryable errors and ``CircuitOpen``)."""
    if on is None:
        return triggers_fallback
    if isinstance(on, tuple):
        if not on or not all(isinstance(k, type) and issubclass(k, BaseException) for k in on):
            raise ConfigurationError(f"on= must hold exception types, not {on!r}")
        kinds = on
        return lambda error: isinstance(error, kinds)
    if isinstance(on, type):
        if not issubclass(on, BaseException):
            raise ConfigurationError(f"on= must be exception types or a predicate, not {on!r}")
        kind = on
        return lambda error: isinstance(error, kind)
    if not callable(on):
        raise ConfigurationError(f"on= must be exception types or a predicate, not {on!r}")
    return on


class Fallback(BaseLayer):
    """When the call fails, tries the next target in ``to``, in order.

    ``to`` holds model names (same provider), providers, ``(provider, model)`` pairs,
    ``FallbackTarget`` objects, and finally async functions ``(Request) -> Response`` that
    answer without an LLM. A call falls back on what ``on`` says (default: a retryable
    ``ProviderError``, a ``DeadlineExceeded``, a ``CircuitOpen``, builtin timeouts and
    connection errors); anything else (a 400, a budget refusal) is raised as it is.
    When every target failed, the last error is raised.

    Put it before (outside) ``CircuitBreaker`` and ``Retry``: model and provider
    targets are called inward, so each gets its own circuit and its own retries.
    Streams switch target only before their first event.

    The record says what happened: ``CallState.fallback`` (and ``CallRecord.fallback``)
    names the target that answered (``None``: the primary did), and
    ``fallback_reasons`` lists why each earlier one failed, as ``"target: Error:
    message"``. A function target's call is an ``Attempt`` named after the function.

    Args:
        to: the targets after the primary, in order (one target, or a sequence).
        on: exception types, or a predicate on the error, that make a call fall back.
        clock: time for the attempt records of function targets (pass the Guard's).
    """

    __slots__ = ("_clock", "_on", "_targets")

    def __init__(
        self,
        to: TargetSpec | Sequence[TargetSpec],
        *,
        on: FallbackOn | None = None,
        clock: Clock | None = None,
    ) -> None:
        specs: Sequence[TargetSpec]
        if isinstance(to, str | FallbackTarget | Provider) or _is_pair(to):
            specs = [to]
        elif isinstance(to, Sequence):
            specs = to
        else:
            specs = [to]
        if not specs:
            raise ConfigurationError("Fallback needs at least one target in to=")
        self._targets = tuple(_as_target(spec) for spec in specs)
        self._on = as_trigger(on)
        self._clock: Clock = clock or SystemClock()

    @property
    def targets(self) -> tuple[FallbackTarget, ...]:
        """The targets after the primary, in order."""
        return self._targets

    async def complete(self, request: Request, call_next: Handler) -> Response:
        """Call inward; on a failure that ``on`` accepts, try each target in turn."""
        try:
            return await call_next(request)
        except Exception as exc:
            failure = exc
        return await self._fall_back(request, call_next, failure)

    async def _fall_back(
        self, request: Request, call_next: Handler, failure: Exception
    ) -> Response:
        if not self._on(failure):
            raise failure
        reasons = [_reason(f"{_provider_name(None)}/{request.model}", failure)]
        state = current_call()
        for target in self._targets:
            label = target.label(request)
            try:
                response = await self._call(target, request, call_next, label, state)
            except Exception as exc:
                reasons.append(_reason(label, exc))
                if not self._on(exc):
                    _note(state, None, reasons)
                    raise
                failure = exc
                continue
            _note(state, label, reasons)
            return response
        _note(state, None, reasons)
        raise failure

    async def _call(
        self,
        target: FallbackTarget,
        request: Request,
        call_next: Handler,
        label: str,
        state: CallState | None,
    ) -> Response:
        prepared = target.prepare(request)
        if target.function is not None:
            return await self._call_function(target.function, prepared, label, state)
        with route_to(target.provider):
            return await call_next(prepared)

    async def _call_function(
        self, function: Handler, request: Request, label: str, state: CallState | None
    ) -> Response:
        now = self._clock.now
        attempt = Attempt(provider=label, model="", started_at=now())
        if state is not None:
            state.attempts.append(attempt)
        try:
            response = await function(request)
        except BaseException as exc:
            attempt.ended_at = now()
            attempt.error = type(exc).__name__
            raise
        attempt.ended_at = attempt.first_event_at = now()
        attempt.usage = response.usage
        attempt.model = response.model
        return response if response.provider else replace(response, provider=label)

    def stream(self, request: Request, call_next: StreamHandler) -> StreamOpener:
        """Open the primary's stream; if it fails before its first event, the next
        target's, and so on."""
        return _FallbackStream(self, request, call_next)

    def __repr__(self) -> str:
        return f"Fallback(to={list(self._targets)!r})"


def fallback(
    to: Callable[P, Awaitable[R]] | Sequence[Callable[P, Awaitable[R]]],
    *,
    on: FallbackOn | None = None,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """On failure, call ``to`` (one function or several, in order) with the same arguments.

    ``to`` are async functions with the decorated function's signature; the first that
    answers wins. ``on`` works as on the ``Fallback`` layer.

    >>> async def full_text(query: str) -> list[str]:
    ...     return [query]
    >>> @fallback(to=full_text)
    ... async def semantic(query: str) -> list[str]:
    ...     raise TimeoutError
    """
    targets: tuple[Callable[P, Awaitable[R]], ...] = (to,) if callable(to) else tuple(to)
    if not targets:
        raise ConfigurationError("fallback needs at least one function in to=")
    for target in targets:
        if not callable(target):
            raise ConfigurationError(f"{target!r} is not an async function")
    trigger = as_trigger(on)

    async def advice(call: Invocation[R]) -> R:
        try:
            return await call.proceed()
        except Exception as exc:
            failure = exc
        if not trigger(failure):
            raise failure
        reasons = [_reason(call.name, failure)]
        state = current_call()
        for target in targets:
            label = _function_name(target)
            try:
                result = await target(*call.args, **call.kwargs)
            except Exception as exc:
                reasons.append(_reason(label, exc))
                if not trigger(exc):
                    _note(state, None, reasons)
                    raise
                failure = exc
                continue
            _note(state, label, reasons)
            return result
        _note(state, None, reasons)
        raise failure

    return around(advice)

"""The structured call: ask, validate, re-ask; and the ``structured_output`` decorator.

One structured call is ONE call: one ``CallState`` (so one record), whose attempts
are the model calls. Each model call, the first and every re-ask, goes through every
layer of the Guard, so budgets, retries and records see each of them; the Guard's
total deadline spans them all.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, cast, overload

from .._clock import SystemClock
from .._errors import ConfigurationError, OutputValidationError, Refusal
from .._pipeline import AttemptRecorder, run_complete
from .._providers.function import FunctionProvider
from .._state import _CURRENT_CALL
from .._types import Request, Response
from .reask import InvalidOutput, prepare, reask
from .types import (
    OutputMode,
    OutputSchema,
    StructuredMode,
    T,
    ValidatesJSON,
    check_options,
    resolve_mode,
)

if TYPE_CHECKING:
    from .._clock import Clock
    from .._layer import Handler, Provider
    from .schema import OutputSpec

__all__ = ["Judge", "StructuredOutput", "run_structured", "structured_output"]

P = ParamSpec("P")
_CLOCK = SystemClock()
_NO_REQUEST = Request(model="", messages=())


class Judge(Generic[T]):
    """The re-ask bookkeeping of one call: judges each answer, keeps every failure."""

    __slots__ = ("failures", "feedback", "retries", "spec", "value")

    def __init__(self, spec: OutputSpec[T], retries: int, *, feedback: bool = True) -> None:
        self.spec = spec
        self.retries = retries
        self.feedback = feedback
        self.failures: list[tuple[str, str]] = []
        self.value: T | None = None

    def judge(self, request: Request, response: Response) -> Request | None:
        """``None`` when the answer is valid (``value`` holds it); else the request of
        the re-ask. Raises ``Refusal`` (never re-asked) and, when no retry is left,
        ``OutputValidationError`` with every attempt."""
        if response.refusal:
            raise Refusal(response.refusal, provider=response.provider or None)
        try:
            self.value = self.spec.parse(response.text)
            return None
        except InvalidOutput as exc:
            error = exc.message
        if response.finish_reason == "length":
            error += "\n(the answer was cut off at the output token limit: keep it shorter)"
        self.failures.append((response.text, error))
        if len(self.failures) > self.retries:
            count = len(self.failures)
            raise OutputValidationError(
                f"the model's answer did not validate as {self.spec.name} in {count} "
                f"attempt{'s' if count != 1 else ''}; the last error: {error}",
                attempts=self.failures,
            )
        return reask(request, response.text, error) if self.feedback else request


async def ask_until_valid(
    handler: Handler, judge: Judge[T], request: Request
) -> tuple[T, Response]:
    """Call ``handler`` until an answer validates (or the judge gives up)."""
    while True:
        response = await handler(request)
        following = judge.judge(request, response)
        if following is None:
            return cast(T, judge.value), response
        request = following


def _spec(output_type: Any) -> OutputSpec[Any]:
    from .schema import output_spec

    return output_spec(output_type)


async def run_structured(
    handler: Handler,
    output_type: type[T] | ValidatesJSON[T],
    request: Request,
    *,
    retries: int,
    mode: StructuredMode,
    provider: Provider,
    clock: Clock,
    total_s: float | None,
) -> T:
    """``guard.structured``: the whole call as the owner of its call state."""
    check_options(retries, mode)
    spec: OutputSpec[T] = _spec(output_type)
    used = resolve_mode(mode, provider, request.model, spec.schema)
    judge = Judge(spec, retries)
    box: list[T] = []

    async def loop(first: Request) -> Response:
        value, response = await ask_until_valid(handler, judge, first)
        box.append(value)
        return response

    await run_complete(
        loop,
        prepare(request, spec.schema, used),
        provider=provider.name,
        clock=clock,
        total_s=total_s,
    )
    return box[0]


def structured_output(
    output_type: type[T] | ValidatesJSON[T],
    /,
    *,
    retries: int = 2,
    mode: StructuredMode = "auto",
) -> StructuredOutput[T]:
    """Decorate a model call so it returns a validated ``output_type`` instance.

    It decorates an ``async def (Request) -> Response`` (the request gets the schema,
    a rejected answer is re-asked with its errors) or any ``async def`` returning the
    model's text (a rejected answer is asked for again with the same arguments). See
    docs/structured-output.md.

    >>> # @structured_output(Invoice)
    >>> # async def extract(request: Request) -> Response: ...
    """
    return StructuredOutput(output_type, retries=retries, mode=mode)


class StructuredOutput(Generic[T]):
    """The decorator ``structured_output(...)`` returns; ``schema`` is its ``OutputSchema``."""

    __slots__ = ("_mode", "_retries", "_spec")

    def __init__(
        self, output_type: type[T] | ValidatesJSON[T], *, retries: int, mode: StructuredMode
    ) -> None:
        check_options(retries, mode)
        self._spec: OutputSpec[T] = _spec(output_type)
        # No provider to ask: "auto" is JSON mode, as for any provider that does not say.
        self._mode: OutputMode = resolve_mode(mode, None, "", self._spec.schema)
        self._retries = retries

    @property
    def schema(self) -> OutputSchema:
        """The schemas and instructions used (put ``schema.instructions`` in your own
        prompt when decorating a function that builds it)."""
        return self._spec.schema

    @overload
    def __call__(
        self, function: Callable[[Request], Awaitable[Response]], /
    ) -> Callable[[Request], Coroutine[Any, Any, T]]: ...

    @overload
    def __call__(
        self, function: Callable[P, Awaitable[str]], /
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...

    def __call__(self, function: Callable[..., Awaitable[Any]], /) -> Callable[..., Any]:
        if not callable(function):
            raise ConfigurationError(f"{function!r} is not callable")
        spec, retries, mode = self._spec, self._retries, self._mode
        name = getattr(function, "__qualname__", None) or "structured_output"

        @functools.wraps(function)
        async def wrapper(*args: Any, **kwargs: Any) -> T:
            with_request = len(args) == 1 and not kwargs and isinstance(args[0], Request)

            async def call(request: Request) -> Response:
                result = await (function(request) if with_request else function(*args, **kwargs))
                return _as_response(result, name)

            first = prepare(args[0], spec.schema, mode) if with_request else _NO_REQUEST
            recorder = AttemptRecorder(FunctionProvider(call, name=name), _CLOCK)
            judge = Judge(spec, retries, feedback=with_request)
            box: list[T] = []

            async def loop(request: Request) -> Response:
                value, response = await ask_until_valid(recorder.complete, judge, request)
                box.append(value)
                return response

            if _CURRENT_CALL.get() is not None:
                await loop(first)
            else:
                await run_complete(loop, first, provider=name, clock=_CLOCK, total_s=None)
            return box[0]

        return wrapper

    def __repr__(self) -> str:
        return f"structured_output({self._spec.name}, retries={self._retries}, mode={self._mode!r})"


def _as_response(result: object, name: str) -> Response:
    if isinstance(result, Response):
        return result
    if isinstance(result, str):
        return Response(text=result)
    raise ConfigurationError(
        f"{name} is decorated with structured_output, so it must return the model's text "
        f"(a str) or a Response, not {type(result).__name__}"
    )

"""``Guard``: a provider plus an ordered, frozen stack of layers, and the verbs users call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, LiteralString, TypedDict, Unpack

from ._clock import Clock, SystemClock
from ._errors import ConfigurationError
from ._guard_stream import GuardStream
from ._layer import Layer, Provider
from ._pipeline import AttemptRecorder, compose, compose_stream, run_complete
from ._timeouts import Bound
from ._tools._limits import DEFAULT_MAX_STEPS
from ._types import Message, Request, Response, ToolSpec

if TYPE_CHECKING:
    # Tools and structured output load when first used: ``import llmguard`` stays fast.
    from ._output.stream import StructuredStream
    from ._output.types import StructuredMode, T, ValidatesJSON
    from ._sync import SyncGuard
    from ._tools.decorator import Tool
    from ._tools.loop import ToolRunOptions
    from ._tools.results import ToolRunResult
    from ._tools.stream import ToolLoopStream
    from ._tools.toolbox import Toolbox

__all__ = ["Guard", "RequestOptions"]

DEFAULT_TIMEOUT_S = 30.0


class RequestOptions(TypedDict, total=False):
    """Keyword options every verb takes to build its ``Request`` (see ``Request.create``).

    ``system`` is a ``LiteralString``: user text goes in ``user=`` or ``messages=``.
    """

    model: str
    system: LiteralString
    user: str
    messages: Sequence[Message]
    tools: Sequence[ToolSpec]
    tool_choice: str | Mapping[str, Any]
    response_format: Mapping[str, Any]
    temperature: float
    top_p: float
    max_output_tokens: int
    stop: Sequence[str]
    seed: int
    extras: Mapping[str, Any]


def _default_stack(
    pseudonymize: Layer | None,
    telemetry: Layer | None,
    observe: Layer | bool,
    cache: Layer | None,
    budget: Layer | None,
    fallback: Layer | None,
    breaker: Layer | None,
    retry: Layer | None,
    deadlines: Layer | None,
) -> list[Layer]:
    """The keyword layers in the default order (docs/concepts.md says why): pseudonymize
    → telemetry → observe → cache → budget → fallback → breaker → retry → deadlines →
    provider."""
    stack: list[Layer] = [layer for layer in (pseudonymize, telemetry) if layer is not None]
    if observe is True:
        from ._layers.observe import Observe

        stack.append(Observe())
    elif observe is not False:
        stack.append(observe)
    stack.extend(layer for layer in (cache, budget, fallback, breaker, retry, deadlines) if layer)
    return stack


class Guard:
    """A provider wrapped in layers. The first layer listed is the outermost.

    >>> from llmguard.testing import FakeProvider
    >>> guard = Guard(FakeProvider(["hi"]), model="fake-model")

    Instead of ``layers``, the keywords ``pseudonymize``, ``telemetry``, ``observe``,
    ``cache``, ``budget``,
    ``fallback``, ``breaker``, ``retry`` and ``deadlines`` give the layers by role,
    stacked in the default order: pseudonymize (a ``Pseudonymize`` layer, so no layer
    sees the real user) → telemetry (an ``OpenTelemetry`` layer) → observe
    (``True`` for a default ``Observe()``) → cache → budget → fallback → breaker → retry
    → deadlines → provider.

    Args:
        provider: what answers (``OpenAIProvider``, ``FunctionProvider``, ``FakeProvider``).
        layers: the layers, outermost first; frozen once the Guard is built.
        model: the default model for requests built from keyword options.
        timeout: the total deadline of one call in seconds, spanning every layer,
            retry and fallback inside it; ``None`` switches it off. Raises
            ``DeadlineExceeded``.
        clock: where records read time (default ``SystemClock``: ``time.monotonic``).
    """

    __slots__ = (
        "__weakref__",
        "_clock",
        "_complete",
        "_layers",
        "_model",
        "_provider",
        "_provider_name",
        "_stream",
        "_sync",
        "_timeout",
        "_total",
    )

    def __init__(
        self,
        provider: Provider,
        layers: Sequence[Layer] = (),
        *,
        model: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        clock: Clock | None = None,
        pseudonymize: Layer | None = None,
        telemetry: Layer | None = None,
        observe: Layer | bool = False,
        cache: Layer | None = None,
        budget: Layer | None = None,
        fallback: Layer | None = None,
        breaker: Layer | None = None,
        retry: Layer | None = None,
        deadlines: Layer | None = None,
    ) -> None:
        named = _default_stack(
            pseudonymize, telemetry, observe, cache, budget, fallback, breaker, retry, deadlines
        )
        if named:
            if layers:
                raise ConfigurationError(
                    "pass layers=[...] in your own order, or the keyword layers (telemetry=, "
                    "observe=, cache=, budget=, ...) in the default order, not both"
                )
            layers = named
        if not isinstance(provider, Provider):
            raise ConfigurationError(
                f"{provider!r} is not a provider: it needs a name, complete() and stream(); "
                "wrap a plain async function in FunctionProvider"
            )
        for layer in layers:
            if not isinstance(layer, Layer):
                raise ConfigurationError(
                    f"{layer!r} is not a layer: it needs complete(request, call_next) "
                    "and stream(request, call_next)"
                )
        if timeout is not None and not timeout > 0:
            raise ConfigurationError(
                f"timeout must be a positive number of seconds or None, not {timeout!r}"
            )
        self._provider = provider
        self._provider_name = provider.name
        self._layers = tuple(layers)
        self._model = model
        self._timeout = timeout
        self._total = None if timeout is None else Bound(timeout)
        self._clock: Clock = clock or SystemClock()
        bottom = AttemptRecorder(provider, self._clock)
        self._complete = compose(self._layers, bottom.complete)
        self._stream = compose_stream(self._layers, bottom.stream)
        self._sync: SyncGuard | None = None

    @property
    def provider(self) -> Provider:
        """The provider at the bottom of the stack."""
        return self._provider

    @property
    def layers(self) -> tuple[Layer, ...]:
        """The layers, outermost first."""
        return self._layers

    @property
    def timeout(self) -> float | None:
        """The total deadline of one call, in seconds (``None``: off)."""
        return self._timeout

    def build_request(
        self, request: Request | None = None, /, **options: Unpack[RequestOptions]
    ) -> Request:
        """The ``Request`` a verb would send: ``request`` as is, or one built from options."""
        if request is not None:
            if options:
                raise TypeError("pass either a Request or keyword options, not both")
            return request
        if "model" not in options:
            if self._model is None:
                raise ConfigurationError("no model: pass model= to the call or to Guard(...)")
            options["model"] = self._model
        return Request.create(**options)

    async def complete(
        self, request: Request | None = None, /, **options: Unpack[RequestOptions]
    ) -> Response:
        """Send a request through every layer and return the response.

        >>> # response = await guard.complete(user="Hello")
        """
        built = self.build_request(request, **options)
        return await run_complete(
            self._complete,
            built,
            provider=self._provider_name,
            clock=self._clock,
            total_s=self._timeout,
            total=self._total,
        )

    def stream(
        self, request: Request | None = None, /, **options: Unpack[RequestOptions]
    ) -> GuardStream:
        """Open a guarded stream: ``async with guard.stream(user="Hi") as events``.

        Entering runs every check that can refuse before anything is sent; leaving
        always closes the upstream request. ``events.response`` is what the events
        added up to.
        """
        built = self.build_request(request, **options)
        return GuardStream(
            self._stream,
            built,
            provider=self._provider_name,
            clock=self._clock,
            timeout=self._timeout,
        )

    async def run_tools(
        self,
        request: Request | None = None,
        /,
        *,
        tools: Toolbox | Sequence[Tool[..., Any]],
        max_steps: int = DEFAULT_MAX_STEPS,
        **options: Unpack[ToolRunOptions],
    ) -> ToolRunResult:
        """Run the tool loop: call the model with ``tools``, run what it asks for (only
        tools in the allowlist, only with valid arguments), feed the results back, until
        it answers without tool calls. More than ``max_steps`` model calls raise
        ``ToolLoopLimit``. One call state (one record) spans the loop; every model call
        goes through every layer, each under the Guard's ``timeout``. See docs/tools.md.
        """
        built = self.build_request(request, **options)
        from ._tools.loop import as_toolbox, run_tool_loop

        return await run_tool_loop(
            self._complete,
            built,
            as_toolbox(tools),
            max_steps,
            provider=self._provider_name,
            clock=self._clock,
            deadline_s=self._timeout,
        )

    def run_tools_stream(
        self,
        request: Request | None = None,
        /,
        *,
        tools: Toolbox | Sequence[Tool[..., Any]],
        max_steps: int = DEFAULT_MAX_STEPS,
        **options: Unpack[ToolRunOptions],
    ) -> ToolLoopStream:
        """The tool loop as a stream: ``async with guard.run_tools_stream(...) as events``
        yields the model's events and ``ToolStarted``/``ToolFinished`` as they happen;
        ``events.result`` holds the ``ToolRunResult`` once the loop ended.
        """
        built = self.build_request(request, **options)
        from ._tools.loop import as_toolbox
        from ._tools.stream import ToolLoopStream

        return ToolLoopStream(
            self._stream,
            built,
            as_toolbox(tools),
            max_steps,
            provider=self._provider_name,
            clock=self._clock,
            timeout=self._timeout,
        )

    async def structured(
        self,
        output_type: type[T] | ValidatesJSON[T],
        request: Request | None = None,
        /,
        *,
        retries: int = 2,
        mode: StructuredMode = "auto",
        **options: Unpack[RequestOptions],
    ) -> T:
        """Ask for an ``output_type`` instance (a pydantic model, ``list[Item]``, a
        ``TypeAdapter``…) and return it validated.

        ``mode="auto"`` uses the provider's strict JSON-schema mode when the provider
        and the schema allow it, else JSON mode (``"prompt"``: instructions only). An
        answer that fails validation is re-asked with its errors, up to ``retries``
        times, then ``OutputValidationError`` holds every attempt; a refusal raises
        ``Refusal`` at once. One call, one record: every attempt goes through every
        layer and counts. See docs/structured-output.md.
        """
        built = self.build_request(request, **options)
        from ._output.structured import run_structured

        return await run_structured(
            self._complete,
            output_type,
            built,
            retries=retries,
            mode=mode,
            provider=self._provider,
            clock=self._clock,
            total_s=self._timeout,
        )

    def structured_stream(
        self,
        output_type: type[T] | ValidatesJSON[T],
        request: Request | None = None,
        /,
        *,
        retries: int = 2,
        mode: StructuredMode = "auto",
        **options: Unpack[RequestOptions],
    ) -> StructuredStream[T]:
        """``async with guard.structured_stream(Model, user=...) as partials``: partial
        objects while the JSON streams in, then the validated instance (also in
        ``partials.result``). Same modes, re-asks and errors as ``structured``.
        """
        built = self.build_request(request, **options)
        from ._output.stream import StructuredStream

        return StructuredStream(
            self._stream,
            output_type,
            built,
            retries=retries,
            mode=mode,
            provider=self._provider,
            clock=self._clock,
            timeout=self._timeout,
        )

    @property
    def sync(self) -> SyncGuard:
        """The same verbs as blocking calls, for Flask, Django sync views and scripts."""
        sync = self._sync
        if sync is None:
            from ._sync import SyncGuard

            sync = self._sync = SyncGuard(self)
        return sync

    def __repr__(self) -> str:
        layers = ", ".join(type(layer).__name__ for layer in self._layers)
        return f"Guard({self._provider_name!r}, layers=[{layers}], timeout={self._timeout!r})"

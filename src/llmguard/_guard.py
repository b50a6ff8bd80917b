"""``Guard``: a provider plus an ordered, frozen stack of layers, and the verbs users call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, LiteralString, TypedDict, Unpack

from ._clock import Clock, SystemClock
from ._errors import ConfigurationError
from ._layer import Layer, Provider
from ._pipeline import AttemptRecorder, GuardStream, compose, compose_stream, run_complete
from ._types import Message, Request, Response, ToolSpec

if TYPE_CHECKING:
    from ._sync import SyncGuard

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


class Guard:
    """A provider wrapped in layers. The first layer listed is the outermost.

    >>> from llmguard.testing import FakeProvider
    >>> guard = Guard(FakeProvider(["hi"]), model="fake-model")

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
    )

    def __init__(
        self,
        provider: Provider,
        layers: Sequence[Layer] = (),
        *,
        model: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        clock: Clock | None = None,
    ) -> None:
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

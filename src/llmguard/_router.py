"""``Router``: pick the model for each call from rules, instead of one model for everything.

A classification or an extraction rarely needs the largest model; a long document may
need a model with a large context window; a call with tools needs a model that is good
at them. ``Router`` rewrites the request's model (and, optionally, its provider) from
the first ``Route`` whose conditions all hold. Put it before (outside) ``Fallback``:
the fallback chain then applies to whatever model the route chose.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType

from ._assemble import estimate_usage
from ._context import CallContext, current_context
from ._errors import ConfigurationError
from ._layer import BaseLayer, EventStream, Handler, Provider, StreamHandler, StreamOpener
from ._state import current_call
from ._targets import ROUTED_PROVIDER, route_to
from ._types import Request, Response, StreamEvent

__all__ = ["Route", "Router"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """Send matching calls to ``model`` (on ``provider``, if given).

    A route matches when every condition given holds:

    - ``tags``: the call's context (``llmguard.context(tags=...)``) carries one of them;
    - ``when``: a predicate on the request;
    - ``min_input_tokens`` / ``max_input_tokens``: bounds on the estimated size of the
      prompt (4 characters a token, as ``estimate_usage`` counts);
    - ``tools``: the request offers tools (``True``) or none (``False``);
    - ``structured``: the request asks for a ``response_format`` (or not).

    ``adapt`` rewrites the request for this model; ``name`` is how records call the
    route (default: the model name).

    >>> cheap = Route(model="gpt-4o-mini", tags={"classify", "extract"})
    """

    model: str
    tags: Collection[str] = ()
    when: Callable[[Request], bool] | None = None
    min_input_tokens: int | None = None
    max_input_tokens: int | None = None
    tools: bool | None = None
    structured: bool | None = None
    provider: Provider | None = None
    adapt: Callable[[Request], Request] | None = None
    name: str | None = None
    _tags: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigurationError("a Route needs a model")
        if isinstance(self.tags, str):
            raise ConfigurationError(f"tags= is a collection of tags, not the string {self.tags!r}")
        if self.provider is not None and not isinstance(self.provider, Provider):
            raise ConfigurationError(f"{self.provider!r} is not a provider")
        for bound in (self.min_input_tokens, self.max_input_tokens):
            if bound is not None and bound < 0:
                raise ConfigurationError(f"token bounds must be >= 0, not {bound!r}")
        object.__setattr__(self, "_tags", frozenset(self.tags))

    @property
    def label(self) -> str:
        """The route's name in records."""
        return self.name or self.model

    @property
    def needs_size(self) -> bool:
        """Whether matching needs the prompt's estimated size."""
        return self.min_input_tokens is not None or self.max_input_tokens is not None

    def matches(self, request: Request, context: CallContext, input_tokens: int) -> bool:
        """Whether this route applies (``input_tokens``: the estimate, when needed)."""
        if self._tags and self._tags.isdisjoint(context.tags):
            return False
        if self.tools is not None and bool(request.tools) != self.tools:
            return False
        if self.structured is not None and (request.response_format is not None) != self.structured:
            return False
        if self.min_input_tokens is not None and input_tokens < self.min_input_tokens:
            return False
        if self.max_input_tokens is not None and input_tokens > self.max_input_tokens:
            return False
        return self.when is None or bool(self.when(request))


class Router(BaseLayer):
    """Picks the model per call: the first matching ``Route`` wins.

    With no route matching, the request goes on with ``default`` as its model, or
    unchanged when ``default`` is ``None``. A route overrides the model the request
    came with (the Guard's default or one given to the call). The route taken is
    noted in the call state (``CallState.extra["route"]``); the record's ``model`` is
    the one that answered.

    >>> router = Router([Route(model="gpt-4o-mini", tags={"classify"})], default="gpt-4o")
    """

    __slots__ = ("_default", "_routes", "_sized")

    def __init__(self, routes: Sequence[Route], *, default: str | None = None) -> None:
        for route in routes:
            if not isinstance(route, Route):
                raise ConfigurationError(f"{route!r} is not a Route")
        if not routes and default is None:
            raise ConfigurationError("Router needs routes or a default model")
        self._routes = tuple(routes)
        self._default = default
        self._sized = any(route.needs_size for route in self._routes)

    @property
    def routes(self) -> tuple[Route, ...]:
        """The routes, in the order they are tried."""
        return self._routes

    def pick(self, request: Request) -> Route | None:
        """The route ``request`` takes here (``None``: no route matches)."""
        context = current_context()
        tokens = estimate_usage(request, 0).input_tokens if self._sized else 0
        for route in self._routes:
            if route.matches(request, context, tokens):
                return route
        return None

    def _apply(self, request: Request) -> tuple[Request, Provider | None]:
        route = self.pick(request)
        state = current_call()
        if route is None:
            if self._default is None or self._default == request.model:
                return request, None
            if state is not None:
                state.extra["route"] = "default"
            return replace(request, model=self._default), None
        if state is not None:
            state.extra["route"] = route.label
        if route.model != request.model:
            request = replace(request, model=route.model)
        if route.adapt is not None:
            request = route.adapt(request)
        return request, route.provider

    async def complete(self, request: Request, call_next: Handler) -> Response:
        """Rewrite the model from the first matching route and call inward."""
        routed, provider = self._apply(request)
        if provider is None:
            return await call_next(routed)
        with route_to(provider):
            return await call_next(routed)

    def stream(self, request: Request, call_next: StreamHandler) -> StreamOpener:
        """The same for streams."""
        routed, provider = self._apply(request)
        if provider is None:
            return call_next(routed)
        return _RoutedStream(provider, routed, call_next)

    def __repr__(self) -> str:
        return f"Router({[route.label for route in self._routes]!r}, default={self._default!r})"


class _RoutedStream:
    """A stream whose opening and reading happen with calls routed to ``provider``
    (a retry inside may open it again while the first event is awaited)."""

    __slots__ = ("_call_next", "_events", "_opener", "_provider", "_request")

    def __init__(self, provider: Provider, request: Request, call_next: StreamHandler) -> None:
        self._provider = provider
        self._request = request
        self._call_next = call_next
        self._opener: StreamOpener | None = None
        self._events: EventStream | None = None

    async def __aenter__(self) -> _RoutedStream:
        with route_to(self._provider):
            opener = self._call_next(self._request)
            self._events = await opener.__aenter__()
        self._opener = opener
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        opener, self._opener = self._opener, None
        if opener is None:
            return False
        return bool(await opener.__aexit__(exc_type, exc, tb))

    def __aiter__(self) -> _RoutedStream:
        return self

    async def __anext__(self) -> StreamEvent:
        assert self._events is not None, "iterate inside `async with`"
        token = ROUTED_PROVIDER.set(self._provider)
        try:
            return await self._events.__anext__()
        finally:
            ROUTED_PROVIDER.reset(token)

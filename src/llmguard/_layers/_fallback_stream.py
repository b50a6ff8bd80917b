"""The streaming path of ``Fallback``: switch target until the first event."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from .._assemble import events_from_response
from .._layer import EventStream, Handler, StreamHandler, StreamOpener
from .._state import current_call
from .._targets import ROUTED_PROVIDER, route_to
from .._types import Request, StreamEvent
from ._fallback_labels import _note, _provider_name, _reason
from ._switching import SwitchingStream

if TYPE_CHECKING:
    from .fallback import Fallback, FallbackTarget


class _FallbackStream(SwitchingStream):
    """The primary's stream, or the first target's that opens and sends an event."""

    __slots__ = ("_call_next", "_index", "_label", "_layer", "_reasons", "_request", "_state")

    def __init__(self, layer: Fallback, request: Request, call_next: StreamHandler) -> None:
        super().__init__()
        self._layer = layer
        self._request = request
        self._call_next = call_next
        self._index = -1  # -1: the primary
        self._reasons: list[str] = []
        self._state = current_call()
        self._label = ""

    def _target(self) -> FallbackTarget | None:
        return None if self._index < 0 else self._layer._targets[self._index]

    async def _open(self) -> tuple[StreamOpener, EventStream]:
        target = self._target()
        if target is None:
            self._label = f"{_provider_name(None)}/{self._request.model}"
            opener = self._call_next(self._request)
            return opener, await opener.__aenter__()
        self._label = target.label(self._request)
        prepared = target.prepare(self._request)
        if target.function is not None:
            opener = self._function_stream(target.function, prepared)
            return opener, await opener.__aenter__()
        with route_to(target.provider):
            opener = self._call_next(prepared)
            return opener, await opener.__aenter__()

    @asynccontextmanager
    async def _function_stream(
        self, function: Handler, request: Request
    ) -> AsyncIterator[EventStream]:
        response = await self._layer._call_function(function, request, self._label, self._state)
        yield _replay(events_from_response(response))

    async def _read_first(self, events: EventStream) -> StreamEvent:
        target = self._target()
        if target is None or target.provider is None:
            return await events.__anext__()
        token = ROUTED_PROVIDER.set(target.provider)  # a retry inside may open it again
        try:
            return await events.__anext__()
        finally:
            ROUTED_PROVIDER.reset(token)

    async def _recover(self, failure: Exception) -> None:
        self._reasons.append(_reason(self._label, failure))
        if not self._layer._on(failure) or self._index + 1 >= len(self._layer._targets):
            _note(self._state, None, self._reasons)
            raise failure
        self._index += 1

    def _committed(self) -> None:
        if self._index >= 0 or self._reasons:
            _note(self._state, self._label if self._index >= 0 else None, self._reasons)


async def _replay(events: list[StreamEvent]) -> AsyncIterator[StreamEvent]:
    for event in events:
        yield event

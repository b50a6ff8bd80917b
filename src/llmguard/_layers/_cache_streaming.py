"""The streaming path of the ``Cache`` layer: replay a stored answer as a stream, or
record a live one and store it once it completed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio

from .._cache_codec import CachedAnswer
from .._cache_core import Lead, current_options
from .._cache_stream import Recording, Replay, events_of
from .._layer import EventStream, StreamHandler
from .._state import current_call
from .._types import Request
from ._cache_labels import _hit, _label

if TYPE_CHECKING:
    from .cache import Cache


@asynccontextmanager
async def open_stream(
    cache: Cache, request: Request, call_next: StreamHandler
) -> AsyncIterator[EventStream]:
    """``Cache.stream``: replay a stored answer, or record a live one and store it once
    it completed (a cut, errored or abandoned stream is never stored)."""
    state = current_call()
    options = current_options()
    plan = cache._plan(request, state, options)
    if plan is None:
        _label(state, "bypass")
        async with call_next(request) as events:
            yield events
        return
    key, scope = plan
    refresh = options.refresh
    status = "refresh" if refresh else "miss"
    _label(state, status)
    got = await cache._core.acquire(key, cache._decode, refresh=refresh)
    if isinstance(got, tuple):
        yield _replay(cache, _hit(state, got[0], got[1]))
        return
    lead: Lead[CachedAnswer] = got
    recording: Recording | None = None
    error: BaseException | None = None
    vector = partition = None
    try:
        found, vector, partition = await cache._semantic_lookup(request, scope, state)
        if found is not None:
            lead.share(found)
            yield _replay(cache, _hit(state, found, "semantic"))
            return
        _label(state, status)
        async with call_next(request) as events:
            recording = Recording(events)
            yield recording
    except BaseException as exc:
        error = exc
        if recording is None or recording.error is exc:
            lead.fail(exc)  # the upstream's error; the consumer's own stays its own
        raise
    finally:
        try:
            if recording is not None and recording.complete:
                answer = recording.answer(
                    model=request.model, provider=state.provider if state else ""
                )
                lead.share(answer)
                if not isinstance(error, anyio.get_cancelled_exc_class()):
                    await cache._save(key, request, answer, vector, partition)
        finally:
            await lead.close()


def _replay(cache: Cache, answer: CachedAnswer) -> Replay:
    return Replay(events_of(answer), clock=cache._clock, delay=cache._replay_delay)

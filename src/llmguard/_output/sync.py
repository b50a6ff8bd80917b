"""The blocking side of structured output, used by ``guard.sync.structured(_stream)``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Generic

from anyio.from_thread import BlockingPortal

from .._cache_core import CacheOptions, use_options
from .._context import CallContext, _use
from .._types import Request
from .stream import StructuredPartials, StructuredStream
from .types import StructuredMode, T, ValidatesJSON

if TYPE_CHECKING:
    from .._guard import Guard

__all__ = ["SyncPartials", "structured_in", "structured_stream_in"]


class SyncPartials(Generic[T]):
    """A blocking iterator over a structured stream's partials, then the validated
    instance (``result`` once the call succeeded)."""

    __slots__ = ("_partials", "_portal")

    def __init__(self, portal: BlockingPortal, partials: StructuredPartials[T]) -> None:
        self._portal = portal
        self._partials = partials

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return self._portal.call(self._partials.__anext__)
        except StopAsyncIteration:
            raise StopIteration from None

    @property
    def result(self) -> T | None:
        """The validated instance once the call succeeded, else ``None``."""
        return self._partials.result

    @property
    def attempt(self) -> int:
        """The attempt being streamed (1 for the first answer)."""
        return self._partials.attempt


async def structured_in(
    guard: Guard,
    ctx: CallContext,
    cache: CacheOptions,
    output_type: type[T] | ValidatesJSON[T],
    request: Request,
    retries: int,
    mode: StructuredMode,
) -> T:
    with _use(ctx), use_options(cache):
        return await guard.structured(output_type, request, retries=retries, mode=mode)


@asynccontextmanager
async def structured_stream_in(
    opened: StructuredStream[T], ctx: CallContext, cache: CacheOptions
) -> AsyncIterator[StructuredPartials[T]]:
    # Each read runs in its own portal task, so the deadline goes with each read.
    with _use(ctx), use_options(cache):
        async with opened._deadline_per_read() as partials:
            yield partials

"""``@llmguard.cache(key=..., ttl=...)``: the cache for any ``async def``.

Built on ``around``: the same store access, single flight, cross-process lock and
per-call options as the ``Cache`` layer. Values go through a ``CacheCodec`` (default
``JSONCodec``); the key is the function's module and name, the scope, and what
``key`` returns for the call's arguments (default: the arguments themselves), as
canonical JSON, hashed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from ._cache_codec import CacheCodec, JSONCodec
from ._cache_core import UNSET, CacheCore, Lead, current_options, default_store
from ._cache_key import (
    KEY_FORMAT,
    Scope,
    UncacheableRequest,
    canonical_json,
    check_scope,
    scope_of,
)
from ._clock import Clock, SystemClock
from ._context import current_context
from ._errors import ConfigurationError
from ._layers.cache import DEFAULT_MAX_VALUE_BYTES, DEFAULT_TTL, check_ttl
from ._state import CallState, current_call
from ._stores._roles import CacheStore, StoreErrorPolicy
from ._wrap import Invocation, around

__all__ = ["cache"]

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger("llmguard.cache")

_HEADER = b"D"  # a decorator value, envelope version 1


class _Shared:
    """What a leader hands to the callers waiting on it: the encoded value when it
    has one (each caller decodes its own copy), else the value itself."""

    __slots__ = ("data", "value")

    def __init__(self, value: Any, data: bytes | None) -> None:
        self.value = value
        self.data = data


def cache(
    *,
    key: Callable[..., object] | None = None,
    ttl: float | None = DEFAULT_TTL,
    store: CacheStore | None = None,
    namespace: str = "llmguard",
    version: str = "1",
    scope: Scope = None,
    codec: CacheCodec[Any] | None = None,
    store_if: Callable[[Any], bool] | None = None,
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    single_flight: bool = True,
    lock: bool = False,
    lock_ttl: float = 30.0,
    lock_poll: float = 0.05,
    on_store_error: StoreErrorPolicy = "open",
    store_retry: float = 1.0,
    clock: Clock | None = None,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Cache the results of any ``async def`` (see docs/caching.md).

    >>> @cache(key=lambda query, k: [query.lower(), k], ttl=600)
    ... async def search(query: str, k: int) -> list[str]:
    ...     return [query] * k

    Args:
        key: a function of the call's arguments returning what identifies the
            answer (anything canonical JSON can express); default: the arguments.
        codec: turns values into bytes and back (default ``JSONCodec()``; for typed
            values ``PydanticCodec(list[Hit])``).
        store_if: decides which results are stored (default: every result).

    The other arguments are those of the ``Cache`` layer. Raised errors are never
    stored; concurrent identical calls share one call, and its error.
    """
    check_ttl(ttl)
    check_scope(scope)
    if max_value_bytes < 1:
        raise ConfigurationError("max_value_bytes must be at least 1")
    if key is not None and not callable(key):
        raise ConfigurationError(f"key must be a function of the call's arguments, not {key!r}")
    chosen: CacheCodec[Any] = JSONCodec() if codec is None else codec
    if not isinstance(chosen, CacheCodec):
        raise ConfigurationError(f"{chosen!r} is not a CacheCodec: it needs encode and decode")
    core = CacheCore(
        default_store() if store is None else store,
        clock=clock or SystemClock(),
        on_store_error=on_store_error,
        single_flight=single_flight,
        lock=lock,
        lock_ttl=lock_ttl,
        lock_poll=lock_poll,
        store_retry=store_retry,
    )
    cached = _FunctionCache(
        core,
        key=key,
        ttl=ttl,
        prefix=f"{namespace}:{version}:{KEY_FORMAT}:fn:",
        scope=scope,
        codec=chosen,
        store_if=store_if,
        max_value_bytes=max_value_bytes,
    )

    def decorate(function: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        if not callable(function):
            raise ConfigurationError(f"{function!r} is not callable")
        name = f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', '')}"

        async def advice(call: Invocation[R]) -> R:
            result: R = await cached.run(name, call)
            return result

        return around(advice)(function)

    return decorate


class _FunctionCache:
    """One ``@cache(...)``'s configuration and the call path (shared by the functions
    it decorates; their keys differ by the function's name)."""

    __slots__ = (
        "_codec",
        "_core",
        "_key",
        "_max_value_bytes",
        "_prefix",
        "_scope",
        "_store_if",
        "_ttl",
        "_warned",
    )

    def __init__(
        self,
        core: CacheCore,
        *,
        key: Callable[..., object] | None,
        ttl: float | None,
        prefix: str,
        scope: Scope,
        codec: CacheCodec[Any],
        store_if: Callable[[Any], bool] | None,
        max_value_bytes: int,
    ) -> None:
        self._core = core
        self._key = key
        self._ttl = ttl
        self._prefix = prefix
        self._scope = scope
        self._codec = codec
        self._store_if = store_if
        self._max_value_bytes = max_value_bytes
        self._warned = False

    def decode(self, data: bytes) -> _Shared | None:
        if data[:1] != _HEADER:
            return None
        try:
            return _Shared(self._codec.decode(data[1:]), data)
        except Exception:
            return None

    def encode(self, value: Any) -> bytes | None:
        if self._store_if is not None and not self._store_if(value):
            return None
        try:
            return _HEADER + self._codec.encode(value)
        except (TypeError, ValueError) as exc:
            if not self._warned:
                self._warned = True
                logger.warning("llmguard: a result was not cached: %s", exc)
            return None

    def key_of(self, name: str, call: Invocation[Any]) -> str | None:
        ok, scope_name = scope_of(self._scope, current_context())
        if not ok:
            return None
        key = self._key
        try:
            material = (
                [list(call.args), dict(call.kwargs)]
                if key is None
                else key(*call.args, **call.kwargs)
            )
            digest = hashlib.sha256(canonical_json([name, scope_name, material]))
        except UncacheableRequest as exc:
            logger.debug("llmguard: call not cached: %s", exc)
            return None
        return self._prefix + digest.hexdigest()

    async def run(self, name: str, call: Invocation[Any]) -> Any:
        state = current_call()
        options = current_options()
        found_key = self.key_of(name, call) if options.enabled else None
        if found_key is None:
            _label(state, "bypass")
            return await call.proceed()
        status = "refresh" if options.refresh else "miss"
        _label(state, status)  # also when a shared error comes back from a flight
        got = await self._core.acquire(found_key, self.decode, refresh=options.refresh)
        if isinstance(got, tuple):
            shared, tier = got
            _label(state, "hit", tier=tier)
            if tier == "flight" and shared.data is not None:
                # Each waiting caller gets its own copy of a mutable value.
                copy = self.decode(shared.data)
                if copy is not None:
                    return copy.value
            return shared.value
        lead: Lead[_Shared] = got
        try:
            _label(state, status)  # "bypass" if the store failed on the way
            result = await call.proceed()
            data = self.encode(result)
            lead.share(_Shared(result, data))
            if data is not None and len(data) <= self._max_value_bytes:
                ttl = self._ttl if options.ttl is UNSET else options.ttl
                await self._core.write(found_key, data, ttl)
            return result
        except BaseException as exc:
            lead.fail(exc)
            raise
        finally:
            await lead.close()


def _label(state: CallState | None, status: str, *, tier: str | None = None) -> None:
    if state is None:
        return
    if status != "hit" and "cache_store_error" in state.extra:
        status = "bypass"
    state.cache = status
    if tier is not None:
        state.extra["cache_tier"] = tier

"""``Cache``: answer repeated requests from a store (see docs/caching.md).

Sits outside the budget in the default stack: a hit costs nothing, so it needs no
budget. On a hit ``Response.cached`` is true, its ``cost_micros`` 0, and the call's
record says ``cache="hit"`` with no attempts (so zero usage); the response keeps the
original call's ``usage`` for reference.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from contextlib import suppress

from .._cache_codec import CachedAnswer, Serializer, decode_answer, encode_answer, msgpack_module
from .._cache_core import UNSET, CacheCore, CacheOptions, Lead, current_options, default_store
from .._cache_key import (
    IGNORED_EXTRAS,
    Scope,
    UncacheableRequest,
    canonical_json,
    check_scope,
    frozen_ignore,
    key_prefix,
    request_key,
    request_material,
    scope_of,
)
from .._clock import Clock, SystemClock
from .._context import CallContext, current_context
from .._errors import ConfigurationError
from .._layer import BaseLayer, Handler, StreamHandler, StreamOpener
from .._semantic import Semantic, SemanticIndex, as_vector, numpy_or_none
from .._state import CallState, current_call
from .._stores._roles import CacheStore, StoreErrorPolicy
from .._types import Request, Response
from ._cache_labels import _hit, _label
from ._cache_streaming import open_stream

__all__ = ["INCOMPLETE_FINISH_REASONS", "Cache"]

logger = logging.getLogger("llmguard.cache")

#: Finish reasons of answers that were cut short: never stored by default.
INCOMPLETE_FINISH_REASONS = frozenset(
    {"length", "max_tokens", "max_output_tokens", "content_filter", "incomplete", "error"}
)

DEFAULT_TTL = 3600.0
DEFAULT_MAX_VALUE_BYTES = 512 * 1024
_MEMO_ENTRIES = 256  # decoded answers kept, keyed by their stored bytes
_MEMO_MAX_BYTES = 16 * 1024  # larger values are decoded each time
_SCOPES_KEPT = 4096  # scope names remembered per (tenant, user)


class Cache(BaseLayer):
    """Answer a request from the cache when the same request was answered before.

    The key covers everything in the request that can change the answer (see
    docs/caching.md): model, messages, tools, tool choice, response format, sampling
    parameters, stop, seed, max tokens, every provider extra except the few in
    ``ignore_extras``, and the provider's name; plus ``namespace`` and ``version``.

    Args:
        store: a ``CacheStore`` (default: a new ``MemoryStore``, this process only).
        ttl: seconds an answer is kept (``None``: until evicted); per call with
            ``llmguard.cache_options(ttl=...)``.
        namespace: the first part of every key (several apps can share a store).
        version: the second part: change it to invalidate every entry at once.
        scope: who may share an entry: ``None`` (everyone), ``"tenant"``, ``"user"``, or
            a function of the ``CallContext`` returning a scope name. A call without
            the user/tenant its scope needs (or whose function returns ``None``) is
            not cached.
        ignore_extras: provider extras left out of the key (default ``IGNORED_EXTRAS``).
        cache_sampled: cache requests sampled at a temperature above 0 (or none set,
            the provider's default); ``False``: only ``temperature=0`` requests.
        store_if: decides which responses are stored (default: not cut short, see
            ``INCOMPLETE_FINISH_REASONS``, and not a refusal).
        max_value_bytes: larger encoded answers are not stored.
        single_flight: concurrent identical misses share one upstream call.
        lock: also take a short store lock, so processes sharing the store make one
            call between them (``lock_ttl``: the lock's life; a waiter waits at most
            two, the lock it found and its next holder's; ``lock_poll``: how often a
            waiting process looks for the value).
        on_store_error: ``"open"`` (default: go on uncached, one warning per outage) or
            ``"closed"`` (the store's error propagates).
        store_retry: after a store failure, seconds before the store is asked again.
        serializer: ``"json"`` (default) or ``"msgpack"`` (``llmguard[msgpack]``).
        semantic: the semantic tier (``Semantic(embed, threshold=...)``); off by default.
        replay_delay: seconds between the events of a replayed stream (default 0).
        clock: time for the lock waits, store retries, replay pacing and semantic
            expiry (default ``SystemClock``).
    """

    __slots__ = (
        "_cache_sampled",
        "_clock",
        "_core",
        "_embed_failing",
        "_ignore",
        "_index",
        "_max_value_bytes",
        "_memo",
        "_prefix",
        "_replay_delay",
        "_scope",
        "_scopes",
        "_semantic",
        "_serializer",
        "_store_if",
        "_ttl",
    )

    def __init__(
        self,
        store: CacheStore | None = None,
        *,
        ttl: float | None = DEFAULT_TTL,
        namespace: str = "llmguard",
        version: str = "1",
        scope: Scope = None,
        ignore_extras: Iterable[str] = IGNORED_EXTRAS,
        cache_sampled: bool = True,
        store_if: Callable[[Response], bool] | None = None,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        single_flight: bool = True,
        lock: bool = False,
        lock_ttl: float = 30.0,
        lock_poll: float = 0.05,
        on_store_error: StoreErrorPolicy = "open",
        store_retry: float = 1.0,
        serializer: Serializer = "json",
        semantic: Semantic | None = None,
        replay_delay: float = 0.0,
        clock: Clock | None = None,
    ) -> None:
        check_ttl(ttl)
        check_scope(scope)
        if serializer not in ("json", "msgpack"):
            raise ConfigurationError(f'serializer must be "json" or "msgpack", not {serializer!r}')
        if serializer == "msgpack":
            msgpack_module()
        if max_value_bytes < 1:
            raise ConfigurationError("max_value_bytes must be at least 1")
        if replay_delay < 0:
            raise ConfigurationError("replay_delay must not be negative")
        self._clock: Clock = clock or SystemClock()
        self._core = CacheCore(
            default_store() if store is None else store,
            clock=self._clock,
            on_store_error=on_store_error,
            single_flight=single_flight,
            lock=lock,
            lock_ttl=lock_ttl,
            lock_poll=lock_poll,
            store_retry=store_retry,
        )
        self._ttl = ttl
        self._prefix = key_prefix(namespace, version)
        self._scope = scope
        self._scopes: dict[tuple[str | None, str | None], tuple[bool, str | None]] = {}
        self._ignore = frozen_ignore(ignore_extras)
        self._cache_sampled = cache_sampled
        self._store_if = store_if
        self._max_value_bytes = max_value_bytes
        self._serializer: Serializer = serializer
        self._semantic = semantic
        self._index = (
            None if semantic is None else SemanticIndex(semantic.max_entries, numpy=numpy_or_none())
        )
        self._replay_delay = replay_delay
        self._memo: dict[bytes, CachedAnswer] = {}
        self._embed_failing = False

    @property
    def store(self) -> CacheStore:
        """The store the answers are kept in."""
        return self._core.store

    def key_for(
        self, request: Request, *, provider: str, context: CallContext | None = None
    ) -> str | None:
        """The key ``request`` is stored under when sent to ``provider`` (its name) by
        the caller ``context`` (default: the current one); ``None`` when it would not
        be cached. ``await cache.store.delete(key)`` forgets one answer."""
        ok, scope = scope_of(self._scope, context or current_context())
        if not ok:
            return None
        try:
            return request_key(
                request, prefix=self._prefix, provider=provider, scope=scope, ignore=self._ignore
            )
        except UncacheableRequest:
            return None

    def _plan(
        self, request: Request, state: CallState | None, options: CacheOptions
    ) -> tuple[str, str | None] | None:
        """``(key, scope)`` for this call, or ``None`` to bypass the cache."""
        if not options.enabled or not (self._cache_sampled or request.temperature == 0):
            return None
        ok, scope = self._scope_for(state.context if state else current_context())
        if not ok:
            return None
        provider = state.provider if state else ""
        try:
            key = request_key(
                request, prefix=self._prefix, provider=provider, scope=scope, ignore=self._ignore
            )
        except UncacheableRequest as exc:
            logger.debug("llmguard: request not cached: %s", exc)
            return None
        return key, scope

    def _scope_for(self, context: CallContext) -> tuple[bool, str | None]:
        """``scope_of``, remembered per user and tenant for the named scopes (a function
        of the context is asked every time: it may read more than the context)."""
        scope = self._scope
        if scope is None or callable(scope):
            return scope_of(scope, context)
        who = (context.tenant, context.user)
        found = self._scopes.get(who)
        if found is None:
            found = scope_of(scope, context)
            if len(self._scopes) >= _SCOPES_KEPT:
                self._scopes.clear()
            self._scopes[who] = found
        return found

    # -- the non-streaming path --------------------------------------------------------

    async def complete(self, request: Request, call_next: Handler) -> Response:
        """Answer from the cache, or call inward and store the answer."""
        state = current_call()
        options = current_options()
        plan = self._plan(request, state, options)
        if plan is None:
            _label(state, "bypass")
            return await call_next(request)
        key, scope = plan
        refresh = options.refresh
        status = "refresh" if refresh else "miss"
        _label(state, status)  # also when a shared error comes back from a flight
        got = await self._core.acquire(key, self._decode, refresh=refresh)
        if isinstance(got, tuple):
            return _hit(state, got[0], got[1]).response
        lead: Lead[CachedAnswer] = got
        try:
            found, vector, partition = await self._semantic_lookup(request, scope, state)
            if found is not None:
                lead.share(found)
                return _hit(state, found, "semantic").response
            _label(state, status)  # "bypass" if the store failed on the way
            response = await call_next(request)
            answer = CachedAnswer(response)
            lead.share(answer)
            await self._save(key, request, answer, vector, partition)
            return response
        except BaseException as exc:
            lead.fail(exc)
            raise
        finally:
            await lead.close()

    # -- the streaming path -----------------------------------------------------------

    def stream(self, request: Request, call_next: StreamHandler) -> StreamOpener:
        """Replay a stored answer as a stream, or record a live one and store it once
        it completed (a cut, errored or abandoned stream is never stored)."""
        return open_stream(self, request, call_next)

    def _decode(self, data: bytes) -> CachedAnswer | None:
        """``decode_answer``, remembered for small values: a hot entry is decoded once
        (answers are immutable, and equal bytes decode to equal answers)."""
        memo = self._memo
        answer = memo.get(data)
        if answer is None:
            answer = decode_answer(data)
            if answer is not None and len(data) <= _MEMO_MAX_BYTES:
                if len(memo) >= _MEMO_ENTRIES:
                    with suppress(StopIteration, KeyError, RuntimeError):  # another thread
                        del memo[next(iter(memo))]
                memo[data] = answer
        return answer

    # -- storing and the semantic tier --------------------------------------------------

    def _storable(self, response: Response) -> bool:
        if self._store_if is not None:
            return self._store_if(response)
        return response.finish_reason not in INCOMPLETE_FINISH_REASONS and not response.refusal

    async def _save(
        self,
        key: str,
        request: Request,
        answer: CachedAnswer,
        vector: list[float] | None,
        partition: str | None,
    ) -> None:
        if not self._storable(answer.response):
            return
        data = encode_answer(answer, self._serializer)
        if len(data) > self._max_value_bytes:
            logger.debug("llmguard: answer of %d bytes not cached (max_value_bytes)", len(data))
            return
        given = current_options().ttl
        ttl = self._ttl if given is UNSET else given
        await self._core.write(key, data, ttl)
        if vector is not None and partition is not None and self._index is not None:
            expires = float("inf") if ttl is None else self._clock.now() + ttl
            self._index.add(partition, key, vector, expires)

    async def _semantic_lookup(
        self, request: Request, scope: str | None, state: CallState | None
    ) -> tuple[CachedAnswer | None, list[float] | None, str | None]:
        """A near-duplicate's stored answer, or ``(None, vector, partition)`` to index."""
        semantic, index = self._semantic, self._index
        text = request.last_user_text
        if semantic is None or index is None or not text:
            return None, None, None
        provider = state.provider if state else ""
        material = request_material(
            request, provider=provider, scope=scope, ignore=self._ignore, skip_last_user=True
        )
        partition = hashlib.sha256(self._prefix.encode() + canonical_json(material)).hexdigest()
        try:
            vector = as_vector(await semantic.embed([text]))
            match = index.search(partition, vector, semantic.threshold, self._clock.now())
        except Exception as exc:  # an embedding failure: go on without the tier
            if not self._embed_failing:  # one warning per outage
                self._embed_failing = True
                logger.warning(
                    "llmguard: the semantic cache's embedding failed (%s: %s); calls go on "
                    "without the semantic tier until it works again",
                    type(exc).__name__,
                    exc,
                )
            return None, None, None
        self._embed_failing = False
        if match is None:
            return None, vector, partition
        found = await self._core.read(match[0], self._decode)
        if found is None:
            index.remove(partition, match[0])
            return None, vector, partition
        if state is not None:
            state.extra["cache_similarity"] = match[1]
        return found, None, None

    def __repr__(self) -> str:
        return f"Cache({self._core.store!r}, ttl={self._ttl!r}, prefix={self._prefix!r})"


def check_ttl(ttl: float | None) -> None:
    """Refuse a TTL that is not a positive number of seconds or ``None``."""
    if ttl is not None and not ttl > 0:
        raise ConfigurationError(f"ttl must be a positive number of seconds or None, not {ttl!r}")

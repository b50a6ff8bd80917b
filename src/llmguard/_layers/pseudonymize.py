"""``Pseudonymize``: keyed pseudonyms for who is calling, before any layer sees them.

Records, logs, spans, budget store keys, cache scopes and ``BudgetExceeded`` messages
all name the caller from the call's context. With this layer outermost, the call's
context carries ``anon-<hmac>`` instead of the real user (or tenant, or endpoint):
the same person always gets the same pseudonym (so per-user budgets and cache scopes
still work), and without the key nobody can turn a pseudonym back into an id.

Only the call's own copy of the context is replaced: code inside the call that reads
``llmguard.current_context()`` (a tool looking up the caller's orders, say) still
sees the real values.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import replace
from typing import Final, Literal

from .._context import CallContext
from .._errors import ConfigurationError
from .._layer import BaseLayer, Handler, StreamHandler, StreamOpener
from .._state import current_call
from .._types import Request, Response

__all__ = ["ContextField", "Pseudonymize"]

ContextField = Literal["user", "tenant", "endpoint"]
"""A context field that can be pseudonymized."""

_FIELDS: Final = ("user", "tenant", "endpoint")
_MARK: Final = "llmguard.pseudonymized"  # in CallState.extra: done once per call
_MIN_KEY_BYTES: Final = 16


class Pseudonymize(BaseLayer):
    """Replace the caller's identifiers with keyed pseudonyms for the whole call.

    Put it outermost (``Guard(..., pseudonymize=Pseudonymize(key))`` does), so every
    layer inside sees only pseudonyms.

    >>> layer = Pseudonymize(b"a secret of 16+ bytes, from your settings")
    >>> layer.pseudonym("alice@example.com")[:5]
    'anon-'

    Args:
        key: the HMAC-SHA256 key, at least 16 bytes (a ``str`` is UTF-8 encoded). Keep it
            secret and stable: a new key gives everyone new pseudonyms (new budget
            windows, new cache scopes).
        fields: which context fields to replace (default the user only).
        length: hex digits of the HMAC kept in a pseudonym (default 24: 96 bits).
    """

    __slots__ = ("_fields", "_key", "_length")

    def __init__(
        self,
        key: bytes | str,
        *,
        fields: Iterable[ContextField] = ("user",),
        length: int = 24,
    ) -> None:
        raw = key.encode() if isinstance(key, str) else bytes(key)
        if len(raw) < _MIN_KEY_BYTES:
            raise ConfigurationError(
                f"Pseudonymize needs a key of at least {_MIN_KEY_BYTES} bytes "
                "(a random secret from your settings, not a constant in the code)"
            )
        chosen = tuple(dict.fromkeys(fields))
        unknown = [f for f in chosen if f not in _FIELDS]
        if unknown or not chosen:
            raise ConfigurationError(
                f"Pseudonymize fields must be some of {_FIELDS}, not {list(fields)!r}"
            )
        if not 16 <= length <= 64:
            raise ConfigurationError(f"length must be between 16 and 64, not {length!r}")
        self._key = raw
        self._fields = chosen
        self._length = length

    @property
    def fields(self) -> tuple[ContextField, ...]:
        """The context fields this layer replaces."""
        return self._fields

    def pseudonym(self, value: str) -> str:
        """The pseudonym of one identifier (ask a budget about a user with it)."""
        digest = hmac.digest(self._key, value.encode(), "sha256").hex()
        return f"anon-{digest[: self._length]}"

    def apply(self, context: CallContext) -> CallContext:
        """``context`` with the configured fields replaced by their pseudonyms."""
        fields = self._fields
        user, tenant, endpoint = context.user, context.tenant, context.endpoint
        if user is None and tenant is None and endpoint is None:
            return context
        return replace(
            context,
            user=self.pseudonym(user) if user is not None and "user" in fields else user,
            tenant=self.pseudonym(tenant) if tenant is not None and "tenant" in fields else tenant,
            endpoint=(
                self.pseudonym(endpoint)
                if endpoint is not None and "endpoint" in fields
                else endpoint
            ),
        )

    def _mask_call(self) -> None:
        state = current_call()
        if state is not None and _MARK not in state.extra:
            state.extra[_MARK] = True  # a tool loop passes through once per step
            state.context = self.apply(state.context)

    async def complete(self, request: Request, call_next: Handler) -> Response:
        """Replace the identifiers in the call's context, then call inward."""
        self._mask_call()
        return await call_next(request)

    def stream(self, request: Request, call_next: StreamHandler) -> StreamOpener:
        """The same for streams."""
        self._mask_call()
        return call_next(request)

    def __repr__(self) -> str:
        return f"Pseudonymize(fields={self._fields!r})"  # never the key

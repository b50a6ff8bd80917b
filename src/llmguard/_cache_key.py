"""The cache key: a stable hash of everything in a request that can change the answer.

``request_key`` is ``"{namespace}:{version}:k1:{sha256 hex}"``, the hash taken over
the canonical JSON of the whole ``Request`` (every field, every provider extra), the
provider's name and the scope, minus the extras in ``IGNORED_EXTRAS``. Canonical
JSON: mappings with sorted keys, no spaces, UTF-8, floats for the float parameters
(``temperature=1`` and ``1.0`` are one key), ``stop`` sorted (a set of strings). So
the order of keys in any mapping never changes the key; everything else that differs,
does. ``k1`` names this canonical form: a release that changes it bumps it, and old
entries become misses.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields, is_dataclass
from typing import Any, Literal

from ._context import CallContext
from ._errors import ConfigurationError
from ._types import Request, ToolSpec

__all__ = [
    "IGNORED_EXTRAS",
    "KEY_FORMAT",
    "Scope",
    "canonical_json",
    "check_scope",
    "key_prefix",
    "one_shot_encoder",
    "request_key",
    "request_material",
    "scope_of",
]

KEY_FORMAT = "k1"

#: Provider extras that never change the answer, left out of the key: end-user ids and
#: tracking fields, stored-completion flags, prompt-cache routing hints, stream options.
IGNORED_EXTRAS: frozenset[str] = frozenset(
    {
        "metadata",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
        "store",
        "stream_options",
        "user",
    }
)

Scope = Literal["user", "tenant"] | Callable[[CallContext], "str | None"] | None
"""Who may share an entry: ``None`` (everyone), ``"tenant"``, ``"user"`` (a user of a
tenant), or a function of the ``CallContext`` returning a scope name (``None``: do not
cache this call)."""


class UncacheableRequest(ValueError):
    """A request holds a value canonical JSON cannot express (internal: the call
    bypasses the cache)."""


def _default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in fields(value)}
    dump = getattr(value, "model_dump", None)  # a pydantic model
    if callable(dump):
        return dump(mode="json")
    raise UncacheableRequest(f"{type(value).__name__} cannot be part of a cache key")


_encoder = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    check_circular=False,
    default=_default,
)


def one_shot_encoder(encoder: json.JSONEncoder) -> Callable[[Any], str]:
    """``encoder.encode``, with its C encoder built once, not on every call (that costs
    as much as encoding a short request). The same text: the same options, and
    ``JSONEncoder`` itself hands them to the same C encoder. The encoder must not check
    for circles (``check_circular=False``) nor indent: its values are never circular."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - a Python without json's C accelerator
        return encoder.encode
    assert not encoder.check_circular
    assert encoder.indent is None
    c_encode = make(
        None,  # no circular check (check_circular=False)
        encoder.default,
        json.encoder.encode_basestring_ascii
        if encoder.ensure_ascii
        else json.encoder.encode_basestring,
        None,  # no indent
        encoder.key_separator,
        encoder.item_separator,
        encoder.sort_keys,
        encoder.skipkeys,
        encoder.allow_nan,
    )

    def encode(value: Any) -> str:
        return "".join(c_encode(value, 0))

    return encode


_encode = one_shot_encoder(_encoder)


def canonical_json(value: Any) -> bytes:
    """``value`` as canonical JSON bytes: sorted keys, no spaces, UTF-8.

    Mappings, sequences, sets (sorted), dataclasses and pydantic models are accepted;
    anything else raises ``UncacheableRequest``.
    """
    try:
        return _encode(value).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        if isinstance(exc, UncacheableRequest):
            raise
        raise UncacheableRequest(str(exc)) from exc


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _tool(t: ToolSpec) -> list[Any]:
    return [t.name, t.description, t.parameters, t.strict]


def request_material(
    request: Request,
    *,
    provider: str,
    scope: str | None,
    ignore: frozenset[str] = IGNORED_EXTRAS,
    skip_last_user: bool = False,
) -> list[Any]:
    """What the key hashes: the provider, the scope, then every field of ``request`` in a
    fixed order (a flat list: cheap to encode). ``skip_last_user`` leaves out the last
    user message's text (the semantic tier's partition: all but the prompt it compares).
    """
    messages = request.messages
    out: list[Any] = [provider, scope, request.model, len(messages)]
    for m in messages:
        calls = [[c.id, c.name, c.arguments] for c in m.tool_calls] if m.tool_calls else None
        out += (m.role, m.content, m.name, m.tool_call_id, calls)
    if skip_last_user:
        for index in range(len(messages) - 1, -1, -1):
            if messages[index].role == "user":
                out[4 + 5 * index + 1] = None
                break
    extras: Any = request.extras
    if extras:
        extras = {k: v for k, v in extras.items() if k not in ignore}
    out += (
        [_tool(t) for t in request.tools] if request.tools else None,
        request.tool_choice,
        request.response_format,
        _float(request.temperature),
        _float(request.top_p),
        request.max_output_tokens,
        sorted(request.stop) if request.stop else None,
        request.seed,
        extras or None,
    )
    return out


def key_prefix(namespace: str, version: str) -> str:
    """``"{namespace}:{version}:k1:"``: change ``version`` to invalidate every entry."""
    return f"{namespace}:{version}:{KEY_FORMAT}:"


def request_key(
    request: Request,
    *,
    prefix: str,
    provider: str,
    scope: str | None = None,
    ignore: frozenset[str] = IGNORED_EXTRAS,
) -> str:
    """The cache key of ``request`` (raises ``UncacheableRequest`` for odd extras)."""
    material = request_material(request, provider=provider, scope=scope, ignore=ignore)
    return prefix + hashlib.sha256(canonical_json(material)).hexdigest()


def scope_of(scope: Scope, context: CallContext) -> tuple[bool, str | None]:
    """``(cacheable, scope name)`` for a call made in ``context``.

    ``"user"`` needs a user (the tenant is part of the name, so user ids may repeat
    across tenants); ``"tenant"`` needs a tenant. Without it the call is not cached.
    """
    if scope is None:
        return True, None
    if scope == "user":
        if context.user is None:
            return False, None
        return True, canonical_json(["u", context.tenant, context.user]).decode()
    if scope == "tenant":
        if context.tenant is None:
            return False, None
        return True, canonical_json(["t", context.tenant]).decode()
    name = scope(context)
    if name is None:
        return False, None
    return True, canonical_json(["f", str(name)]).decode()


def frozen_ignore(ignore: Iterable[str]) -> frozenset[str]:
    """The ignored extras as a frozenset (accepting any iterable of names)."""
    return ignore if isinstance(ignore, frozenset) else frozenset(ignore)


def check_scope(scope: Scope) -> None:
    """Refuse a scope that is not ``None``, ``"user"``, ``"tenant"`` or a function."""
    if scope is not None and scope not in ("user", "tenant") and not callable(scope):
        raise ConfigurationError(
            f'scope must be None, "user", "tenant" or a function of the context, not {scope!r}'
        )

"""How cached values are stored: compact, versioned bytes.

A cached answer (``CachedAnswer``: the response, and for a stream the events it came
as) is one header byte naming the format and its version, then the payload:

- ``b"J"``: JSON, version 1 (the default; the standard library only);
- ``b"M"``: msgpack, version 1 (``serializer="msgpack"``, ``pip install
  "llmguard[msgpack]"``: about 4x faster to decode and 20 % smaller, measured in
  ``benchmarks/cache.py``).

The payload is a flat list in a fixed order (no field names). Text deltas are stored
as their lengths: their texts are slices of the response's text, which is stored
once. A value whose header is unknown (written by an older or newer llmguard, or by
something else) or that does not decode is a miss, never a crash. Readers decode
either format whatever they write.

Values of the ``@llmguard.cache`` decorator go through a ``CacheCodec``:
``JSONCodec`` (the default: JSON values that come back equal) or ``PydanticCodec``
(any type pydantic validates, named explicitly).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

from ._cache_key import one_shot_encoder
from ._errors import ConfigurationError
from ._fast_init import fast_init
from ._types import (
    Finish,
    RefusalDelta,
    Response,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageUpdate,
)

__all__ = [
    "CacheCodec",
    "CachedAnswer",
    "JSONCodec",
    "PydanticCodec",
    "Serializer",
    "decode_answer",
    "encode_answer",
    "msgpack_module",
]

T = TypeVar("T")
Serializer = Literal["json", "msgpack"]

_JSON = b"J"  # format "JSON", layout version 1
_MSGPACK = b"M"  # format "msgpack", layout version 1


@fast_init
@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A stored answer: the response, and the events of the stream it came from."""

    response: Response
    events: tuple[StreamEvent, ...] | None = None


def msgpack_module() -> Any:
    """The msgpack module, or an ``ImportError`` naming the extra to install."""
    try:
        return importlib.import_module("msgpack")
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            'serializer="msgpack" needs msgpack: pip install "llmguard[msgpack]"'
        ) from exc


def _usage(u: Usage) -> list[Any]:
    return [u.input_tokens, u.output_tokens, u.cached_input_tokens, u.reasoning_tokens, u.estimated]


def _usage_of(raw: list[Any]) -> Usage:
    return Usage(
        input_tokens=raw[0],
        output_tokens=raw[1],
        cached_input_tokens=raw[2],
        reasoning_tokens=raw[3],
        estimated=raw[4],
    )


def _event(event: StreamEvent) -> Any:
    kind = type(event)
    if kind is TextDelta:
        return len(event.text)  # type: ignore[union-attr]
    if kind is ToolCallDelta:
        e: ToolCallDelta = event  # type: ignore[assignment]
        return [1, e.index, e.id, e.name, e.arguments]
    if kind is UsageUpdate:
        return [2, *_usage(event.usage)]  # type: ignore[union-attr]
    if kind is RefusalDelta:
        return [4, event.text]  # type: ignore[union-attr]
    return [3, event.reason]  # type: ignore[union-attr]


def _payload(answer: CachedAnswer) -> list[Any]:
    r = answer.response
    events = None if answer.events is None else [_event(e) for e in answer.events]
    calls = [[c.id, c.name, c.arguments] for c in r.tool_calls]
    head = [r.text, calls, r.finish_reason, _usage(r.usage), r.model, r.provider, r.id, events]
    return head if r.refusal is None else [*head, r.refusal]  # 8 fields, as before, or 9


# ``json.dumps(value, separators=(",", ":"), ensure_ascii=False)``: a payload is plain
# lists, strings, numbers and ``None``, never circular, so unchecked.
_json_encode = one_shot_encoder(
    json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)
)


def encode_answer(answer: CachedAnswer, serializer: Serializer = "json") -> bytes:
    """The stored bytes of ``answer`` (header byte, then the payload)."""
    payload = _payload(answer)
    if serializer == "msgpack":
        packed: bytes = msgpack_module().packb(payload, use_bin_type=True)
        return _MSGPACK + packed
    return _JSON + _json_encode(payload).encode()


def _replay(text: str, raw: list[Any]) -> tuple[StreamEvent, ...]:
    events: list[StreamEvent] = []
    at = 0
    for item in raw:
        if type(item) is int:
            events.append(TextDelta(text=text[at : at + item]))
            at += item
            continue
        kind = item[0]
        if kind == 1:
            events.append(ToolCallDelta(index=item[1], id=item[2], name=item[3], arguments=item[4]))
        elif kind == 2:
            events.append(UsageUpdate(usage=_usage_of(item[1:])))
        elif kind == 3:
            events.append(Finish(reason=item[1]))
        elif kind == 4:
            events.append(RefusalDelta(text=item[1]))
        else:
            raise ValueError(f"unknown event kind {kind!r}")
    if at != len(text):
        raise ValueError("text deltas do not add up to the text")
    return tuple(events)


def decode_answer(data: bytes) -> CachedAnswer | None:
    """The answer stored in ``data``, or ``None`` for an unknown format or a bad value."""
    head = data[:1]
    try:
        if head == _JSON:
            payload = json.loads(data[1:])
        elif head == _MSGPACK:
            payload = msgpack_module().unpackb(data[1:], raw=False)
        else:
            return None
        text, calls, finish, usage, model, provider, rid, events, *more = payload
        if len(more) > 1 or (more and type(more[0]) is not str):
            return None
        response = Response(
            text=text,
            tool_calls=tuple(ToolCall(id=c[0], name=c[1], arguments=c[2]) for c in calls),
            finish_reason=finish,
            usage=_usage_of(usage),
            model=model,
            provider=provider,
            id=rid,
            cached=True,
            cost_micros=0,
            refusal=more[0] if more else None,
        )
        return CachedAnswer(response, None if events is None else _replay(text, events))
    except (ValueError, TypeError, IndexError, KeyError, ImportError):
        return None
    except Exception as exc:  # msgpack's own errors (ExtraData, FormatError...)
        if type(exc).__module__.startswith("msgpack"):
            return None
        raise


@runtime_checkable
class CacheCodec(Protocol[T]):
    """Turns the values of a ``@llmguard.cache``-decorated function into bytes and back.

    ``encode`` may raise ``TypeError`` or ``ValueError`` for a value it cannot store
    (the value is then returned uncached); ``decode`` may raise for bytes it cannot
    read (a miss).
    """

    def encode(self, value: T) -> bytes:
        """The bytes to store for ``value``."""
        ...

    def decode(self, data: bytes) -> T:
        """The value stored as ``data``."""
        ...


class JSONCodec(Generic[T]):
    """JSON values (``dict``, ``list``, ``str``, numbers, ``bool``, ``None``).

    A value is stored only if it comes back equal (a tuple would come back a list, a
    dataclass not at all): such a value is returned uncached, with one warning. Use
    ``PydanticCodec`` for typed values.
    """

    __slots__ = ()

    def encode(self, value: T) -> bytes:
        data = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        if json.loads(data) != value:
            raise ValueError(
                f"a {type(value).__name__} does not come back equal from JSON; "
                "use codec=llmguard.PydanticCodec(<its type>)"
            )
        return data

    def decode(self, data: bytes) -> T:
        value: T = json.loads(data)
        return value

    def __repr__(self) -> str:
        return "JSONCodec()"


class PydanticCodec(Generic[T]):
    """Values of the type ``type_``, through pydantic's ``TypeAdapter`` (JSON inside).

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Hit:
    ...     doc_id: str
    >>> codec = PydanticCodec(list[Hit])
    >>> codec.decode(codec.encode([Hit("a")]))
    [Hit(doc_id='a')]
    """

    __slots__ = ("_adapter", "_type")

    def __init__(self, type_: type[T] | Any) -> None:
        from pydantic import TypeAdapter
        from pydantic.errors import PydanticSchemaGenerationError

        try:
            self._adapter: Any = TypeAdapter(type_)
        except PydanticSchemaGenerationError as exc:
            raise ConfigurationError(f"pydantic cannot store {type_!r}: {exc}") from exc
        self._type = type_

    def encode(self, value: T) -> bytes:
        data: bytes = self._adapter.dump_json(value)
        return data

    def decode(self, data: bytes) -> T:
        value: T = self._adapter.validate_json(data)
        return value

    def __repr__(self) -> str:
        return f"PydanticCodec({self._type!r})"

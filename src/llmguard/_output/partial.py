"""Partial objects while the JSON streams in.

Each pydantic model in the output type gets a *partial twin*: a model of the same
fields, all optional (``None`` until they arrive), without the original's
constraints and validators, named ``Partial<Model>``. A twin is not an instance of
the model on purpose: a half-received object must not pass for a validated one.

The text so far is read with ``pydantic_core.from_json(allow_partial=
"trailing-strings")``; a number still being written at the very end is left out
(``1`` might become ``12``), so every partial is a prefix of the final object: a
field is either absent, or equal to its final value, or (the one string being
written) a prefix of it; a list holds the final list's first items.
"""

from __future__ import annotations

import re
import types
from typing import Annotated, Any, Generic, Optional, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model
from pydantic_core import from_json, to_json

from .strict import Pruner
from .types import OutputSchema, T

__all__ = ["PartialParser", "partial_adapter", "partial_type"]

_NUMBER_CHARS = frozenset("0123456789+-.eE")
_START = re.compile(r"(?:\A|\n)[ \t]*(?:```[^\n]*\n\s*)?(\{)")
_CONTAINERS = (list, set, frozenset, tuple, dict)


def partial_type(tp: Any, memo: dict[type[BaseModel], Any], namespace: dict[str, Any]) -> Any:
    """``tp`` with every pydantic model in it replaced by its partial twin."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return _twin(tp, memo, namespace)
    origin = get_origin(tp)
    if origin is Annotated:
        return partial_type(get_args(tp)[0], memo, namespace)
    if origin is Union or origin is types.UnionType:
        return Union[tuple(partial_type(arg, memo, namespace) for arg in get_args(tp))]  # noqa: UP007 - built from a runtime tuple
    if origin in _CONTAINERS:
        args = get_args(tp)
        if args:
            twins = tuple(a if a is Ellipsis else partial_type(a, memo, namespace) for a in args)
            return origin[twins]
    return tp


def _twin(model: type[BaseModel], memo: dict[type[BaseModel], Any], ns: dict[str, Any]) -> Any:
    known = memo.get(model)
    if known is not None:
        return known
    key = f"_llmguard_partial_{len(ns)}_{model.__name__}"
    memo[model] = key  # a forward reference while the twin is being built (recursion)
    ns[key] = None
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        annotation = partial_type(info.annotation, memo, ns)
        fields[name] = (
            Optional[annotation],  # noqa: UP045 - the annotation may be a forward reference
            Field(
                default=None,
                alias=info.alias,
                validation_alias=info.validation_alias,
                serialization_alias=info.serialization_alias,
            ),
        )
    config: ConfigDict = {**model.model_config}
    config.pop("frozen", None)
    twin = create_model(f"Partial{model.__name__}", __config__=config, **fields)
    twin.__qualname__ = f"Partial{model.__qualname__}"
    ns[key] = memo[model] = twin
    return twin


def partial_adapter(output_type: Any, adapter: TypeAdapter[Any], schema: OutputSchema) -> Any:
    """The adapter that validates partial values of ``output_type``."""
    if isinstance(output_type, TypeAdapter):
        return adapter  # no type to take apart: partials appear once they validate
    memo: dict[type[BaseModel], Any] = {}
    namespace: dict[str, Any] = {}
    twin = partial_type(output_type, memo, namespace)
    if not namespace:
        return adapter
    for model in namespace.values():
        model.model_rebuild(_types_namespace=namespace)
    return TypeAdapter(twin)


class PartialParser(Generic[T]):
    """Reads the text of one streamed answer as it grows; ``feed`` returns a new
    partial value when the text so far adds something, else ``None``."""

    __slots__ = (
        "_adapter",
        "_depth",
        "_done",
        "_escape",
        "_in_string",
        "_last",
        "_pruner",
        "_scanned",
        "_start",
        "_text",
        "_wrapped",
    )

    def __init__(self, adapter: Any, pruner: Pruner | None, *, wrapped: bool) -> None:
        self._adapter = adapter
        self._pruner = pruner
        self._wrapped = wrapped
        self._text = ""
        self._start = -1
        self._scanned = 0
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._done = False
        self._last: Any = None

    def feed(self, chunk: str) -> Any:
        """Take ``chunk`` of the answer; a new partial value, or ``None``."""
        if self._done or not chunk:
            return None
        self._text += chunk
        if self._start < 0:
            match = _START.search(self._text)
            if match is None:
                return None
            self._start = self._scanned = match.start(1)
        self._scan()
        region = self._text[self._start :]
        if not self._in_string and region[-1] in _NUMBER_CHARS:
            end = len(region)
            while end and region[end - 1] in _NUMBER_CHARS:
                end -= 1
            region = region[:end]
        return self._read(region)

    def _scan(self) -> None:
        """Follow strings and brackets over the new text, to know where the value ends
        and whether the text ends inside a string."""
        text, depth, in_string, escape = self._text, self._depth, self._in_string, self._escape
        for index in range(self._scanned, len(text)):
            char = text[index]
            if in_string:
                if escape:
                    escape = False
                elif char == "\\":
                    escape = True
                elif char == '"':
                    in_string = False
            elif char == '"':
                in_string = True
            elif char in "{[":
                depth += 1
            elif char in "}]":
                depth -= 1
                if depth <= 0:
                    self._done = True  # the value is complete: the final parse takes over
                    self._text = text[: index + 1]
                    break
        self._scanned = len(self._text)
        self._depth, self._in_string, self._escape = depth, in_string, escape

    def _read(self, region: str) -> Any:
        for mode in ("trailing-strings", "on"):
            try:
                data = from_json(region, allow_partial=mode)
            except ValueError:
                return None
            if self._pruner is not None:
                self._pruner.prune(data)
            if self._wrapped:
                if type(data) is not dict or "result" not in data:
                    return None
                data = data["result"]
            if data == self._last:
                return None
            try:
                value = self._adapter.validate_json(to_json(data), experimental_allow_partial=True)
            except (ValidationError, ValueError):
                continue  # e.g. an enum's value half written: try without the open string
            self._last = data
            return value
        return None

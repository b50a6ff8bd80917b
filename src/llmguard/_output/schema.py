"""``OutputSpec``: one output type's schemas, built once and cached, and its parser.

``parse(text)`` is the whole path from a model's answer to a validated value: the
answer as is (the usual case, one ``validate_json``), else the JSON found in it
(``extract``), each candidate validated in turn. A failure is an ``InvalidOutput``
whose message is what the re-ask tells the model.
"""

from __future__ import annotations

import functools
import json
import re
from typing import TYPE_CHECKING, Any, Generic

from pydantic import PydanticUserError, TypeAdapter, ValidationError
from pydantic_core import from_json, to_json

from .._errors import ConfigurationError
from .extract import json_candidates
from .reask import InvalidOutput, describe_errors
from .strict import make_strict
from .types import OutputSchema, T

if TYPE_CHECKING:
    from .partial import PartialParser

__all__ = ["InvalidOutput", "OutputSpec", "output_spec"]

WRAPPER_KEY = "result"
_NAME_OK = re.compile(r"[^A-Za-z0-9_-]+")
_MODULE_PATH = re.compile(r"\b(?:[A-Za-z_]\w*\.)+(\w+)")

INSTRUCTIONS = (
    "Respond with one JSON value and nothing else: no prose before or after it, no code "
    "fences. It must conform to this JSON schema:\n"
)


def _name(output_type: Any, schema: dict[str, Any]) -> str:
    if isinstance(output_type, type):
        raw = output_type.__name__
    elif isinstance(output_type, TypeAdapter):
        raw = str(schema.get("title") or "output")
    else:
        raw = _MODULE_PATH.sub(r"\1", repr(output_type).removeprefix("typing."))
    return _NAME_OK.sub("_", raw).strip("_")[:64] or "output"


class OutputSpec(Generic[T]):
    """The schemas of one output type, and how to read an answer into it."""

    __slots__ = ("__weakref__", "_partial_adapter", "_pruner", "adapter", "output_type", "schema")

    def __init__(self, output_type: Any) -> None:
        self.output_type = output_type
        try:
            adapter: TypeAdapter[T] = (
                output_type if isinstance(output_type, TypeAdapter) else TypeAdapter(output_type)
            )
            raw = adapter.json_schema()
        except PydanticUserError as exc:
            raise ConfigurationError(
                f"{output_type!r} cannot be used as an output type: {exc}"
            ) from exc
        self.adapter = adapter
        self._partial_adapter: Any = None
        name = _name(output_type, raw)
        defs: dict[str, Any] = raw.get("$defs") or {}
        root = {key: value for key, value in raw.items() if key != "$defs"}
        ref = root.get("$ref")
        if isinstance(ref, str) and ref.rsplit("/", 1)[-1] in defs:
            root = {
                **defs[ref.rsplit("/", 1)[-1]],
                **{k: v for k, v in root.items() if k != "$ref"},
            }
        wrapped = root.get("type") != "object"
        if wrapped:
            root = _wrap(root, name)
            prompt_schema = {**root, "$defs": defs} if defs else root
        else:
            prompt_schema = raw
        strict = make_strict(root, defs, name)
        self._pruner = strict.pruner
        self.schema = OutputSchema(
            name=name,
            json_schema=strict.schema,
            prompt_schema=prompt_schema,
            wrapped=wrapped,
            problems=strict.problems,
            relaxed=strict.relaxed,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": name, "schema": strict.schema, "strict": True},
            },
            instructions=INSTRUCTIONS + json.dumps(prompt_schema, ensure_ascii=False),
        )

    @property
    def name(self) -> str:
        return self.schema.name

    def validate(self, text: str) -> T:
        """Validate one JSON text (JSON-mode semantics); ``InvalidOutput`` if it fails."""
        if self.schema.wrapped:
            return self._validate_wrapped(text)
        try:
            return self.adapter.validate_json(text)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
        syntax = _is_syntax(errors)
        if self._pruner is not None and not syntax:
            data = from_json(text)
            if self._pruner.prune(data):
                try:
                    return self.adapter.validate_json(to_json(data))
                except ValidationError as exc:
                    errors = exc.errors(include_url=False)
        raise InvalidOutput(describe_errors(errors), syntax=syntax)

    def _validate_wrapped(self, text: str) -> T:
        try:
            data = from_json(text)
        except ValueError as exc:
            raise InvalidOutput(f"the answer is not valid JSON ({exc})", syntax=True) from None
        if self._pruner is not None:
            self._pruner.prune(data)
        if type(data) is not dict or WRAPPER_KEY not in data:
            raise InvalidOutput(
                f'expected a JSON object of the form {{"{WRAPPER_KEY}": ...}} holding the answer'
            )
        try:
            return self.adapter.validate_json(to_json(data[WRAPPER_KEY]))
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
        raise InvalidOutput(describe_errors(errors, (WRAPPER_KEY,)))

    def parse(self, text: str) -> T:
        """The validated value in a model's answer; ``InvalidOutput`` if there is none."""
        stripped = text.strip()
        if not stripped:
            raise InvalidOutput("the answer was empty; reply with the JSON value")
        syntax_error: InvalidOutput | None = None
        if stripped[0] in "{[":
            try:
                return self.validate(stripped)
            except InvalidOutput as exc:
                if not exc.syntax:
                    raise
                syntax_error = exc
        semantic_error: InvalidOutput | None = None
        for candidate in json_candidates(stripped):
            if candidate == stripped and syntax_error is not None:
                continue
            try:
                return self.validate(candidate)
            except InvalidOutput as exc:
                semantic_error = semantic_error or exc
        if semantic_error is not None:
            raise semantic_error
        if syntax_error is not None:
            raise syntax_error
        raise InvalidOutput("no JSON object was found in the answer; reply with the JSON only")

    def partial_parser(self) -> PartialParser[T]:
        """A fresh parser of partial answers for one streamed attempt."""
        from .partial import PartialParser, partial_adapter

        if self._partial_adapter is None:
            self._partial_adapter = partial_adapter(self.output_type, self.adapter, self.schema)
        return PartialParser(self._partial_adapter, self._pruner, wrapped=self.schema.wrapped)


def _wrap(root: dict[str, Any], name: str) -> dict[str, Any]:
    return {
        "type": "object",
        "title": name,
        "properties": {WRAPPER_KEY: root},
        "required": [WRAPPER_KEY],
    }


def _is_syntax(errors: list[Any]) -> bool:
    """The text could not be read as JSON at all (so the JSON may be somewhere inside)."""
    return len(errors) == 1 and errors[0].get("type") in ("json_invalid", "string_unicode")


@functools.lru_cache(maxsize=256)
def _cached(output_type: Any) -> OutputSpec[Any]:
    return OutputSpec(output_type)


def output_spec(output_type: Any) -> OutputSpec[Any]:
    """The spec of ``output_type``, built once per type (an unhashable type is rebuilt)."""
    try:
        hash(output_type)
    except TypeError:
        return OutputSpec(output_type)
    return _cached(output_type)

"""The light names of structured output: modes, the provider capability, ``OutputSchema``.

Nothing here imports pydantic; ``output_schema`` loads it on first use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar, get_args, runtime_checkable

from .._errors import ConfigurationError

__all__ = [
    "OutputMode",
    "OutputSchema",
    "StructuredMode",
    "StructuredOutputSupport",
    "T",
    "ValidatesJSON",
    "check_options",
    "output_schema",
    "resolve_mode",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

OutputMode = Literal["strict", "json", "prompt"]
"""How the answer's shape is asked for: ``"strict"`` sends the JSON schema with
``strict: true`` (the provider enforces it), ``"json"`` asks for JSON mode
(``{"type": "json_object"}``) and puts the schema in the instructions, ``"prompt"``
only puts the schema in the instructions."""

StructuredMode = Literal["auto", "strict", "json", "prompt"]
"""An ``OutputMode``, or ``"auto"``: the best mode the provider and the schema allow."""

_MODES = frozenset(get_args(StructuredMode))


class ValidatesJSON(Protocol[T_co]):
    """What ``structured()`` needs of a ``pydantic.TypeAdapter`` passed instead of a type
    (for output types a type checker does not accept as ``type[T]``, such as unions)."""

    def validate_json(self, data: str | bytes | bytearray, /) -> T_co: ...


@runtime_checkable
class StructuredOutputSupport(Protocol):
    """A provider that says which structured-output mode it supports for a model.

    Optional: a provider without this method is taken to support JSON mode but not
    strict JSON schemas (``"json"``). ``OpenAIProvider`` and ``FakeProvider`` have it.
    """

    def structured_output_mode(self, model: str) -> OutputMode:
        """``"strict"`` (JSON schema with ``strict: true``), ``"json"`` (JSON mode) or
        ``"prompt"`` (neither: instructions only) for ``model``."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputSchema:
    """The schemas and instructions ``structured()`` uses for one output type.

    Built once per type and cached; treat the mappings as read-only.

    Attributes:
        name: the schema's name (``json_schema.name`` in strict mode).
        json_schema: the strict-compatible schema: every object closed
            (``additionalProperties: false``), every property required, a property
            that may be left out made nullable (``null`` then means "use the default").
        prompt_schema: pydantic's own schema, put in the instructions in the
            ``"json"`` and ``"prompt"`` modes.
        wrapped: the answer is ``{"result": <value>}`` because the type is not an
            object (``list[Item]``, ``int``, a union): strict mode and JSON mode need an
            object at the top. ``structured()`` unwraps it.
        problems: why the type cannot be used in strict mode, one line per part of the
            schema (empty: it can).
        relaxed: constraints strict mode does not accept (``maxLength``, ``format:
            uri``…), moved into the description in ``json_schema``; validation still
            enforces them.
        response_format: what strict mode sends as ``response_format``.
        instructions: the system message the ``"json"`` and ``"prompt"`` modes add.
    """

    name: str
    json_schema: Mapping[str, Any]
    prompt_schema: Mapping[str, Any]
    wrapped: bool
    problems: tuple[str, ...]
    relaxed: tuple[str, ...]
    response_format: Mapping[str, Any]
    instructions: str

    @property
    def strict(self) -> bool:
        """Whether strict JSON-schema mode can be used for this type."""
        return not self.problems


def output_schema(output_type: Any, /) -> OutputSchema:
    """The ``OutputSchema`` of an output type (a class, ``list[Item]``, a union, or a
    ``pydantic.TypeAdapter``): what strict mode would send and what cannot be strict.

    >>> # output_schema(Invoice).problems  -> () when strict mode can be used
    """
    from .schema import output_spec

    return output_spec(output_type).schema


def check_options(retries: int, mode: str) -> None:
    """Refuse bad ``retries``/``mode`` values before anything is sent."""
    if type(retries) is not int or retries < 0:
        raise ConfigurationError(f"retries must be a non-negative integer, not {retries!r}")
    if mode not in _MODES:
        raise ConfigurationError(f"mode must be one of {sorted(_MODES)}, not {mode!r}")


def resolve_mode(
    mode: StructuredMode, provider: object, model: str, schema: OutputSchema
) -> OutputMode:
    """The mode a call uses: ``mode`` as asked, or for ``"auto"`` the best one the
    provider offers (``StructuredOutputSupport``; unknown: ``"json"``) that the schema
    allows. ``"strict"`` with a schema that cannot be strict is a ``ConfigurationError``.
    """
    if mode == "auto":
        # getattr, not isinstance: a runtime Protocol check costs ~10 µs a call.
        method = getattr(provider, "structured_output_mode", None)
        offered: OutputMode = method(model) if callable(method) else "json"
        if offered == "strict":
            return "strict" if schema.strict else "json"
        return offered
    if mode == "strict" and not schema.strict:
        raise ConfigurationError(
            f"{schema.name} cannot be used in strict JSON-schema mode:\n- "
            + "\n- ".join(schema.problems)
            + '\nuse mode="json" or mode="auto", or change the type'
        )
    return mode

"""``@tool``: a typed function (sync or async) as a tool the model may ask for.

The JSON schema comes from the signature and the docstring through pydantic: one
model per tool with ``extra="forbid"``, built once at decoration time. pydantic is
imported only when the first tool is built, so ``import llmguard`` stays light.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from .._errors import ConfigurationError
from .._types import ToolSpec

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = ["Tool", "tool"]

P = ParamSpec("P")
R = TypeVar("R")

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SECTION = re.compile(
    r"^(Args|Arguments|Parameters|Params|Returns?|Yields?|Raises|Examples?|Notes?|"
    r"Attributes|See Also|Warnings?)\s*:\s*$"
)
_ARG_LINE = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_SPHINX_PARAM = re.compile(r"^:param\s+(?:[^:]+\s)?(\w+)\s*:\s*(.*)$")


class Tool(Generic[P, R]):
    """A function the model may ask to run, with its name, description and schema.

    Build it with ``@tool``. Calling the tool calls the function as is (handy in
    tests); the tool loop calls it only through a ``Toolbox``, with validated
    arguments.

    Attributes:
        name: the name the model calls it by (``[A-Za-z0-9_-]{1,64}``).
        description: what the model is told the tool does.
        parameters: the JSON schema of the arguments (an object, unknown keys forbidden).
        strict: offered in the provider's strict mode where it has one (OpenAI).
        timeout: seconds one run may take, ``None`` for the toolbox's default.
        requires_approval: the toolbox awaits its approval callback before each run.
        safe_errors: exception types whose text may be shown to the model.
        function: the wrapped function.
    """

    def __init__(
        self,
        function: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        strict: bool = False,
        timeout: float | None = None,
        requires_approval: bool = False,
        safe_errors: tuple[type[BaseException], ...] = (),
        run_in_thread: bool = True,
    ) -> None:
        if not callable(function):
            raise ConfigurationError(f"@tool needs a function, not {function!r}")
        self.function = function
        self.name = name if name is not None else getattr(function, "__name__", "")
        if not _NAME.fullmatch(self.name):
            raise ConfigurationError(
                f"tool name {self.name!r} is not allowed: use 1 to 64 ASCII letters, digits, "
                "'_' or '-' (what OpenAI accepts); pass name= to @tool"
            )
        if timeout is not None and not timeout > 0:
            raise ConfigurationError(f"timeout must be positive seconds or None, not {timeout!r}")
        for error_type in safe_errors:
            if not (isinstance(error_type, type) and issubclass(error_type, BaseException)):
                raise ConfigurationError(f"safe_errors takes exception types, not {error_type!r}")
        summary, arg_docs = parse_docstring(inspect.getdoc(function) or "")
        self.description = summary if description is None else description
        self._model, self._fields = _arguments_model(function, self.name, arg_docs)
        schema = _clean_schema(self._model.model_json_schema(by_alias=True))
        if strict:
            _make_strict(schema, self.name)
        self.parameters: Mapping[str, Any] = schema
        self.strict = strict
        self.timeout = timeout
        self.requires_approval = requires_approval
        self.safe_errors = tuple(safe_errors)
        self.run_in_thread = run_in_thread
        self.is_async = inspect.iscoroutinefunction(function)
        self.spec = ToolSpec(
            name=self.name, description=self.description, parameters=schema, strict=strict
        )
        self.__name__ = getattr(function, "__name__", self.name)
        self.__qualname__ = getattr(function, "__qualname__", self.name)
        self.__doc__ = getattr(function, "__doc__", None)
        self.__wrapped__ = function

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the function directly (no validation: this is your own call)."""
        return self.function(*args, **kwargs)

    def validate_json(self, raw: str) -> dict[str, Any]:
        """Validate raw JSON arguments; return keyword arguments for the function.

        Raises ``pydantic.ValidationError`` (not JSON, not an object, unknown keys,
        missing keys, wrong types: strict validation, no coercion of ``"5"`` to ``5``).
        Size and depth limits are the ``Toolbox``'s job and come before this.
        """
        instance = self._model.model_validate_json(raw, strict=True)
        return {param: getattr(instance, field) for param, field in self._fields}

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"


@overload
def tool(function: Callable[P, R], /) -> Tool[P, R]: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    strict: bool = False,
    timeout: float | None = None,
    requires_approval: bool = False,
    safe_errors: tuple[type[BaseException], ...] = (),
    run_in_thread: bool = True,
) -> Callable[[Callable[P, R]], Tool[P, R]]: ...


def tool(
    function: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    strict: bool = False,
    timeout: float | None = None,
    requires_approval: bool = False,
    safe_errors: tuple[type[BaseException], ...] = (),
    run_in_thread: bool = True,
) -> Tool[P, R] | Callable[[Callable[P, R]], Tool[P, R]]:
    """Turn a typed function (sync or async) into a ``Tool``.

    Every parameter needs a type annotation; the docstring's first part becomes the
    description and its ``Args:`` section (or ``:param x:`` lines) the parameters'
    descriptions. ``*args``, ``**kwargs`` and positional-only parameters are refused.

    Args:
        name: the tool's name (default: the function's name).
        description: what the model is told (default: the docstring's summary).
        strict: offer the schema in the provider's strict mode (OpenAI structured
            tool calls). Every parameter must then be required (no defaults).
        timeout: seconds one run may take; ``None`` uses the ``Toolbox``'s default.
        requires_approval: the ``Toolbox`` awaits its ``approve`` callback before
            each run; a denial goes back to the model.
        safe_errors: exception types whose text may be shown to the model; any other
            exception is reported to the model as a generic failure.
        run_in_thread: run a sync function in a worker thread (default) so it cannot
            block the event loop; ``False`` calls it inline (only for fast, pure code).
    """

    def build(fn: Callable[P, R]) -> Tool[P, R]:
        return Tool(
            fn,
            name=name,
            description=description,
            strict=strict,
            timeout=timeout,
            requires_approval=requires_approval,
            safe_errors=safe_errors,
            run_in_thread=run_in_thread,
        )

    if function is not None:
        return build(function)
    return build


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The summary (text before the first section) and each argument's description."""
    summary: list[str] = []
    args: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    for line in doc.splitlines():
        stripped = line.strip()
        sphinx = _SPHINX_PARAM.match(stripped)
        if sphinx:
            current = sphinx.group(1)
            args[current] = sphinx.group(2).strip()
            section = "sphinx"
            continue
        header = _SECTION.match(stripped)
        if header:
            section = header.group(1).lower()
            current = None
            continue
        if section is None:
            summary.append(line)
        elif section in ("args", "arguments", "parameters", "params", "sphinx"):
            indent = len(line) - len(line.lstrip())
            match = _ARG_LINE.match(stripped)
            if match and (indent <= 4 or current is None) and section != "sphinx":
                current = match.group(1).lstrip("*")
                args[current] = match.group(2).strip()
            elif stripped and current is not None:
                args[current] = f"{args[current]} {stripped}".strip()
    return "\n".join(summary).strip(), args


def _arguments_model(
    function: Callable[..., Any], name: str, docs: Mapping[str, str]
) -> tuple[type[BaseModel], tuple[tuple[str, str], ...]]:
    from pydantic import ConfigDict, Field, PydanticUserError, create_model

    try:
        signature = inspect.signature(function, eval_str=True)
    except (NameError, TypeError) as exc:
        raise ConfigurationError(f"tool {name!r}: cannot read the signature: {exc}") from exc
    fields: dict[str, Any] = {}
    names: list[tuple[str, str]] = []
    for index, (param_name, param) in enumerate(signature.parameters.items()):
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise ConfigurationError(
                f"tool {name!r}: parameter {param_name!r} must be a plain or keyword-only "
                "parameter (no *args, **kwargs or positional-only): the model sends names"
            )
        if param.annotation is inspect.Parameter.empty:
            raise ConfigurationError(
                f"tool {name!r}: parameter {param_name!r} needs a type annotation "
                "(the schema and the validation come from it)"
            )
        extra: dict[str, Any] = {"alias": param_name}
        if param_name in docs:
            extra["description"] = docs[param_name]
        default = ... if param.default is inspect.Parameter.empty else param.default
        field_name = f"p{index}"  # never shadows a BaseModel attribute; the alias is the name
        fields[field_name] = (param.annotation, Field(default, **extra))
        names.append((param_name, field_name))
    try:
        model = create_model(
            f"{name}_arguments",
            __config__=ConfigDict(extra="forbid", populate_by_name=False),
            **fields,
        )
    except (PydanticUserError, TypeError) as exc:
        raise ConfigurationError(f"tool {name!r}: {exc}") from exc
    return model, tuple(names)


def _clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    schema.pop("title", None)
    schema.setdefault("properties", {})
    schema["type"] = "object"
    schema["additionalProperties"] = False
    for prop in schema["properties"].values():
        if isinstance(prop, dict):
            prop.pop("title", None)
    return schema


def _make_strict(schema: dict[str, Any], name: str) -> None:
    """OpenAI's strict mode: every object closed, every property required."""
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("type") == "object" or "properties" in node:
                props = node.get("properties", {})
                missing = sorted(set(props) - set(node.get("required", ())))
                if missing:
                    raise ConfigurationError(
                        f"tool {name!r}: strict mode needs every property required, "
                        f"but {missing} have defaults; drop the defaults or strict=True"
                    )
                node["additionalProperties"] = False
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def effective_timeout(tool_timeout: float | None, default: float | None) -> float | None:
    """The tool's own timeout, else the toolbox's; ``math.inf`` means none."""
    value = tool_timeout if tool_timeout is not None else default
    if value is None or math.isinf(value):
        return None
    return value

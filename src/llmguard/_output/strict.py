"""Make a JSON schema strict-compatible, and say which parts cannot be.

Strict mode (OpenAI's Structured Outputs) accepts a subset of JSON Schema: every
object closed (``additionalProperties: false``) and every property required; types,
``enum``, ``const``, ``anyOf``, ``$ref``/``$defs``; ``pattern``, a few string
formats, number bounds and ``minItems``/``maxItems``. So:

- a property the type lets you leave out becomes required and nullable; a ``null``
  for it then means "left out", and a ``Pruner`` drops it before validation so the
  field's default applies;
- ``oneOf`` (pydantic's discriminated unions) becomes ``anyOf``, a one-element
  ``allOf`` and a ``$ref`` with siblings are inlined, ``default`` and
  ``discriminator`` are dropped;
- constraints strict mode does not accept (``minLength``, ``uniqueItems``,
  ``format: uri``…) move into the description ("relaxed"): validation still
  enforces them;
- what cannot be expressed at all (free-form mappings such as ``dict[str, int]``,
  ``Any``, fixed-length tuples, ``not``, ``if``/``then``…) is a "problem", reported
  with where it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["Pruner", "StrictSchema", "make_strict"]

_STRUCTURAL = {
    "not": "a 'not' schema",
    "if": "if/then/else",
    "then": "if/then/else",
    "else": "if/then/else",
    "dependentSchemas": "dependentSchemas",
    "dependentRequired": "dependentRequired",
    "patternProperties": "patternProperties",
    "unevaluatedProperties": "unevaluatedProperties",
    "propertyNames": "propertyNames",
    "prefixItems": "a fixed-length tuple (prefixItems)",
}
_RELAXED = (
    "minLength",
    "maxLength",
    "uniqueItems",
    "contains",
    "minContains",
    "maxContains",
    "unevaluatedItems",
    "minProperties",
    "maxProperties",
)
_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
)


class Pruner:
    """Drops ``null`` values that stand for "left out" from parsed JSON, in place."""

    __slots__ = ()

    def accepts(self, data: Any) -> bool:
        return False

    def prune(self, data: Any) -> bool:
        """Prune ``data``; true if anything was dropped."""
        return False


class _Object(Pruner):
    __slots__ = ("children", "drop", "keys")

    def __init__(self, keys: frozenset[str], drop: frozenset[str], children: dict[str, Pruner]):
        self.keys = keys
        self.drop = drop
        self.children = children

    def accepts(self, data: Any) -> bool:
        return type(data) is dict and self.keys.issuperset(data)

    def prune(self, data: Any) -> bool:
        if type(data) is not dict:
            return False
        changed = False
        for key in self.drop:
            if key in data and data[key] is None:
                del data[key]
                changed = True
        for key, child in self.children.items():
            value = data.get(key)
            if value is not None and child.prune(value):
                changed = True
        return changed


class _Array(Pruner):
    __slots__ = ("item",)

    def __init__(self, item: Pruner) -> None:
        self.item = item

    def accepts(self, data: Any) -> bool:
        return type(data) is list

    def prune(self, data: Any) -> bool:
        if type(data) is not list:
            return False
        changed = False
        for value in data:
            if self.item.prune(value):
                changed = True
        return changed


class _Ref(Pruner):
    __slots__ = ("name", "table")

    def __init__(self, name: str, table: dict[str, Pruner]) -> None:
        self.name = name
        self.table = table

    def accepts(self, data: Any) -> bool:
        return self.table.get(self.name, _NOTHING).accepts(data)

    def prune(self, data: Any) -> bool:
        return self.table.get(self.name, _NOTHING).prune(data)


class _Union(Pruner):
    """Prunes with the first option whose shape the value fits (an object whose keys
    are all properties of the option, a list for an array option)."""

    __slots__ = ("options",)

    def __init__(self, options: tuple[Pruner, ...]) -> None:
        self.options = options

    def accepts(self, data: Any) -> bool:
        return any(option.accepts(data) for option in self.options)

    def prune(self, data: Any) -> bool:
        for option in self.options:
            if option.accepts(data):
                return option.prune(data)
        return False


_NOTHING = Pruner()


@dataclass(frozen=True, slots=True)
class StrictSchema:
    schema: dict[str, Any]
    problems: tuple[str, ...]
    relaxed: tuple[str, ...]
    pruner: Pruner | None  # None: no property needs its null dropped


def make_strict(root: dict[str, Any], defs: dict[str, Any], name: str) -> StrictSchema:
    """The strict form of ``root`` (an object schema) with its ``$defs``."""
    builder = _Builder(defs)
    new_defs: dict[str, Any] = {}
    for def_name, definition in defs.items():
        new_defs[def_name], def_pruner = builder.node(definition, def_name)
        builder.pruners[def_name] = def_pruner or _NOTHING
    schema, pruner = builder.node(root, name)
    if new_defs:
        schema["$defs"] = new_defs
    return StrictSchema(
        schema=schema,
        problems=tuple(dict.fromkeys(builder.problems)),
        relaxed=tuple(dict.fromkeys(builder.relaxed)),
        pruner=pruner if builder.drops else None,
    )


def is_nullable(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    if "const" in schema and schema["const"] is None:
        return True
    if None in (schema.get("enum") or ()):
        return True
    return any(is_nullable(option) for option in schema.get("anyOf") or ())


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    outer: dict[str, Any] = {k: schema.pop(k) for k in ("title", "description") if k in schema}
    options = schema.pop("anyOf") if set(schema) == {"anyOf"} else [schema]
    outer["anyOf"] = [*options, {"type": "null"}]
    return outer


class _Builder:
    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs
        self.pruners: dict[str, Pruner] = {}
        self.problems: list[str] = []
        self.relaxed: list[str] = []
        self.inlining: set[str] = set()
        self.drops = False

    def problem(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}")

    def resolve(self, ref: str) -> dict[str, Any] | None:
        prefix = "#/$defs/"
        if ref.startswith(prefix):
            target = self.defs.get(ref[len(prefix) :])
            if isinstance(target, dict):
                return target
        return None

    def node(self, raw: Any, where: str) -> tuple[dict[str, Any], Pruner | None]:
        """The strict form of one schema node, and its pruner."""
        if not isinstance(raw, dict):
            self.problem(where, f"{raw!r} is not a schema")
            return {}, None
        if not raw or set(raw) <= {"title", "description", "default"}:
            self.problem(where, "a value of any type (Any) has no schema strict mode accepts")
            return dict(raw), None
        node = dict(raw)
        ref = node.get("$ref")
        if isinstance(ref, str):
            return self._ref(node, ref, where)
        all_of = node.pop("allOf", None)
        if all_of is not None:
            if isinstance(all_of, list) and len(all_of) == 1:
                return self.node({**all_of[0], **node}, where)
            self.problem(where, "an intersection of several schemas (allOf)")
        node.pop("default", None)
        node.pop("discriminator", None)
        if "oneOf" in node:
            if "anyOf" in node:
                self.problem(where, "both oneOf and anyOf")
            node["anyOf"] = node.pop("oneOf")
        for key, what in _STRUCTURAL.items():
            if key in node:
                node.pop(key)
                self.problem(where, f"{what} cannot be expressed")
        self._relax(node, where)
        return node, self._shape(node, "prefixItems" in raw, where)

    def _ref(
        self, node: dict[str, Any], ref: str, where: str
    ) -> tuple[dict[str, Any], Pruner | None]:
        name = ref.rsplit("/", 1)[-1]
        if len(node) == 1:
            return node, _Ref(name, self.pruners)
        target = self.resolve(ref)
        if target is None:
            self.problem(where, f"the reference {ref} cannot be resolved")
            return node, None
        if name in self.inlining:  # a recursive type: keep the bare reference
            return {"$ref": ref}, _Ref(name, self.pruners)
        # Strict mode takes no siblings next to $ref: inline the definition.
        node.pop("$ref")
        self.inlining.add(name)
        try:
            return self.node({**target, **node}, where)
        finally:
            self.inlining.discard(name)

    def _shape(self, node: dict[str, Any], tuple_like: bool, where: str) -> Pruner | None:
        kind = node.get("type")
        kinds = {kind} if isinstance(kind, str) else set(kind or ())
        pruner: Pruner | None = None
        if "object" in kinds or "properties" in node:
            pruner = self._object(node, where)
        if "array" in kinds or "items" in node:
            items = node.get("items")
            if isinstance(items, dict):
                node["items"], item = self.node(items, f"{where}[]")
                pruner = _Array(item or _NOTHING)
            elif not tuple_like:
                self.problem(where, "an array without an item schema")
        options = node.get("anyOf")
        if isinstance(options, list):
            built = [
                self.node(option, f"{where} (option {i + 1})") for i, option in enumerate(options)
            ]
            node["anyOf"] = [schema for schema, _ in built]
            pruner = _Union(tuple(p or _NOTHING for _, p in built))
        return pruner

    def _relax(self, node: dict[str, Any], where: str) -> None:
        notes = [f"{key}={json.dumps(node.pop(key))}" for key in _RELAXED if key in node]
        fmt = node.get("format")
        if fmt is not None and fmt not in _FORMATS:
            notes.append(f"format={node.pop('format')}")
        if notes:
            note = ", ".join(notes)
            self.relaxed.append(f"{where}: {note}")
            description = node.get("description")
            node["description"] = f"{description} ({note})" if description else note

    def _object(self, node: dict[str, Any], where: str) -> Pruner:
        if node.get("additionalProperties", False) is not False:
            self.problem(
                where,
                "a mapping with free-form keys (dict[str, ...], extra='allow') has no fixed "
                "properties",
            )
        node["additionalProperties"] = False
        properties = node.get("properties") or {}
        required = set(node.get("required") or ())
        new: dict[str, Any] = {}
        drop: set[str] = set()
        children: dict[str, Pruner] = {}
        for key, raw in properties.items():
            schema, child = self.node(raw, f"{where}.{key}")
            if key not in required and not is_nullable(schema):
                schema = _nullable(schema)
                drop.add(key)
            new[key] = schema
            if child is not None:
                children[key] = child
        node["properties"] = new
        node["required"] = list(new)
        if drop:
            self.drops = True
        return _Object(frozenset(new), frozenset(drop), children)

"""Strict-compatible schemas: what changes, what is reported, what is cached."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any, Literal

import pytest
from pydantic import AnyUrl, BaseModel, ConfigDict, Field, TypeAdapter
from typing_extensions import TypedDict

from llmguard import ConfigurationError, OutputSchema, output_schema
from llmguard._output.strict import make_strict


class Item(BaseModel):
    name: str = Field(description="what it is")
    qty: int = 1
    tags: set[str] = set()


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Order(BaseModel):
    """An order."""

    item: Item = Field(description="the main item")
    items: list[Item]
    pet: Annotated[Cat | Dog, Field(discriminator="kind")]
    note: str | None = None


class Node(BaseModel):
    name: str
    children: list[Node] = []
    parent: Node | None = Field(default=None, description="up")


def walk(schema: Any) -> list[dict[str, Any]]:
    """Every schema object inside ``schema``."""
    found: list[dict[str, Any]] = []
    if isinstance(schema, dict):
        found.append(schema)
        for value in schema.values():
            found.extend(walk(value))
    elif isinstance(schema, list):
        for value in schema:
            found.extend(walk(value))
    return found


def test_every_object_is_closed_and_every_property_required() -> None:
    schema = output_schema(Order)
    assert schema.strict
    assert schema.problems == ()
    objects = [s for s in walk(schema.json_schema) if s.get("type") == "object"]
    assert len(objects) >= 4  # Order, Item, Cat, Dog
    for obj in objects:
        assert obj["additionalProperties"] is False
        assert obj["required"] == list(obj["properties"])


def test_a_field_with_a_default_becomes_nullable() -> None:
    item = output_schema(Order).json_schema["$defs"]["Item"]
    assert item["properties"]["qty"] == {
        "title": "Qty",
        "anyOf": [{"type": "integer"}, {"type": "null"}],
    }
    note = output_schema(Order).json_schema["properties"]["note"]
    assert note["anyOf"] == [{"type": "string"}, {"type": "null"}]  # already nullable: as is
    assert not any("default" in s for s in walk(output_schema(Order).json_schema))


def test_discriminated_unions_become_any_of() -> None:
    pet = output_schema(Order).json_schema["properties"]["pet"]
    assert "oneOf" not in pet
    assert "discriminator" not in pet
    assert pet["anyOf"] == [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}]


def test_a_reference_with_siblings_is_inlined() -> None:
    item = output_schema(Order).json_schema["properties"]["item"]
    assert "$ref" not in item
    assert item["description"] == "the main item"
    assert item["type"] == "object"
    assert item["additionalProperties"] is False


def test_recursive_models_keep_their_references() -> None:
    schema = output_schema(Node)
    assert schema.strict
    assert not schema.wrapped
    props = schema.json_schema["properties"]
    assert props["children"]["anyOf"][0]["items"] == {"$ref": "#/$defs/Node"}
    assert props["parent"]["anyOf"] == [{"$ref": "#/$defs/Node"}, {"type": "null"}]


def test_unsupported_constraints_move_into_the_description() -> None:
    class Link(BaseModel):
        url: AnyUrl
        code: str = Field(min_length=2, max_length=5, description="a code")
        when: str = Field(json_schema_extra={"format": "date-time"})

    schema = output_schema(Link)
    assert schema.strict
    props = schema.json_schema["properties"]
    assert props["url"]["description"] == "minLength=1, format=uri"
    assert "format" not in props["url"]
    assert props["code"]["description"] == "a code (minLength=2, maxLength=5)"
    assert props["when"]["format"] == "date-time"  # a format strict mode accepts stays
    assert schema.relaxed == (
        "Link.url: minLength=1, format=uri",
        "Link.code: minLength=2, maxLength=5",
    )


def test_what_cannot_be_strict_is_reported_with_where_it_is() -> None:
    class Loose(BaseModel):
        model_config = ConfigDict(extra="allow")
        counts: dict[str, int]
        anything: Any
        pair: tuple[int, str]

    schema = output_schema(Loose)
    assert not schema.strict
    assert schema.problems == (
        "Loose: a mapping with free-form keys (dict[str, ...], extra='allow') has no fixed "
        "properties",
        "Loose.counts: a mapping with free-form keys (dict[str, ...], extra='allow') has no "
        "fixed properties",
        "Loose.anything: a value of any type (Any) has no schema strict mode accepts",
        "Loose.pair: a fixed-length tuple (prefixItems) cannot be expressed",
    )


def test_schemas_pydantic_does_not_make_are_reported_too() -> None:
    raw = {
        "type": "object",
        "properties": {
            "a": {"allOf": [{"type": "integer"}, {"minimum": 0}]},
            "b": {"not": {"type": "null"}},
            "c": {"allOf": [{"$ref": "#/$defs/X"}]},
            "d": {"$ref": "#/$defs/Missing", "description": "?"},
            "e": {"type": "array"},
        },
        "required": ["a", "b", "c", "d", "e"],
    }
    strict = make_strict(raw, {"X": {"type": "string"}}, "Raw")
    assert strict.problems == (
        "Raw.a: an intersection of several schemas (allOf)",
        "Raw.b: a 'not' schema cannot be expressed",
        "Raw.d: the reference #/$defs/Missing cannot be resolved",
        "Raw.e: an array without an item schema",
    )
    assert strict.schema["properties"]["c"] == {"$ref": "#/$defs/X"}  # one-element allOf inlined
    assert strict.pruner is None  # nothing to drop: every property was required


def test_types_that_are_not_objects_are_wrapped() -> None:
    class Row(TypedDict):
        a: int

    @dataclasses.dataclass
    class Point:
        x: int

    for wrapped in (list[Item], int, str, Cat | Dog, Literal["a", "b"]):
        schema = output_schema(TypeAdapter(wrapped) if wrapped is not int else wrapped)
        assert schema.wrapped, wrapped
        assert schema.json_schema["required"] == ["result"]
    for plain in (Item, Row, Point, Node):
        assert not output_schema(plain).wrapped
    assert output_schema(list[Item]).name == "list_Item"
    assert output_schema(int).name == "int"


def test_the_response_format_and_the_instructions() -> None:
    schema = output_schema(Order)
    assert schema.response_format == {
        "type": "json_schema",
        "json_schema": {"name": "Order", "schema": schema.json_schema, "strict": True},
    }
    assert schema.prompt_schema == Order.model_json_schema()
    assert schema.instructions.startswith("Respond with one JSON value and nothing else")
    assert '"title": "Order"' in schema.instructions


def test_schemas_are_built_once_per_type() -> None:
    assert output_schema(Order) is output_schema(Order)
    assert output_schema(list[Item]) is output_schema(list[Item])
    unhashable = Annotated[int, {"not": "hashable"}]
    assert isinstance(output_schema(unhashable), OutputSchema)


def test_a_type_pydantic_cannot_describe_is_a_configuration_error() -> None:
    class Opaque:
        pass

    with pytest.raises(ConfigurationError, match="cannot be used as an output type"):
        output_schema(Opaque)


class CatD(BaseModel):
    kind: Literal["cat"]
    lives: int = 9


class DogD(BaseModel):
    kind: Literal["dog"]
    good: bool = True


class Home(BaseModel):
    pets: list[CatD | DogD]
    owner: Annotated[CatD | DogD, Field(discriminator="kind")]


def test_a_left_out_null_inside_a_union_gets_its_default() -> None:
    from llmguard._output.schema import output_spec

    answer = (
        '{"pets": [{"kind": "dog", "good": null}, {"kind": "cat", "lives": null}], '
        '"owner": {"kind": "cat", "lives": null}}'
    )
    home = output_spec(Home).parse(answer)
    assert home == Home(pets=[DogD(kind="dog"), CatD(kind="cat")], owner=CatD(kind="cat"))


def test_nullable_forms_are_recognised_and_odd_schemas_reported() -> None:
    raw = {
        "type": "object",
        "properties": {
            "a": {"const": None},
            "b": {"enum": ["x", None]},
            "c": {"type": ["string", "null"]},
            "d": {"$ref": "#/definitions/X", "description": "elsewhere"},
            "e": 5,
            "f": {"oneOf": [{"type": "string"}], "anyOf": [{"type": "integer"}]},
        },
        "required": ["d", "e", "f"],
    }
    strict = make_strict(raw, {}, "Odd")
    props = strict.schema["properties"]
    assert (props["a"], props["b"], props["c"]) == (
        {"const": None},
        {"enum": ["x", None]},
        {"type": ["string", "null"]},
    )
    assert strict.pruner is None  # nothing became nullable
    assert strict.problems == (
        "Odd.d: the reference #/definitions/X cannot be resolved",
        "Odd.e: 5 is not a schema",
        "Odd.f: both oneOf and anyOf",
    )


class Chain(BaseModel):
    name: str
    next: Chain | None = None
    head: Chain = Field(description="the first link")


def test_a_recursive_reference_with_siblings_is_inlined_once() -> None:
    schema = output_schema(Chain).json_schema
    head = schema["properties"]["head"]
    assert head["description"] == "the first link"
    assert head["properties"]["head"] == {"$ref": "#/$defs/Chain"}


def test_errors_of_a_wrapped_value_point_inside_it() -> None:
    from llmguard._output.schema import InvalidOutput, output_spec

    spec = output_spec(list[CatD])
    with pytest.raises(InvalidOutput, match=r"expected a JSON object of the form \{\"result\""):
        spec.parse("[]")
    with pytest.raises(InvalidOutput, match=r"result\[1\]\.kind: field required"):
        spec.parse('{"result": [{"kind": "cat"}, {}]}')
    with pytest.raises(InvalidOutput, match="not valid JSON"):
        spec.parse('{"result": [}')
    assert spec.parse('{"result": [{"kind": "cat", "lives": null}]}') == [CatD(kind="cat")]


def test_many_errors_are_cut_short() -> None:
    from llmguard._output.schema import InvalidOutput, output_spec

    many = output_spec(list[int])
    with pytest.raises(InvalidOutput) as caught:
        many.parse(json.dumps({"result": ["x"] * 14}))
    message = caught.value.message
    assert message.startswith("14 validation errors:")
    assert message.count("\n- result[") == 10
    assert message.endswith("- and 4 more")

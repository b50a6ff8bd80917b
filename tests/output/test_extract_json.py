"""Tolerant extraction: the JSON in an answer is found, and nothing else is made up."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from llmguard._output.extract import json_candidates, strip_trailing_commas
from llmguard._output.schema import InvalidOutput, output_spec

PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
documents = st.lists(values, max_size=4) | st.dictionaries(st.text(max_size=6), values, max_size=4)
prose = st.text(st.characters(blacklist_characters="{}[]`"), max_size=40)
any_text = st.text(max_size=60)


def first(text: str) -> Any:
    return json.loads(next(json_candidates(text)))


def trailing_commas(value: Any) -> str:
    """``value`` as JSON with a trailing comma in every non-empty array and object."""
    if isinstance(value, list):
        if not value:
            return "[]"
        return "[" + ", ".join(trailing_commas(v) for v in value) + ",\n]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = (f"{json.dumps(k)}: {trailing_commas(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + ", }"
    return json.dumps(value)


@PROPERTY
@given(documents, prose, prose, st.sampled_from([None, 2]))
def test_recovers_a_value_from_surrounding_prose(
    value: Any, before: str, after: str, indent: int | None
) -> None:
    text = f"{before}\n{json.dumps(value, indent=indent)}\n{after}"
    assert first(text) == value


@PROPERTY
@given(documents, any_text, any_text, st.sampled_from(["json", "JSON", ""]))
def test_recovers_a_fenced_value_whatever_the_prose(
    value: Any, before: str, after: str, label: str
) -> None:
    before, after = before.replace("`", "'"), after.replace("`", "'")
    text = f"{before}\n```{label}\n{json.dumps(value, indent=2)}\n```\n{after}"
    assert first(text) == value


@PROPERTY
@given(documents, prose, prose, st.booleans())
def test_recovers_a_value_written_with_trailing_commas(
    value: Any, before: str, after: str, fenced: bool
) -> None:
    body = trailing_commas(value)
    text = f"{before}\n```json\n{body}\n```\n{after}" if fenced else f"{before}\n{body}\n{after}"
    assert first(text) == value


@PROPERTY
@given(any_text)
def test_never_returns_anything_that_is_not_in_the_text(text: str) -> None:
    for candidate in json_candidates(text):
        json.loads(candidate)  # it is JSON
        # ... and a piece of the answer, at most with commas dropped.
        assert candidate.replace(",", "") in text.replace(",", "")


@PROPERTY
@given(documents, any_text, any_text)
def test_every_candidate_is_a_piece_of_the_answer(value: Any, before: str, after: str) -> None:
    text = f"{before}{json.dumps(value)}{after}"
    for candidate in json_candidates(text):
        assert candidate.replace(",", "") in text.replace(",", "")


class Pet(BaseModel):
    name: str
    age: int
    tags: list[str]
    owner: str | None = None


@PROPERTY
@given(st.builds(Pet), prose, prose, st.booleans())
def test_a_model_instance_comes_back_equal(pet: Pet, before: str, after: str, fenced: bool) -> None:
    dumped = pet.model_dump_json(indent=2)
    text = (
        f"{before}\n```json\n{dumped}\n```\n{after}" if fenced else f"{before}\n{dumped}\n{after}"
    )
    assert output_spec(Pet).parse(text) == pet


# --- examples of what is tolerated, and what is not ------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('  \n{"a": 1}\n ', {"a": 1}),
        ('Here you go: {"a": 1}. Anything else?', {"a": 1}),
        ('```json\n{"a": 1}\n```', {"a": 1}),
        ('```\n{"a": 1}\n```', {"a": 1}),
        ('Sure.\n```JSON\n{"a": 1}\n```\nDone.', {"a": 1}),
        ('```json\n{"a": 1}', {"a": 1}),  # a fence the answer never closed
        ('```python\nprint(1)\n```\n```json\n{"a": 1}\n```', {"a": 1}),
        ('{"a": [1, 2,],}', {"a": [1, 2]}),
        ('{\n  "a": 1,\n}', {"a": 1}),
        ('{"a": "x,]"}', {"a": "x,]"}),  # commas and brackets inside strings are text
        ('See [1] and [2]: {"a": {"b": "}"}} thanks', {"a": {"b": "}"}}),
        ("[1, 2, 3] is bigger than [1]", [1, 2, 3]),
    ],
)
def test_what_is_tolerated(text: str, expected: Any) -> None:
    assert first(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "no json here",
        "{'a': 1}",  # single quotes
        "{a: 1}",  # unquoted key
        '{"a": 1',  # unclosed
        '{"a": 1 // comment\n}',
        '{"a": True}',
        '{"a": NaN}',
        "[1,, 2]",
        '{"a": "unterminated}',
    ],
)
def test_what_is_not_guessed(text: str) -> None:
    assert list(json_candidates(text)) == []


def test_a_whole_json_answer_is_the_answer() -> None:
    assert list(json_candidates('"just a string"')) == ['"just a string"']
    assert list(json_candidates("[1] [2]")) == ["[1]", "[2]"]


def test_strip_trailing_commas_only_takes_one_bracketed_value() -> None:
    assert strip_trailing_commas("[1, 2,]") == "[1, 2]"
    assert strip_trailing_commas('"a"') is None
    assert strip_trailing_commas("[1] tail") is None


def test_pathological_prose_is_bounded() -> None:
    text = "[" * 5000 + '{"a": 1}'
    assert list(json_candidates(text)) == []  # the bound stops before the object is reached
    assert first("[" * 10 + ' {"a": 1}') == {"a": 1}


def test_each_candidate_is_validated_in_turn() -> None:
    class Point(BaseModel):
        x: int
        y: int

    spec = output_spec(Point)
    text = 'Coordinates [1, 2] as an object: {"x": 1, "y": 2}'
    assert spec.parse(text) == Point(x=1, y=2)
    with pytest.raises(InvalidOutput, match="no JSON object was found"):
        spec.parse("I don't know.")
    with pytest.raises(InvalidOutput, match="y: field required"):
        spec.parse('Maybe {"x": 1}?')
    with pytest.raises(InvalidOutput, match="not valid JSON"):
        spec.parse('{"x": 1, "y": }')

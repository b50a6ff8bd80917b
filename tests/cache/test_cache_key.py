"""The cache key: everything that changes the answer changes it; nothing else does."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llmguard
from llmguard import Cache, CallContext, Guard, Message, Request, ToolCall, ToolSpec
from llmguard._cache_key import IGNORED_EXTRAS, canonical_json, key_prefix, request_key
from llmguard.testing import FakeProvider

PREFIX = key_prefix("llmguard", "1")

BASE = Request(
    model="gpt-4o-mini",
    messages=(
        Message(role="system", content="Be brief."),
        Message(role="user", content="What is the capital of France?"),
        Message.assistant(tool_calls=[ToolCall(id="call_1", name="lookup", arguments='{"q":"x"}')]),
        Message.tool('{"answer": "Paris"}', tool_call_id="call_1"),
    ),
    tools=(ToolSpec(name="lookup", description="Look up", parameters={"type": "object"}),),
    tool_choice="auto",
    response_format={"type": "json_object"},
    temperature=0.2,
    top_p=0.9,
    max_output_tokens=100,
    stop=("END",),
    seed=7,
    extras={"frequency_penalty": 0.5, "user": "end-user-1"},
)


def key(request: Request, *, provider: str = "openai", scope: str | None = None) -> str:
    return request_key(request, prefix=PREFIX, provider=provider, scope=scope)


def with_message(index: int, **changes: Any) -> Request:
    messages = list(BASE.messages)
    messages[index] = dataclasses.replace(messages[index], **changes)
    return dataclasses.replace(BASE, messages=tuple(messages))


def with_extras(**changes: Any) -> Request:
    return dataclasses.replace(BASE, extras={**BASE.extras, **changes})


ANSWER_CHANGING: dict[str, Request] = {
    "model": dataclasses.replace(BASE, model="gpt-4o"),
    "message text": with_message(1, content="What is the capital of Spain?"),
    "message role": with_message(0, role="developer"),
    "message name": with_message(1, name="alice"),
    "tool call id": with_message(3, tool_call_id="call_2"),
    "tool call arguments": with_message(
        2, tool_calls=(ToolCall(id="call_1", name="lookup", arguments='{"q":"y"}'),)
    ),
    "tool call name": with_message(
        2, tool_calls=(ToolCall(id="call_1", name="search", arguments='{"q":"x"}'),)
    ),
    "one more message": dataclasses.replace(BASE, messages=(*BASE.messages, Message.user("and?"))),
    "one message less": dataclasses.replace(BASE, messages=BASE.messages[1:]),
    "text moved between messages": dataclasses.replace(
        BASE,
        messages=(
            Message(role="system", content="Be brief.What is the capital of France?"),
            Message(role="user", content=""),
            *BASE.messages[2:],
        ),
    ),
    "tool name": dataclasses.replace(BASE, tools=(ToolSpec(name="find", parameters={}),)),
    "tool description": dataclasses.replace(
        BASE, tools=(ToolSpec(name="lookup", description="Find", parameters={"type": "object"}),)
    ),
    "tool schema": dataclasses.replace(
        BASE, tools=(ToolSpec(name="lookup", description="Look up", parameters={"type": "array"}),)
    ),
    "tool strict": dataclasses.replace(
        BASE,
        tools=(
            ToolSpec(
                name="lookup", description="Look up", parameters={"type": "object"}, strict=True
            ),
        ),
    ),
    "no tools": dataclasses.replace(BASE, tools=()),
    "tool_choice": dataclasses.replace(BASE, tool_choice="required"),
    "tool_choice mapping": dataclasses.replace(
        BASE, tool_choice={"type": "function", "function": {"name": "lookup"}}
    ),
    "response_format": dataclasses.replace(
        BASE, response_format={"type": "json_schema", "json_schema": {"name": "x"}}
    ),
    "no response_format": dataclasses.replace(BASE, response_format=None),
    "temperature": dataclasses.replace(BASE, temperature=0.3),
    "no temperature": dataclasses.replace(BASE, temperature=None),
    "top_p": dataclasses.replace(BASE, top_p=1.0),
    "max_output_tokens": dataclasses.replace(BASE, max_output_tokens=101),
    "stop": dataclasses.replace(BASE, stop=("END", "STOP")),
    "seed": dataclasses.replace(BASE, seed=8),
    "known extra": with_extras(frequency_penalty=0.6),
    "unknown extra": with_extras(x_vendor_knob=1),
    "unknown extra's nested value": with_extras(x_vendor={"a": {"b": 1}}),
    "logit_bias": with_extras(logit_bias={"50256": -100}),
    "reasoning effort": with_extras(reasoning_effort="high"),
}


def test_every_field_that_changes_the_answer_changes_the_key() -> None:
    keys = {name: key(request) for name, request in ANSWER_CHANGING.items()}
    base = key(BASE)
    assert all(k != base for k in keys.values()), [n for n, k in keys.items() if k == base]
    assert len(set(keys.values())) == len(keys), "two different requests share a key"
    nested = key(with_extras(x_vendor={"a": {"b": 2}}))
    assert nested != keys["unknown extra's nested value"]


def test_provider_scope_namespace_and_version_change_the_key() -> None:
    base = key(BASE)
    assert key(BASE, provider="azure") != base
    assert key(BASE, scope="tenant-a") != base
    assert key(BASE, scope="tenant-a") != key(BASE, scope="tenant-b")
    assert request_key(BASE, prefix=key_prefix("app2", "1"), provider="openai") != base
    assert request_key(BASE, prefix=key_prefix("llmguard", "2"), provider="openai") != base
    assert base.startswith("llmguard:1:k1:") and len(base) == len("llmguard:1:k1:") + 64


@pytest.mark.parametrize("name", sorted(IGNORED_EXTRAS))
def test_the_listed_irrelevant_extras_do_not_change_the_key(name: str) -> None:
    assert key(with_extras(**{name: {"trace": "abc-123"}})) == key(BASE)
    assert key(with_extras(**{name: "something else"})) == key(BASE)


def test_the_ignored_list_is_short_and_documented() -> None:
    assert llmguard.CACHE_IGNORED_EXTRAS == IGNORED_EXTRAS
    assert {
        "metadata",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
        "store",
        "stream_options",
        "user",
    } == IGNORED_EXTRAS


def test_numbers_and_stop_sets_are_canonical() -> None:
    assert key(dataclasses.replace(BASE, temperature=1)) == key(
        dataclasses.replace(BASE, temperature=1.0)
    )
    assert key(dataclasses.replace(BASE, stop=("a", "b"))) == key(
        dataclasses.replace(BASE, stop=("b", "a"))
    )


json_leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
extras_strategy = st.dictionaries(
    st.text(min_size=1, max_size=10).filter(lambda k: k not in IGNORED_EXTRAS),
    json_value,
    max_size=6,
)


def test_the_k1_form_is_pinned() -> None:
    """Keys stored by earlier releases must still be found: a change to these values
    is a new canonical form, and needs a new ``KEY_FORMAT``."""
    assert key(BASE) == (
        "llmguard:1:k1:688270002460df3eb7b2583434d2a1503025702be9affa977b4fde7e670aba54"
    )
    assert key(BASE, provider="x", scope="s") == (
        "llmguard:1:k1:68bbd5ab7a3200e80a27d3fd354efdc37ca6b9f6cd70ae877e7ce6abee21df98"
    )
    odd = Request.create(
        model="m",
        user='héllo \u2028 "q"',
        temperature=1,
        extras={"b": [1.5, float("inf"), None], "a": {"z": 1, "y": True}},
    )
    assert key(odd) == (
        "llmguard:1:k1:c52b6cf0e9c1fbe205cb3fda5bb52aae7b882c7467e5ec551cacd7d1b9313589"
    )


json_float = st.floats(allow_nan=False) | st.sampled_from([float("inf"), float("-inf")])


@settings(max_examples=200, deadline=None)
@given(
    value=st.recursive(
        json_leaf | json_float,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=12,
    )
)
def test_canonical_json_is_json_dumps_with_sorted_keys(value: Any) -> None:
    """The one-shot encoder writes what ``json.dumps`` with the same options writes."""
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(value) == expected.encode()


def reordered(value: Any, rng: st.DataObject) -> Any:
    """The same value, with the keys of every mapping in it in another order."""
    if isinstance(value, dict):
        items = list(value.items())
        order = rng.draw(st.permutations(range(len(items))))
        return {items[i][0]: reordered(items[i][1], rng) for i in order}
    if isinstance(value, list):
        return [reordered(v, rng) for v in value]
    return value


@settings(max_examples=80, deadline=None)
@given(
    extras=extras_strategy,
    schema=st.dictionaries(st.text(max_size=6), json_value, max_size=4),
    metadata=st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=4),
    user=st.text(max_size=10),
    data=st.data(),
)
def test_key_order_and_metadata_never_change_the_key(
    extras: dict[str, Any],
    schema: dict[str, Any],
    metadata: dict[str, str],
    user: str,
    data: st.DataObject,
) -> None:
    first = dataclasses.replace(
        BASE,
        extras=extras,
        response_format={"type": "json_schema", "schema": schema},
        tools=(ToolSpec(name="t", parameters=schema),),
    )
    second = dataclasses.replace(
        first,
        extras={**reordered(extras, data), "metadata": metadata, "user": user},
        response_format=reordered({"schema": schema, "type": "json_schema"}, data),
        tools=(ToolSpec(name="t", parameters=reordered(schema, data)),),
    )
    assert key(first) == key(second)


@pytest.mark.anyio
async def test_a_request_that_cannot_be_keyed_is_not_cached() -> None:
    fake = FakeProvider(default="answer")
    cache = Cache()
    guard = Guard(fake, [cache], model="m")
    odd = Request.create(model="m", user="hi", extras={"handle": object()})
    assert cache.key_for(odd, provider="fake") is None
    await guard.complete(odd)
    await guard.complete(odd)
    assert len(fake.requests) == 2
    plain = Request.create(model="m", user="hi")
    assert cache.key_for(plain, provider="fake") == key(plain, provider="fake")


@pytest.mark.anyio
async def test_key_for_names_the_entry_so_it_can_be_forgotten() -> None:
    fake = FakeProvider(default="answer")
    cache = Cache(scope="user")
    guard = Guard(fake, [cache], model="m")
    request = Request.create(model="m", user="hi")
    with llmguard.context(user="u1"):
        await guard.complete(request)
        await guard.complete(request)
    assert len(fake.requests) == 1
    entry = cache.key_for(request, provider="fake", context=CallContext(user="u1"))
    assert entry is not None
    assert cache.key_for(request, provider="fake", context=CallContext()) is None
    await cache.store.delete(entry)
    with llmguard.context(user="u1"):
        await guard.complete(request)
    assert len(fake.requests) == 2
    await anyio.lowlevel.checkpoint()


def test_extras_of_other_types_are_keyed_by_their_content() -> None:
    from dataclasses import dataclass
    from types import MappingProxyType

    from pydantic import BaseModel

    @dataclass
    class Knob:
        level: int

    class Setting(BaseModel):
        level: int

    as_dicts = with_extras(knob={"level": 1}, tags=["a", "b"], view={"x": 1})
    as_objects = with_extras(knob=Knob(1), tags={"b", "a"}, view=MappingProxyType({"x": 1}))
    assert key(as_objects) == key(as_dicts)
    assert key(with_extras(knob=Setting(level=1), tags=["a", "b"], view={"x": 1})) == key(as_dicts)
    assert key(with_extras(knob=Knob(2))) != key(with_extras(knob=Knob(1)))

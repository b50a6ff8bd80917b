"""``fast_init``: the slot-descriptor ``__init__`` and ``__replace__`` behave exactly like
the ones ``dataclasses`` generates (compared against the same class without it)."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
from collections.abc import Callable
from dataclasses import FrozenInstanceError, dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import llmguard
from llmguard import _fast_init
from llmguard._fast_init import fast_init, replace


def _shapes(fast: bool, only: str | None = None) -> dict[str, type]:
    """The same classes, with (``fast``) or without ``fast_init``; fresh ones each time
    (``only``: just the one of that name)."""
    wrap: Callable[[type], type] = fast_init if fast else (lambda cls: cls)

    @dataclass(frozen=True, slots=True)
    class Mixed:
        """Positional, defaults, a factory, keyword-only, init=False, __post_init__."""

        a: int
        b: str = "b"
        c: list[int] = field(default_factory=list)
        d: int = field(default=4, kw_only=True)
        e: tuple[int, ...] = field(default=(), kw_only=True)
        f: int = field(init=False, default=6)
        g: dict[str, int] = field(init=False, default_factory=dict)
        h: int = field(init=False, default=0)

        def __post_init__(self) -> None:
            if self.a < 0:
                raise ValueError("a must not be negative")
            object.__setattr__(self, "h", self.a + self.d)

    @dataclass(frozen=True, slots=True, kw_only=True)
    class Keywords:
        """Keyword-only, all init (so it gets ``__replace__``), __post_init__ normalising."""

        name: str
        size: int = 1
        tags: tuple[str, ...] = ()
        extras: dict[str, int] = field(default_factory=dict, compare=False, hash=False)

        def __post_init__(self) -> None:
            if self.size < 0:
                raise ValueError("size must not be negative")
            object.__setattr__(self, "name", self.name.lower())

    @dataclass(frozen=True, slots=True)
    class Plain:
        """Positional only, no __post_init__."""

        x: int
        y: int = 2

    @dataclass(frozen=True, slots=True)
    class Empty:
        """No fields at all."""

    @dataclass(frozen=True, slots=True)
    class Unset:
        """An init=False field with neither default nor factory stays unset."""

        x: int
        later: int = field(init=False)

    shapes = (Mixed, Keywords, Plain, Empty, Unset)
    return {cls.__name__: wrap(cls) for cls in shapes if only in (None, cls.__name__)}


FAST = _shapes(True)
PLAIN = _shapes(False)

#: (shape, args, kwargs) that construct fine.
GOOD: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("Mixed", (1,), {}),
    ("Mixed", (1, "x"), {}),
    ("Mixed", (1, "x", [1, 2]), {"d": 9, "e": (1,)}),
    ("Mixed", (), {"a": 3, "c": [7], "e": (2, 3)}),
    ("Keywords", (), {"name": "AbC"}),
    ("Keywords", (), {"name": "n", "size": 5, "tags": ("t",), "extras": {"k": 1}}),
    ("Plain", (1,), {}),
    ("Plain", (1, 5), {}),
    ("Plain", (), {"y": 1, "x": 0}),
    ("Empty", (), {}),
    ("Unset", (3,), {}),
]

#: (shape, args, kwargs) that raise.
BAD: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("Mixed", (), {}),  # missing positional
    ("Mixed", (1, "x", [], 4), {}),  # d is keyword-only: too many positional
    ("Mixed", (1,), {"f": 1}),  # init=False field
    ("Mixed", (1,), {"g": {}}),
    ("Mixed", (1,), {"zz": 1}),  # unknown
    ("Mixed", (1,), {"a": 2}),  # twice
    ("Mixed", (-1,), {}),  # __post_init__ refuses
    ("Keywords", ("n",), {}),  # positional to a keyword-only class
    ("Keywords", (), {}),  # missing keyword-only
    ("Keywords", (), {"name": "n", "size": -1}),
    ("Keywords", (), {"name": "n", "other": 1}),
    ("Plain", (), {}),
    ("Plain", (1, 2, 3), {}),
    ("Plain", (1,), {"x": 1}),
    ("Empty", (1,), {}),
    ("Empty", (), {"x": 1}),
    ("Unset", (1,), {"later": 2}),
]


def values(obj: object) -> dict[str, Any]:
    """Every field's value, ``<unset>`` for a slot never set."""
    return {f.name: getattr(obj, f.name, "<unset>") for f in dataclasses.fields(obj)}  # type: ignore[arg-type]


def outcome(function: Callable[[object], object], obj: object) -> object:
    """What ``function(obj)`` returns, or the type and text of what it raises."""
    try:
        return function(obj)
    except Exception as exc:  # an unhashable field, an unset slot
        return (type(exc), str(exc))


def same(fast: object, plain: object) -> None:
    """Two instances of the fast and plain twins agree on everything observable."""
    assert values(fast) == values(plain)
    assert outcome(repr, fast) == outcome(repr, plain)
    assert outcome(hash, fast) == outcome(hash, plain)


def test_the_fast_init_is_installed() -> None:
    for name, cls in FAST.items():
        assert cls.__init__ is not PLAIN[name].__init__
        assert cls.__init__.__globals__["_FACTORY"] is _fast_init._FACTORY
        assert cls.__init__.__qualname__ == PLAIN[name].__init__.__qualname__
        assert cls.__init__.__module__ == __name__


@pytest.mark.parametrize(("shape", "args", "kwargs"), GOOD)
def test_instances_are_the_same(shape: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    fast = FAST[shape](*args, **kwargs)
    plain = PLAIN[shape](*args, **kwargs)
    same(fast, plain)
    twin = FAST[shape](*args, **kwargs)
    if shape != "Unset":  # comparing reads every field
        assert twin == fast and outcome(hash, twin) == outcome(hash, fast)
    assert fast != plain  # another class, as two dataclasses always are


@pytest.mark.parametrize(("shape", "args", "kwargs"), BAD)
def test_the_same_errors(shape: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    with pytest.raises((TypeError, ValueError)) as plain:
        PLAIN[shape](*args, **kwargs)
    with pytest.raises(plain.type) as fast:
        FAST[shape](*args, **kwargs)
    assert str(fast.value) == str(plain.value)


def test_default_factories_make_a_fresh_value_per_instance() -> None:
    one, two = FAST["Mixed"](1), FAST["Mixed"](1)
    assert one.c == [] and one.c is not two.c  # type: ignore[attr-defined]
    assert one.g == {} and one.g is not two.g  # type: ignore[attr-defined]
    given_list = [1]
    assert FAST["Mixed"](1, "b", given_list).c is given_list  # type: ignore[attr-defined]


def test_instances_stay_frozen() -> None:
    fast = FAST["Mixed"](1)
    with pytest.raises(FrozenInstanceError):
        fast.a = 2  # type: ignore[attr-defined]
    with pytest.raises(FrozenInstanceError):
        del fast.b  # type: ignore[attr-defined]
    assert not hasattr(fast, "__dict__")  # still slotted


def test_unset_init_false_field_stays_unset() -> None:
    with pytest.raises(AttributeError):
        _ = FAST["Unset"](1).later  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        _ = PLAIN["Unset"](1).later  # type: ignore[attr-defined]


@pytest.mark.parametrize("shape", sorted(FAST))
def test_the_signature_is_the_same(shape: str) -> None:
    fast, plain = inspect.signature(FAST[shape]), inspect.signature(PLAIN[shape])
    assert fast == plain
    assert str(fast) == str(plain)
    assert FAST[shape].__init__.__annotations__ == PLAIN[shape].__init__.__annotations__


def test_only_classes_whose_fields_all_take_init_get_replace() -> None:
    for name in ("Keywords", "Plain", "Empty"):
        assert "__replace__" in vars(FAST[name])
    for name in ("Mixed", "Unset"):
        assert "__replace__" not in vars(FAST[name])


def test_replace_is_built_on_its_first_call() -> None:
    """``__replace__`` starts as a stub that builds the real one on its first call and
    puts it on the class; a reference to the stub held before keeps working."""
    (cls,) = _shapes(True, only="Plain").values()
    stub = vars(cls)["__replace__"]
    assert stub.__qualname__ == f"{cls.__qualname__}.__replace__" and stub.__module__ == __name__
    first = replace(cls(1), y=5)
    real = vars(cls)["__replace__"]
    assert real is not stub and real.__qualname__ == stub.__qualname__
    assert values(first) == {"x": 1, "y": 5}
    assert values(stub(cls(2), x=3)) == {"x": 3, "y": 2}  # the old stub: the real one
    assert vars(cls)["__replace__"] is real  # built once
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        stub(cls(1), z=1)


@pytest.mark.parametrize(
    ("shape", "args", "kwargs", "changes"),
    [
        ("Keywords", (), {"name": "N", "size": 2, "tags": ("a",)}, {}),
        ("Keywords", (), {"name": "N", "size": 2}, {"name": "OTHER"}),
        ("Keywords", (), {"name": "N"}, {"size": 7, "tags": ("x", "y"), "extras": {"a": 1}}),
        ("Plain", (1,), {}, {"y": 9}),
        ("Plain", (1, 2), {}, {"x": 5, "y": 6}),
        ("Empty", (), {}, {}),
        ("Mixed", (1, "x", [1]), {"d": 2}, {"a": 5, "e": (1,)}),  # dataclasses.replace
    ],
)
def test_replace_is_dataclasses_replace(
    shape: str, args: tuple[Any, ...], kwargs: dict[str, Any], changes: dict[str, Any]
) -> None:
    obj = FAST[shape](*args, **kwargs)
    fast = replace(obj, **changes)
    slow = dataclasses.replace(obj, **changes)
    plain = dataclasses.replace(PLAIN[shape](*args, **kwargs), **changes)
    assert type(fast) is type(obj)
    assert fast == slow and values(fast) == values(slow) == values(plain)
    assert outcome(hash, fast) == outcome(hash, slow)
    if changes:
        assert fast is not obj


def test_replace_runs_post_init() -> None:
    keywords = FAST["Keywords"](name="a", size=1)
    assert replace(keywords, name="UPPER").name == "upper"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="size must not be negative"):
        replace(keywords, size=-1)
    with pytest.raises(ValueError, match="size must not be negative"):
        dataclasses.replace(keywords, size=-1)
    mixed = FAST["Mixed"](1, d=2)
    assert replace(mixed, a=10).h == 12  # type: ignore[attr-defined]  # via dataclasses.replace


def test_replace_refuses_unknown_fields_like_dataclasses() -> None:
    obj = FAST["Keywords"](name="a")
    with pytest.raises(TypeError):
        dataclasses.replace(obj, nope=1)
    with pytest.raises(TypeError):
        replace(obj, nope=1)
    with pytest.raises(ValueError, match="init=False"):
        replace(FAST["Mixed"](1), f=1)  # init=False: as dataclasses.replace


def test_replace_of_an_instance_of_a_subclass_keeps_its_class() -> None:
    base = FAST["Keywords"]

    @dataclass(frozen=True, slots=True, kw_only=True)
    class More(base):  # type: ignore[valid-type, misc]
        more: int = 0

    class Same(base):  # type: ignore[valid-type, misc]
        __slots__ = ()

    more = More(name="a", size=2, more=3)
    for changes in ({}, {"size": 5}, {"more": 4}):
        fast, slow = replace(more, **changes), dataclasses.replace(more, **changes)
        assert type(fast) is More and fast == slow
    same_ = Same(name="a")
    assert type(replace(same_, size=3)) is Same
    assert replace(same_, size=3) == dataclasses.replace(same_, size=3)
    if hasattr(base, "__replace__"):  # what copy.replace (3.13) calls
        assert type(base.__replace__(same_, size=3)) is Same


def test_replace_of_a_plain_dataclass_and_of_a_non_dataclass() -> None:
    obj = PLAIN["Plain"](1)
    assert replace(obj, y=3) == PLAIN["Plain"](1, 3)
    with pytest.raises(TypeError):
        replace(object())


@given(
    a=st.integers(min_value=-3, max_value=10**6),
    b=st.text(max_size=5),
    c=st.lists(st.integers(), max_size=3),
    d=st.integers(),
    e=st.tuples(st.integers()) | st.just(()),
    use_defaults=st.booleans(),
)
def test_mixed_agrees_for_any_values(
    a: int, b: str, c: list[int], d: int, e: tuple[int, ...], use_defaults: bool
) -> None:
    args: tuple[Any, ...] = (a,) if use_defaults else (a, b, c)
    kwargs: dict[str, Any] = {} if use_defaults else {"d": d, "e": e}
    outcomes = []
    for classes in (FAST, PLAIN):
        try:
            outcomes.append(classes["Mixed"](*args, **kwargs))
        except ValueError as exc:
            outcomes.append(str(exc))
    fast, plain = outcomes
    if isinstance(fast, str):
        assert fast == plain
        return
    same(fast, plain)
    assert dataclasses.replace(fast, a=abs(a)) == FAST["Mixed"](abs(a), *args[1:], **kwargs)


@given(
    name=st.text(max_size=6),
    size=st.integers(min_value=-2, max_value=100),
    tags=st.lists(st.text(max_size=3), max_size=3).map(tuple),
    new_name=st.none() | st.text(max_size=6),
    new_size=st.none() | st.integers(min_value=-2, max_value=100),
)
def test_keywords_agree_and_replace_agrees_for_any_values(
    name: str, size: int, tags: tuple[str, ...], new_name: str | None, new_size: int | None
) -> None:
    try:
        plain = PLAIN["Keywords"](name=name, size=size, tags=tags)
    except ValueError:
        with pytest.raises(ValueError, match="size must not be negative"):
            FAST["Keywords"](name=name, size=size, tags=tags)
        return
    fast = FAST["Keywords"](name=name, size=size, tags=tags)
    same(fast, plain)
    changes = {k: v for k, v in (("name", new_name), ("size", new_size)) if v is not None}
    try:
        slow = dataclasses.replace(plain, **changes)
    except ValueError:
        with pytest.raises(ValueError, match="size must not be negative"):
            replace(fast, **changes)
        return
    same(replace(fast, **changes), slow)


# -- every @fast_init class of llmguard ----------------------------------------------------


def _decorated_classes() -> list[type]:
    """Every class decorated ``@fast_init`` in llmguard's source (read, then imported)."""
    root = Path(llmguard.__file__).parent
    found: list[type] = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = [
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef)
            and any(isinstance(d, ast.Name) and d.id == "fast_init" for d in node.decorator_list)
        ]
        if names:
            module = ".".join(("llmguard", *path.relative_to(root).with_suffix("").parts))
            loaded = importlib.import_module(module)
            found.extend(getattr(loaded, name) for name in names)
    return found


def _samples() -> dict[str, dict[str, Any]]:
    usage = llmguard.Usage(input_tokens=3, output_tokens=4, cached_input_tokens=1)
    call = llmguard.ToolCall(id="c1", name="f", arguments='{"x": 1}')
    response = llmguard.Response(text="hi", usage=usage, model="m", provider="p")
    return {
        "LedgerResult": {"ok": True, "used": 3, "reserved": 4, "limit": 10, "reset_at": 5.0},
        "Versioned": {"value": b"v", "version": 3},
        "CachedAnswer": {"response": response, "events": (llmguard.TextDelta(text="h"),)},
        "CallRecord": {
            "call_id": "c",
            "provider": "p",
            "model": "m",
            "user": "u",
            "tenant": "t",
            "endpoint": "e",
            "tags": ("a",),
            "stream": True,
            "usage": usage,
            "cost_micros": 5,
            "latency_s": 0.5,
            "time_to_first_token_s": 0.1,
            "cache": "miss",
            "attempts": 2,
            "fallback": "f",
            "finish_reason": "stop",
            "error": None,
            "prompt": "q",
            "completion": "a",
            "tool_calls": 1,
            "tool_errors": 0,
            "fallback_reasons": ("r",),
        },
        "ToolCall": {"id": "c1", "name": "f", "arguments": "{}"},
        "Message": {
            "role": "assistant",
            "content": "x",
            "name": "n",
            "tool_call_id": None,
            "tool_calls": (call,),
        },
        "Usage": {
            "input_tokens": 1,
            "output_tokens": 2,
            "cached_input_tokens": 1,
            "reasoning_tokens": 1,
            "estimated": True,
        },
        "Request": {
            "model": "m",
            "messages": (llmguard.Message(role="user", content="hello"),),
            "tools": (),
            "tool_choice": "auto",
            "response_format": None,
            "temperature": 0.5,
            "top_p": 0.9,
            "max_output_tokens": 10,
            "stop": ("s",),
            "seed": 1,
            "extras": {"k": 1},
        },
        "Response": {
            "text": "t",
            "tool_calls": (call,),
            "finish_reason": "stop",
            "usage": usage,
            "model": "m",
            "provider": "p",
            "id": "r",
            "refusal": None,
            "cost_micros": 3,
            "cached": True,
            "raw": None,
        },
        "TextDelta": {"text": "t"},
        "RefusalDelta": {"text": "no"},
        "ToolCallDelta": {"index": 0, "id": "c", "name": "f", "arguments": "{"},
        "UsageUpdate": {"usage": usage},
        "Finish": {"reason": "stop"},
        "CallContext": {"user": "u", "tenant": "t", "endpoint": "e", "tags": ("a", "b")},
    }


DECORATED = _decorated_classes()


def test_every_decorated_class_has_a_sample() -> None:
    assert len(DECORATED) >= 14
    assert sorted(cls.__name__ for cls in DECORATED) == sorted(_samples())
    for cls in DECORATED:
        assert cls.__init__.__globals__.get("_FACTORY") is _fast_init._FACTORY, cls


@pytest.mark.parametrize("cls", DECORATED, ids=lambda cls: cls.__name__)
def test_every_decorated_class_round_trips(cls: type) -> None:
    kwargs = _samples()[cls.__name__]
    assert set(kwargs) == {f.name for f in dataclasses.fields(cls)}  # every field given
    obj = cls(**kwargs)
    assert {name: getattr(obj, name) for name in kwargs} == kwargs
    copy = dataclasses.replace(obj)
    assert copy == obj and repr(copy) == repr(obj)
    fast = replace(obj)
    assert type(fast) is cls and fast == copy and fast is not obj
    assert replace(obj, **kwargs) == dataclasses.replace(obj, **kwargs) == obj
    with pytest.raises(FrozenInstanceError):
        setattr(obj, next(iter(kwargs)), None)
    defaults = {  # the fields with defaults, left out: as the generated __init__
        f.name
        for f in dataclasses.fields(cls)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }
    required = {name: value for name, value in kwargs.items() if name not in defaults}
    slim = cls(**required)
    for name in defaults:
        f = next(f for f in dataclasses.fields(cls) if f.name == name)
        expected = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        assert getattr(slim, name) == expected


def test_the_factory_marker_is_dataclasses_own() -> None:
    assert _fast_init._FACTORY is getattr(dataclasses, "_HAS_DEFAULT_FACTORY", _fast_init._FACTORY)
    assert repr(_fast_init._FACTORY) == repr(_fast_init._Factory()) == "<factory>"

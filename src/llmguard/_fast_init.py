"""``fast_init``: a cheaper ``__init__`` for the frozen, slotted dataclasses built per call.

A frozen dataclass's ``__init__`` sets each field with ``object.__setattr__`` (its own
``__setattr__`` refuses), which costs about twice setting it through the field's slot
descriptor. ``Usage``, ``Request``, ``Response``, ``LedgerResult``, ``CallRecord``…
are built several times per call, so ``fast_init`` gives them an ``__init__`` that
does exactly what the generated one does (the same parameters, defaults, default
factories and ``__post_init__``) through the slot descriptors. The instances are the
same: still frozen (``__setattr__`` is untouched), equal, hashed and printed the same.

``__replace__`` is generated on its first call (``import llmguard`` would otherwise
build one for every such class, and most are never replaced in a process). Classes stay
declared with dataclasses' own ``__init__`` (``init=True``), which type checkers read.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["fast_init", "replace"]

T = TypeVar("T")


class _Keep:
    """Marks a field that ``__replace__`` copies as it is."""

    __slots__ = ()


_KEEP = _Keep()


class _Factory:
    """Marks a parameter whose default comes from a ``default_factory``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<factory>"


#: dataclasses' own marker when it has one, so that ``inspect.signature`` is equal too
_FACTORY: Any = getattr(dataclasses, "_HAS_DEFAULT_FACTORY", None) or _Factory()


def fast_init(cls: type[T]) -> type[T]:
    """Replace the dataclass ``cls``'s ``__init__`` (frozen, slotted, no ``InitVar``)
    with one that does the same through its slots."""
    params = dataclasses.fields(cls)  # type: ignore[arg-type]
    namespace: dict[str, Any] = {"_FACTORY": _FACTORY}
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    for field in params:
        name = field.name
        namespace[f"_set_{name}"] = cls.__dict__[name].__set__  # the slot descriptor
        has_factory = field.default_factory is not dataclasses.MISSING
        if has_factory:
            namespace[f"_make_{name}"] = field.default_factory
        if not field.init:
            if has_factory:
                body.append(f"_set_{name}(self, _make_{name}())")
            elif field.default is not dataclasses.MISSING:
                namespace[f"_dflt_{name}"] = field.default
                body.append(f"_set_{name}(self, _dflt_{name})")
            continue
        if has_factory:
            param = f"{name}=_FACTORY"
            body.append(f"_set_{name}(self, _make_{name}() if {name} is _FACTORY else {name})")
        else:
            if field.default is dataclasses.MISSING:
                param = name
            else:
                namespace[f"_dflt_{name}"] = field.default
                param = f"{name}=_dflt_{name}"
            body.append(f"_set_{name}(self, {name})")
        (keyword if field.kw_only else positional).append(param)
    if hasattr(cls, "__post_init__"):
        body.append("self.__post_init__()")
    signature = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    source = f"def __init__({signature}) -> None:\n    " + "\n    ".join(body or ["pass"])
    exec(source, namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    # the annotations dataclasses gives its __init__: each parameter's type, returns None
    init.__annotations__ = {f.name: f.type for f in params if f.init} | {"return": None}
    cls.__init__ = init  # type: ignore[method-assign]
    if all(field.init for field in params):
        cls.__replace__ = _lazy_replacer(cls, params, namespace)  # type: ignore[attr-defined]
    return cls


def _lazy_replacer(
    cls: type, params: tuple[dataclasses.Field[Any], ...], namespace: dict[str, Any]
) -> Any:
    """A ``__replace__`` that builds the real one on its first call and puts it on the
    class in its place (most classes are never replaced in a process)."""

    def __replace__(self: Any, /, **changes: Any) -> Any:
        current = vars(cls).get("__replace__")
        if current is not None and current is not __replace__:  # built already
            return current(self, **changes)
        real = _replacer(cls, params, namespace)  # two threads at once: both build one
        cls.__replace__ = real  # type: ignore[attr-defined]
        return real(self, **changes)

    __replace__.__qualname__ = f"{cls.__qualname__}.__replace__"
    __replace__.__module__ = cls.__module__
    return __replace__


def _replacer(
    cls: type, params: tuple[dataclasses.Field[Any], ...], namespace: dict[str, Any]
) -> Any:
    """``__replace__(**changes)``: what ``dataclasses.replace`` does (a new instance
    through ``__init__``'s rules), with the unchanged fields copied slot to slot."""
    namespace["_KEEP"] = _KEEP
    namespace["_new"] = object.__new__
    namespace["_cls"] = cls
    namespace["_slow"] = dataclasses.replace
    names = [field.name for field in params]
    # An instance of a subclass (its own fields, its own __init__): dataclasses.replace.
    namespace["_type"] = type
    changed = ", ".join(f"{n!r}: {n}" for n in names)
    body = [
        "if _type(self) is not _cls:",
        f"    return _slow(self, **{{k: v for k, v in {{{changed}}}.items() if v is not _KEEP}})",
        "new = _new(_cls)",
    ]
    body += [f"_set_{n}(new, self.{n} if {n} is _KEEP else {n})" for n in names]
    if hasattr(cls, "__post_init__"):
        body.append("new.__post_init__()")
    body.append("return new")
    keywords = "".join(f", {n}=_KEEP" for n in names)
    source = f"def __replace__(self{keywords and ', *'}{keywords}):\n    " + "\n    ".join(body)
    exec(source, namespace)  # code built from the dataclass's own field names
    replacer = namespace["__replace__"]
    replacer.__qualname__ = f"{cls.__qualname__}.__replace__"
    replacer.__module__ = cls.__module__
    return replacer


def replace(obj: T, /, **changes: Any) -> T:
    """``dataclasses.replace(obj, **changes)``, through the fast ``__replace__`` that
    ``fast_init`` gives a class (any other dataclass: ``dataclasses.replace`` itself)."""
    replacer = vars(type(obj)).get("__replace__")  # a subclass's fields: not inherited
    if replacer is None or getattr(replacer, "__module__", "") == "dataclasses":
        return dataclasses.replace(obj, **changes)  # type: ignore[type-var]
    return replacer(obj, **changes)  # type: ignore[no-any-return]

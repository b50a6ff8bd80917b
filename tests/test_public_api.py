from __future__ import annotations

import json
import subprocess
import sys

import llmguard
import llmguard.testing

HEAVY = ("openai", "redis", "opentelemetry", "genai_prices", "httpx", "httpx2", "tiktoken")


def test_all_is_sorted_and_exported() -> None:
    for module in (llmguard, llmguard.testing):
        names = list(module.__all__)
        assert names == sorted(names), f"{module.__name__}.__all__ is not sorted"
        assert len(names) == len(set(names))
        for name in names:
            assert hasattr(module, name), f"{module.__name__}.{name} is in __all__ but missing"


def test_public_names_are_documented_and_rehomed() -> None:
    for name in llmguard.__all__:
        obj = getattr(llmguard, name)
        if isinstance(obj, type):
            assert obj.__module__ == "llmguard", name
            assert obj.__doc__, f"llmguard.{name} has no docstring"
    assert repr(llmguard.Guard) == "<class 'llmguard.Guard'>"
    assert llmguard.testing.FakeProvider.__module__ == "llmguard.testing"


def test_every_error_is_an_llmguard_error() -> None:
    errors = [getattr(llmguard, n) for n in llmguard.__all__]
    errors = [
        e
        for e in errors
        if isinstance(e, type) and issubclass(e, Exception) and not issubclass(e, Warning)
    ]
    assert len(errors) >= 15
    for error in errors:
        assert issubclass(error, llmguard.LLMGuardError), error


def test_import_is_light() -> None:
    code = (
        "import sys, json, llmguard, llmguard.testing; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == []

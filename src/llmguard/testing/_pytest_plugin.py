"""The llmguard pytest plugin (registered through the ``pytest11`` entry point).

Every fixture is synchronous, so it works under pytest-asyncio (strict and auto
mode), anyio's plugin, or plain sync tests alike.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .._guard import Guard
from .._layers.observe import Observe
from .._state import CallRecord
from .._stores.memory import MemoryStore
from ._capture import capture_records
from ._clock import ManualClock
from ._fake import FakeProvider


@pytest.fixture
def fake_provider() -> FakeProvider:
    """A fresh ``FakeProvider`` with an empty script (add replies in the test)."""
    return FakeProvider()


@pytest.fixture
def memory_store() -> MemoryStore:
    """A fresh ``MemoryStore``."""
    return MemoryStore()


@pytest.fixture
def guard(fake_provider: FakeProvider) -> Guard:
    """A ``Guard`` on the ``fake_provider`` fixture, with ``Observe``, model ``fake-model``."""
    return Guard(fake_provider, [Observe()], model="fake-model")


@pytest.fixture
def llm_records() -> Iterator[list[CallRecord]]:
    """The records of every observed call made during the test."""
    with capture_records() as records:
        yield records


@pytest.fixture
def manual_clock() -> ManualClock:
    """A ``ManualClock`` starting at 0."""
    return ManualClock()

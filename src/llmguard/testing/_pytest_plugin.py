"""The llmguard pytest plugin (registered through the ``pytest11`` entry point).

Every fixture is synchronous, so it works under pytest-asyncio (strict and auto
mode), anyio's plugin, or plain sync tests alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .._guard import Guard
from .._layers.observe import Observe
from .._state import CallRecord
from .._stores.memory import MemoryStore
from ._capture import capture_records
from ._cassette import Cassette, close_now, environment_key, recording_client
from ._clock import ManualClock
from ._fake import FakeProvider
from ._openai_body import sdk_client
from ._openai_endpoint import FakeOpenAIEndpoint

if TYPE_CHECKING:
    import openai

CASSETTE_MARKER = (
    "openai_cassette(name=None, *, match='order'): the cassette the `openai_cassette` "
    "fixture replays (cassettes/<name>.json next to the test file; default name: the "
    "test's name), recorded from the real API when missing and OPENAI_API_KEY is set"
)


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``openai_cassette`` marker (so ``--strict-markers`` accepts it)."""
    config.addinivalue_line("markers", CASSETTE_MARKER)


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


@pytest.fixture
def fake_openai() -> FakeOpenAIEndpoint:
    """A fresh ``FakeOpenAIEndpoint`` with an empty script (add replies in the test)."""
    return FakeOpenAIEndpoint()


@pytest.fixture
def openai_client(fake_openai: FakeOpenAIEndpoint) -> Iterator[openai.AsyncOpenAI]:
    """An ``openai.AsyncOpenAI`` answered by the ``fake_openai`` endpoint.

    ``base_url="https://api.openai.test/v1"``, ``max_retries=0``, and the transport of
    the installed SDK (``httpx2.MockTransport`` on openai 3.x, ``httpx`` on 2.x).
    """
    client, http_client = sdk_client(
        fake_openai.mock_transport(),
        api_key="sk-test-llmguard-fake",
        base_url="https://api.openai.test/v1",
    )
    yield client
    close_now(http_client.aclose())


@pytest.fixture
def openai_cassette(request: pytest.FixtureRequest) -> Iterator[openai.AsyncOpenAI]:
    """An ``openai.AsyncOpenAI`` replaying a cassette, or recording it.

    The cassette is ``cassettes/<name>.json`` next to the test file, ``name`` from
    ``@pytest.mark.openai_cassette("name", match="order")`` or else the test's name.
    If the file exists, it is replayed offline (``Cassette.endpoint(match=...)``). If
    not and ``OPENAI_API_KEY`` is set, the test talks to the real API and the exchanges
    are recorded (scrubbed of credentials); without a key the test fails saying how to
    record it.
    """
    marker = request.node.get_closest_marker("openai_cassette")
    args = marker.args if marker is not None else ()
    options = dict(marker.kwargs) if marker is not None else {}
    default_name = getattr(request.node, "originalname", request.node.name)
    name = str(args[0] if args else options.pop("name", None) or default_name)
    match = options.pop("match", "order")
    if options or len(args) > 1 or match not in ("order", "request"):
        pytest.fail(
            "usage: @pytest.mark.openai_cassette(name=None, *, match='order' | 'request'); "
            f"got args={args!r}, match={match!r}, other options {sorted(options)}",
            pytrace=False,
        )
    path = Path(name)
    if not path.is_absolute():
        safe = re.sub(r"[^A-Za-z0-9_.\-/]+", "_", name)
        path = Path(request.node.path).parent / "cassettes" / safe
    if path.suffix != ".json":
        path = path.with_name(path.name + ".json")
    if path.exists():
        endpoint = Cassette.load(path).endpoint(match=match)
        client, http_client = sdk_client(
            endpoint.mock_transport(),
            api_key="sk-test-llmguard-cassette",
            base_url="https://api.openai.test/v1",
        )
    else:
        key = environment_key()
        if key is None:
            pytest.fail(
                f"the OpenAI cassette {path} is missing. Record it once against the real "
                "API: set OPENAI_API_KEY and run this test again "
                f"(OPENAI_API_KEY=sk-... pytest {request.node.nodeid!r}); the exchanges "
                "are written there, scrubbed of keys, and replayed offline from then on.",
                pytrace=False,
            )
        client, http_client = recording_client(path, api_key=key)
    yield client
    close_now(http_client.aclose())

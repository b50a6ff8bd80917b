"""The llmguard pytest plugin, as a user meets it: loaded by its ``pytest11`` entry point,
its fixtures working under pytest-asyncio (strict and auto mode), anyio's plugin, and in
plain sync tests."""

from __future__ import annotations

import textwrap

import pytest

BASE_INI = """
[pytest]
addopts = --strict-markers --strict-config -p no:cacheprovider -p no:hypothesispytest
filterwarnings = error
"""

ASYNCIO_INI = BASE_INI + "asyncio_default_fixture_loop_scope = function\n"

# A user's test module; {mark} is the marker an async test needs under each plugin.
USER_TESTS = """
import pytest

from llmguard import CacheStore, Guard, MemoryStore, RateLimited
from llmguard.testing import FakeProvider, FakeReply, ManualClock


def test_the_plugin_is_loaded_from_its_entry_point(pytestconfig):
    plugin = pytestconfig.pluginmanager.get_plugin("llmguard")
    assert plugin is not None
    assert plugin.__name__ == "llmguard.testing._pytest_plugin"


{mark}
async def test_guard_answers_from_the_fake(fake_provider, guard, llm_records):
    assert isinstance(fake_provider, FakeProvider)
    assert isinstance(guard, Guard)
    assert guard.provider is fake_provider
    fake_provider.add("Hello!", FakeReply.rate_limited(retry_after=2))
    fake_provider.when("weather").reply("Sunny.")
    assert (await guard.complete(user="hi")).text == "Hello!"
    assert (await guard.complete(user="weather?")).text == "Sunny."
    with pytest.raises(RateLimited) as info:
        await guard.complete(user="again")
    assert info.value.retry_after == 2
    assert [r.last_user_text for r in fake_provider.requests] == ["hi", "weather?", "again"]
    assert [r.model for r in llm_records] == ["fake-model"] * 3
    assert [r.error for r in llm_records] == [None, None, "RateLimited"]


{mark}
async def test_fixtures_are_fresh_for_every_test(fake_provider, guard, llm_records):
    assert fake_provider.requests == []
    assert fake_provider.pending == 0
    assert llm_records == []


{mark}
async def test_streaming_through_the_guard_fixture(fake_provider, guard, llm_records):
    fake_provider.add("streamed reply")
    async with guard.stream(user="hi") as events:
        async for _ in events:
            pass
    assert events.response.text == "streamed reply"
    assert fake_provider.streams[-1].closed
    assert [r.stream for r in llm_records] == [True]


{mark}
async def test_manual_clock(manual_clock):
    assert isinstance(manual_clock, ManualClock)
    assert manual_clock.now() == 0.0
    manual_clock.autojump = True
    await manual_clock.sleep(3)
    assert manual_clock.now() == 3.0


{mark}
async def test_memory_store(memory_store):
    assert isinstance(memory_store, MemoryStore)
    assert isinstance(memory_store, CacheStore)
    await memory_store.set("k", b"v", ttl=None)
    assert await memory_store.get("k") == b"v"
"""

ASYNC_TESTS = 5  # the async tests in USER_TESTS, besides the sync plugin check

SYNC_TESTS = """
import pytest

from llmguard import CacheStore, RateLimited, TextDelta
from llmguard.testing import ManualClock


def test_guard_sync(fake_provider, guard, llm_records):
    fake_provider.add("Hello!", FakeReply.rate_limited(retry_after=1), "streamed")
    try:
        assert guard.sync.complete(user="hi").text == "Hello!"
        with pytest.raises(RateLimited):
            guard.sync.complete(user="again")
        with guard.sync.stream(user="stream") as events:
            texts = [e.text for e in events if isinstance(e, TextDelta)]
        assert "".join(texts) == "streamed"
    finally:
        guard.sync.close()
    assert [r.error for r in llm_records] == [None, "RateLimited", None]
    assert [r.stream for r in llm_records] == [False, False, True]


def test_sync_clock_and_store(manual_clock, memory_store):
    assert isinstance(manual_clock, ManualClock)
    manual_clock.advance(2)
    assert manual_clock.now() == 2.0
    assert isinstance(memory_store, CacheStore)
""".replace("import ManualClock", "import FakeReply, ManualClock")


def user_tests(mark: str) -> str:
    return textwrap.dedent(USER_TESTS).replace("{mark}\n", f"{mark}\n" if mark else "")


def test_pytest_asyncio_strict_mode(pytester: pytest.Pytester) -> None:
    pytester.makeini(ASYNCIO_INI + "asyncio_mode = strict\n")
    pytester.makepyfile(test_user=user_tests("@pytest.mark.asyncio"))
    result = pytester.runpytest_inprocess("--asyncio-mode=strict")
    result.assert_outcomes(passed=1 + ASYNC_TESTS, warnings=0)


def test_pytest_asyncio_auto_mode(pytester: pytest.Pytester) -> None:
    pytester.makeini(ASYNCIO_INI + "asyncio_mode = auto\n")
    pytester.makepyfile(test_user=user_tests(""))
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(passed=1 + ASYNC_TESTS, warnings=0)


def test_anyio_plugin_on_asyncio_and_trio(pytester: pytest.Pytester) -> None:
    pytester.makeini(BASE_INI)
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture(params=["asyncio", "trio"])
        def anyio_backend(request):
            return request.param
        """
    )
    pytester.makepyfile(test_user=user_tests("@pytest.mark.anyio"))
    result = pytester.runpytest_inprocess("-p", "no:asyncio")
    result.assert_outcomes(passed=1 + 2 * ASYNC_TESTS, warnings=0)


def test_anyio_plugin_beside_pytest_asyncio_strict(pytester: pytest.Pytester) -> None:
    pytester.makeini(ASYNCIO_INI + "asyncio_mode = strict\n")
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def anyio_backend():
            return "asyncio"
        """
    )
    pytester.makepyfile(test_user=user_tests("@pytest.mark.anyio"))
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(passed=1 + ASYNC_TESTS, warnings=0)


def test_plain_sync_tests(pytester: pytest.Pytester) -> None:
    pytester.makeini(BASE_INI)
    pytester.makepyfile(test_user=textwrap.dedent(SYNC_TESTS))
    result = pytester.runpytest_inprocess("-p", "no:asyncio", "-p", "no:anyio")
    result.assert_outcomes(passed=2, warnings=0)


def test_fixtures_are_listed_with_their_docs(pytester: pytest.Pytester) -> None:
    pytester.makeini(ASYNCIO_INI)
    result = pytester.runpytest_inprocess("--fixtures")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "*fixtures defined from llmguard.testing._pytest_plugin*",
            "fake_provider -- *",
            "*A fresh ``FakeProvider``*",
        ]
    )
    for name in ("guard", "llm_records", "manual_clock", "memory_store"):
        result.stdout.fnmatch_lines([f"{name} -- *"])


def test_without_the_plugin_the_fixtures_are_missing(pytester: pytest.Pytester) -> None:
    pytester.makeini(ASYNCIO_INI)
    pytester.makepyfile(
        test_user="""
        def test_needs_the_fake(fake_provider):
            pass
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:llmguard")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'fake_provider' not found*"])

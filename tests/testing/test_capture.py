"""``llmguard.testing.capture_records``: the records of every observed call in a block."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from llmguard import CallRecord, Guard, Observe, ProviderError
from llmguard.testing import FakeProvider, FakeReply, capture_records

JOIN_TIMEOUT_S = 10.0
RECORD_LOGGER = "llmguard.calls"


@pytest.fixture(autouse=True)
def _restore_record_loggers() -> Iterator[None]:
    """Tests here change logger levels on purpose: put them back afterwards."""
    names = [RECORD_LOGGER, f"{RECORD_LOGGER}.app", "elsewhere"]
    saved = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture
def sync_guard() -> Iterator[Guard]:
    """A Guard with Observe on an endless fake, whose sync loop thread is stopped afterwards."""
    guard = Guard(FakeProvider(default="ok"), [Observe()], model="m")
    yield guard
    guard.sync.close()


def test_nothing_observed_nothing_captured() -> None:
    with capture_records() as records:
        assert records == []
    assert records == []


@pytest.mark.anyio
async def test_collects_records_from_observe_on_the_default_logger() -> None:
    fake = FakeProvider(["one", "two", FakeReply.server_error(500)])
    guard = Guard(fake, [Observe()], model="m")
    with capture_records() as records:
        await guard.complete(user="a")
        await guard.complete(user="b")
        with pytest.raises(ProviderError, match="500"):
            await guard.complete(user="c")
    assert len(records) == 3
    assert all(isinstance(record, CallRecord) for record in records)
    assert [record.error for record in records] == [None, None, "ProviderError"]
    assert [record.finish_reason for record in records] == ["stop", "stop", None]
    assert {record.provider for record in records} == {"fake"}
    assert len({record.call_id for record in records}) == 3


@pytest.mark.anyio
async def test_collects_stream_records() -> None:
    guard = Guard(FakeProvider(["streamed"]), [Observe()], model="m")
    with capture_records() as records:
        async with guard.stream(user="hi") as events:
            async for _ in events:
                pass
    (record,) = records
    assert record.stream is True
    assert record.finish_reason == "stop"


@pytest.mark.anyio
async def test_collects_records_from_a_child_logger() -> None:
    child = logging.getLogger(f"{RECORD_LOGGER}.app")
    guard = Guard(FakeProvider(["hi"]), [Observe(logger=child)], model="m")
    with capture_records() as records:
        await guard.complete(user="hi")
    assert len(records) == 1
    assert records[0].model == "m"


@pytest.mark.anyio
async def test_collects_a_child_logger_even_when_the_parent_is_quiet() -> None:
    logging.getLogger(RECORD_LOGGER).setLevel(logging.CRITICAL)
    child = logging.getLogger(f"{RECORD_LOGGER}.app")
    guard = Guard(FakeProvider(["hi"]), [Observe(logger=child, level=logging.DEBUG)], model="m")
    with capture_records() as records:
        await guard.complete(user="hi")
    assert len(records) == 1


@pytest.mark.anyio
async def test_ignores_other_loggers_and_plain_messages() -> None:
    elsewhere = logging.getLogger("elsewhere")
    elsewhere.setLevel(logging.DEBUG)
    guard = Guard(FakeProvider(["hi"]), [Observe(logger=elsewhere)], model="m")
    with capture_records() as records:
        await guard.complete(user="hi")
        logging.getLogger(RECORD_LOGGER).warning("not a call record")
        logging.getLogger(RECORD_LOGGER).warning("fake", extra={"llmguard_record": "nope"})
    assert records == []


@pytest.mark.anyio
async def test_records_outside_the_block_are_not_collected() -> None:
    guard = Guard(FakeProvider(["before", "inside", "after"]), [Observe()], model="m")
    await guard.complete(user="before")
    with capture_records() as records:
        await guard.complete(user="inside")
    await guard.complete(user="after")
    assert len(records) == 1


@pytest.mark.anyio
async def test_observe_callback_and_capture_see_the_same_record() -> None:
    seen: list[CallRecord] = []
    guard = Guard(FakeProvider(["hi"]), [Observe(callback=seen.append)], model="m")
    with capture_records() as records:
        await guard.complete(user="hi")
    assert records == seen


def test_collects_from_another_thread(sync_guard: Guard) -> None:
    answers: list[str] = []

    def work() -> None:
        answers.append(sync_guard.sync.complete(user="from a thread").text)

    with capture_records() as records:
        thread = threading.Thread(target=work)
        thread.start()
        thread.join(JOIN_TIMEOUT_S)
        assert not thread.is_alive()
    assert answers == ["ok"]
    assert len(records) == 1
    assert records[0].error is None


def test_collects_from_many_threads_at_once(sync_guard: Guard) -> None:
    count = 8
    barrier = threading.Barrier(count)

    def work() -> None:
        barrier.wait(JOIN_TIMEOUT_S)
        sync_guard.sync.complete(user="hi")

    with capture_records() as records:
        threads = [threading.Thread(target=work) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(JOIN_TIMEOUT_S)
        assert not any(thread.is_alive() for thread in threads)
    assert len(records) == count
    assert len({record.call_id for record in records}) == count


def test_collects_from_guard_sync_in_this_thread(sync_guard: Guard) -> None:
    with capture_records() as records:
        sync_guard.sync.complete(user="hi")
        with sync_guard.sync.stream(user="hi") as events:
            for _ in events:
                pass
    assert [record.stream for record in records] == [False, True]


@pytest.mark.parametrize("level", [logging.NOTSET, logging.WARNING, logging.ERROR])
def test_restores_the_logger_level(level: int) -> None:
    logger = logging.getLogger(RECORD_LOGGER)
    logger.setLevel(level)
    handlers = list(logger.handlers)
    with capture_records():
        assert logger.isEnabledFor(logging.DEBUG)
        assert len(logger.handlers) == len(handlers) + 1
    assert logger.level == level
    assert logger.handlers == handlers


def test_leaves_an_already_enabled_level_alone() -> None:
    logger = logging.getLogger(RECORD_LOGGER)
    logger.setLevel(logging.DEBUG)
    with capture_records():
        assert logger.level == logging.DEBUG
    assert logger.level == logging.DEBUG


def test_restores_the_logger_when_the_block_raises() -> None:
    logger = logging.getLogger(RECORD_LOGGER)
    logger.setLevel(logging.WARNING)
    handlers = list(logger.handlers)
    with pytest.raises(RuntimeError, match="boom"), capture_records():
        raise RuntimeError("boom")
    assert logger.level == logging.WARNING
    assert logger.handlers == handlers


@pytest.mark.anyio
async def test_a_quiet_logger_is_quiet_again_after_the_block() -> None:
    logger = logging.getLogger(RECORD_LOGGER)
    logger.setLevel(logging.ERROR)
    seen: list[CallRecord] = []
    guard = Guard(FakeProvider(default="ok"), [Observe(callback=seen.append)], model="m")
    with capture_records() as records:
        await guard.complete(user="hi")
    await guard.complete(user="hi")
    assert len(records) == 1
    assert len(seen) == 2
    assert not logger.isEnabledFor(logging.INFO)


@pytest.mark.anyio
async def test_nested_captures() -> None:
    logger = logging.getLogger(RECORD_LOGGER)
    logger.setLevel(logging.WARNING)
    guard = Guard(FakeProvider(default="ok"), [Observe()], model="m")
    with capture_records() as outer:
        await guard.complete(user="1")
        with capture_records() as inner:
            await guard.complete(user="2")
            await guard.complete(user="3")
        assert logger.isEnabledFor(logging.INFO)  # the inner block kept the outer's level
        await guard.complete(user="4")
    assert logger.level == logging.WARNING
    assert len(inner) == 2
    assert len(outer) == 4
    assert outer[1:3] == inner

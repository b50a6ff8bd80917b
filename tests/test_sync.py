"""``guard.sync``: blocking verbs for Flask, threads, scripts and forked workers."""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import anyio
import flask
import pytest

import llmguard
from llmguard import (
    Guard,
    Layer,
    Observe,
    Provider,
    RequestOptions,
    Response,
    SyncGuard,
    SyncUsageError,
    TextDelta,
)
from llmguard.testing import FakeProvider, capture_records

JOIN_TIMEOUT_S = 5.0

MakeGuard = Callable[..., Guard]


def text_of(events: Sequence[llmguard.StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def sync_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "llmguard-sync"}


@pytest.fixture
def make_guard() -> Iterator[MakeGuard]:
    """Builds Guards and stops their sync loop threads when the test ends."""
    built: list[Guard] = []

    def make(provider: Provider, layers: Sequence[Layer] = ()) -> Guard:
        guard = Guard(provider, layers, model="m")
        built.append(guard)
        return guard

    yield make
    for guard in built:
        guard.sync.close()


# --- context reaches the record -------------------------------------------------------


def test_context_of_the_calling_thread_reaches_the_record(make_guard: MakeGuard) -> None:
    fake = FakeProvider(["first", "second"])
    guard = make_guard(fake, [Observe()])
    with capture_records() as records:
        with llmguard.context(user="u1", tenant="t1", endpoint="/chat", tags=["beta"]):
            first = guard.sync.complete(user="hello")
        second = guard.sync.complete(user="again")
    assert (first.text, second.text) == ("first", "second")
    assert isinstance(first, Response)
    one, two = records
    assert (one.user, one.tenant, one.endpoint, one.tags) == ("u1", "t1", "/chat", ("beta",))
    # The portal thread keeps no context of its own: the next call carries none.
    assert (two.user, two.tenant, two.endpoint, two.tags) == (None, None, None, ())
    assert [r.last_user_text for r in fake.requests] == ["hello", "again"]


def test_guard_sync_is_one_facade_per_guard(make_guard: MakeGuard) -> None:
    guard = make_guard(FakeProvider(default="ok"))
    assert guard.sync is guard.sync
    assert isinstance(guard.sync, SyncGuard)


# --- Flask ------------------------------------------------------------------------------


def test_complete_from_a_flask_view(make_guard: MakeGuard) -> None:
    fake = FakeProvider(default="hello from flask")
    guard = make_guard(fake, [Observe()])
    app = flask.Flask(__name__)

    @app.post("/chat")
    def chat() -> dict[str, str]:
        question = flask.request.get_json()["question"]
        with llmguard.context(user="alice", endpoint="/chat"):
            response = guard.sync.complete(user=question)
        return {"answer": response.text}

    with capture_records() as records:
        reply = app.test_client().post("/chat", json={"question": "Hi there"})
    assert reply.status_code == 200
    assert reply.get_json() == {"answer": "hello from flask"}
    (record,) = records
    assert record.user == "alice"
    assert record.endpoint == "/chat"
    assert record.error is None
    assert fake.requests[-1].last_user_text == "Hi there"


# --- many threads -----------------------------------------------------------------------


def test_complete_from_eight_threads_at_once(make_guard: MakeGuard) -> None:
    count = 8
    arrived = 0
    all_in: anyio.Event | None = None

    async def rendezvous(_seconds: float) -> None:
        # FakeProvider's latency sleep: every call waits until all of them are in
        # flight on the guard's loop, which proves the calls really overlap.
        nonlocal arrived, all_in
        if all_in is None:
            all_in = anyio.Event()
        arrived += 1
        if arrived == count:
            all_in.set()
        with anyio.fail_after(JOIN_TIMEOUT_S):
            await all_in.wait()

    fake = FakeProvider(latency=1.0, sleep=rendezvous)
    for i in range(count):
        fake.when(f"question #{i}.").reply(f"answer #{i}")
    guard = make_guard(fake, [Observe()])
    barrier = threading.Barrier(count, timeout=JOIN_TIMEOUT_S)
    answers: dict[int, str] = {}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with llmguard.context(user=f"user-{i}", endpoint="/threads"):
                barrier.wait()
                answers[i] = guard.sync.complete(user=f"question #{i}.").text
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    with capture_records() as records:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(JOIN_TIMEOUT_S)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert answers == {i: f"answer #{i}" for i in range(count)}
    assert arrived == count
    assert len(records) == count
    assert sorted(r.user or "" for r in records) == sorted(f"user-{i}" for i in range(count))
    assert all(r.endpoint == "/threads" and r.error is None for r in records)


# --- a plain script -----------------------------------------------------------------------


def test_complete_from_a_plain_script_without_a_loop() -> None:
    script = textwrap.dedent(
        """
        from llmguard import Guard
        from llmguard.testing import FakeProvider

        guard = Guard(FakeProvider(["hello from a script"]), model="m")
        print(guard.sync.complete(user="hi").text)
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello from a script\n"
    assert done.stderr == ""


# --- a forked child ------------------------------------------------------------------------


def _wait_or_kill(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        waited, status = os.waitpid(pid, os.WNOHANG)
        if waited:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the forked child hung for {timeout}s and was killed")
        time.sleep(0.01)


def _read_all(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks).decode()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+: fork with threads
def test_complete_in_a_forked_child(make_guard: MakeGuard) -> None:
    fake = FakeProvider()
    fake.when("parent").reply("parent answer")
    fake.when("child").reply("child answer")
    guard = make_guard(fake, [Observe()])
    before = sync_threads()
    assert guard.sync.complete(user="parent, first").text == "parent answer"
    assert sync_threads() - before  # the parent's loop thread exists at fork time

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child, measured by nothing
        code = 1
        try:
            os.close(read_fd)
            with capture_records() as records, llmguard.context(user="forked"):
                text = guard.sync.complete(user="child").text
            os.write(write_fd, f"{text}|{records[0].user}".encode())
            code = 0
        except BaseException as exc:
            os.write(write_fd, f"child failed: {exc!r}".encode())
        finally:
            os._exit(code)

    os.close(write_fd)
    try:
        exit_code = _wait_or_kill(pid, timeout=10.0)
        output = _read_all(read_fd)
    finally:
        os.close(read_fd)
    assert exit_code == 0, output
    assert output == "child answer|forked"
    # The parent's loop is untouched by the child.
    assert guard.sync.complete(user="parent, after").text == "parent answer"


# --- inside a running loop -----------------------------------------------------------------


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_inside_a_running_loop_raises_sync_usage_error(backend: str, make_guard: MakeGuard) -> None:
    fake = FakeProvider(default="never")
    guard = make_guard(fake)

    async def main() -> None:
        with pytest.raises(SyncUsageError, match=r"inside a running") as info:
            guard.sync.complete(user="hi")
        message = str(info.value)
        assert "guard.sync.complete()" in message
        assert "await guard.complete(...)" in message
        with (
            pytest.raises(SyncUsageError, match=r"await guard\.stream\(\.\.\.\)"),
            guard.sync.stream(user="hi"),
        ):
            pytest.fail("the body must not run")  # pragma: no cover

    anyio.run(main, backend=backend)
    assert fake.requests == []
    assert fake.streams == []
    assert issubclass(SyncUsageError, llmguard.LLMGuardError)


# --- streams -------------------------------------------------------------------------------


def test_stream_yields_a_blocking_iterator_and_closes_upstream_at_the_end(
    make_guard: MakeGuard,
) -> None:
    fake = FakeProvider(["Hello, streaming world"], chunk_size=5)
    guard = make_guard(fake, [Observe()])
    with (
        capture_records() as records,
        llmguard.context(user="streamer"),
        guard.sync.stream(user="hi") as events,
    ):
        received = list(events)
        log = fake.streams[-1]
        assert log.completed
    assert isinstance(events, llmguard.SyncEvents)
    assert len([e for e in received if isinstance(e, TextDelta)]) == 5
    assert text_of(received) == "Hello, streaming world"
    assert events.response.text == "Hello, streaming world"
    assert events.response.finish_reason == "stop"
    assert log.closed
    (record,) = records
    assert record.stream is True
    assert record.user == "streamer"
    assert record.error is None


def test_stream_closes_upstream_after_breaking_out_early(make_guard: MakeGuard) -> None:
    fake = FakeProvider(["abcdefghij"], chunk_size=2)
    guard = make_guard(fake, [Observe()])
    with capture_records() as records, guard.sync.stream(user="hi") as events:
        for event in events:
            assert event == TextDelta(text="ab")
            break
        assert not fake.streams[-1].closed
    log = fake.streams[-1]
    assert log.closed
    assert not log.completed
    assert log.events_sent == 1
    (record,) = records
    assert record.stream is True


def test_stream_closes_upstream_when_the_with_block_raises(make_guard: MakeGuard) -> None:
    fake = FakeProvider(["one two three four"], chunk_size=3)
    guard = make_guard(fake, [Observe()])

    def consume_and_fail() -> None:
        with guard.sync.stream(user="hi") as events:
            for _ in events:
                raise ValueError("consumer bug")

    with capture_records() as records, pytest.raises(ValueError, match="consumer bug"):
        consume_and_fail()
    log = fake.streams[-1]
    assert log.closed
    assert not log.completed
    assert log.events_sent == 1
    assert records[0].error == "ValueError"
    # The loop survives the failed stream.
    fake.add("still here")
    assert guard.sync.complete(user="hi").text == "still here"


# --- close ---------------------------------------------------------------------------------


def test_close_then_use_again_starts_a_new_loop(make_guard: MakeGuard) -> None:
    fake = FakeProvider(default="ok")
    guard = make_guard(fake)
    before = sync_threads()
    assert guard.sync.complete(user="one").text == "ok"
    (first,) = sync_threads() - before

    guard.sync.close()
    first.join(JOIN_TIMEOUT_S)
    assert not first.is_alive()
    guard.sync.close()  # closing twice is harmless

    assert guard.sync.complete(user="two").text == "ok"
    (second,) = sync_threads() - before
    assert second is not first
    assert second.is_alive()
    with guard.sync.stream(user="three") as events:
        assert text_of(list(events)) == "ok"
    assert len(fake.requests) == 3


# --- signatures ----------------------------------------------------------------------------


def _signature(function: Callable[..., object]) -> inspect.Signature:
    # _guard and _sync import the types of their signatures only under TYPE_CHECKING
    # (so `import llmguard` stays fast): resolve them from the public namespace.
    import llmguard._output.types as output_types
    import llmguard._tools.loop as tools_loop

    names = {name: getattr(llmguard, name) for name in llmguard.__all__}
    names.update(RequestOptions=RequestOptions, T=output_types.T)
    names.update(ToolRunOptions=tools_loop.ToolRunOptions)
    return inspect.signature(function, eval_str=True, locals=names)


def test_sync_verbs_have_the_signatures_of_the_async_verbs() -> None:
    verbs = {
        name
        for name, member in vars(Guard).items()
        if not name.startswith("_") and inspect.iscoroutinefunction(member)
    } | {"stream"}
    assert "complete" in verbs
    for verb in sorted(verbs):
        async_sig = _signature(getattr(Guard, verb))
        sync_sig = _signature(getattr(SyncGuard, verb))
        assert list(sync_sig.parameters.values()) == list(async_sig.parameters.values()), verb
    assert _signature(SyncGuard.complete).return_annotation is Response
    assert _signature(Guard.complete).return_annotation is Response

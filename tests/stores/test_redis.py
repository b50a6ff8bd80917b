"""``RedisStore`` beyond the contract: keys and hash tags, expiry, time from the server,
scripts, idempotence under lost replies, cancellation, and bounded failure.

Redis runs on asyncio only: these tests use the asyncio backend (one test checks that
trio is refused with ``ConfigurationError``).
"""

from __future__ import annotations

import gc
import logging
import math
import random
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio
from _proxy import Proxy
from _redis_servers import (
    RedisServer,
    delete_prefix,
    require_redis,
    require_server_binary,
    skip_or_fail,
)
from _timing import StarvationMeter
from redis.crc import key_slot

import llmguard
from llmguard import ConfigurationError, StoreUnavailable, Window
from llmguard._stores import redis as redis_module
from llmguard._stores._redis_client import SCRIPTS, script_source
from llmguard._stores._redis_keys import KeyLayout, hash_tag
from llmguard._stores.redis import RedisStore

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

HOUR = Window.fixed(3600)
STORE_LOGGER = "llmguard.stores"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def new_prefix() -> str:
    return f"llmguard-test:{uuid.uuid4().hex}:"


@pytest.fixture
def prefix() -> Iterator[str]:
    """A fresh key prefix on the shared Redis; its keys are deleted afterwards."""
    url = require_redis()
    value = new_prefix()
    yield value
    with redis.Redis.from_url(url) as client:
        for key in client.scan_iter(match=f"{value}*", count=1000):
            client.delete(key)


@pytest.fixture
async def store(prefix: str) -> AsyncIterator[RedisStore]:
    # Semantics, not bounds (those have their own stores below): room for a loaded box.
    async with RedisStore.from_url(require_redis(), prefix=prefix, timeout=5.0) as s:
        yield s


def outage_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == STORE_LOGGER and r.levelno == logging.WARNING]


# -- construction and import -----------------------------------------------------------


def test_import_llmguard_does_not_import_redis() -> None:
    code = (
        "import sys, llmguard; llmguard.RedisStore; llmguard.SQLiteStore; "
        "print('redis' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


def test_a_missing_redis_extra_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    with pytest.raises(ImportError, match=r'pip install "llmguard\[redis\]"'):
        RedisStore.from_url("redis://127.0.0.1:6379/0")


def test_the_scripts_ship_as_package_data() -> None:
    folder = resources.files("llmguard._stores").joinpath("lua")
    names = sorted(item.name for item in folder.iterdir() if item.name.endswith(".lua"))
    assert names == ["cache.lua", "ledger.lua", "prelude.lua", "state.lua"]
    for name in SCRIPTS:  # each script starts with the prelude (time from the server)
        assert "redis.call('TIME')" in script_source(name)
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert 'packages = ["src/llmguard"]' in pyproject  # hatch ships every file under it


def test_public_names() -> None:
    assert llmguard.RedisStore is RedisStore
    assert repr(RedisStore) == "<class 'llmguard.RedisStore'>"


def test_the_default_bound_is_250_ms() -> None:
    assert RedisStore.from_url("redis://127.0.0.1:6379/0")._timeout == 0.25


@pytest.mark.parametrize("bad", ["app{1}:", "{", "x}"])
def test_a_prefix_with_braces_is_refused(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="prefix"):
        RedisStore.from_url("redis://127.0.0.1:6379/0", prefix=bad)


@pytest.mark.parametrize("timeout", [0, -1, math.inf])
def test_a_timeout_must_be_positive_and_finite(timeout: float) -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        RedisStore.from_url("redis://127.0.0.1:6379/0", timeout=timeout)


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_is_refused_with_configuration_error(anyio_backend: str) -> None:
    store = RedisStore.from_url("redis://127.0.0.1:6379/0")
    with pytest.raises(ConfigurationError, match="asyncio only"):
        await store.reserve("k", "a", 1, limit=10, window=HOUR, hold=60)
    with pytest.raises(ConfigurationError, match="asyncio only"):
        await store.get("k")


def test_a_store_is_bound_to_one_event_loop(prefix: str) -> None:
    store = RedisStore.from_url(require_redis(), prefix=prefix)

    async def use_and_close() -> None:
        await store.get("k")
        await store.aclose()

    async def use() -> None:
        await store.get("k")

    anyio.run(use_and_close)
    with pytest.raises(ConfigurationError, match="one RedisStore per event loop"):
        anyio.run(use)


async def test_a_failed_connect_closes_what_it_opened(
    prefix: str, redis_cluster: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Connected, then the scripts fail to load: the connections must not leak.
    monkeypatch.setattr(redis_module, "script_source", lambda name: "this is not Lua")
    with pytest.raises(StoreUnavailable, match="Redis failed"):
        async with RedisStore.from_url(require_redis(), prefix=prefix):
            pass  # pragma: no cover
    with pytest.raises(StoreUnavailable, match="Redis failed"):
        async with RedisStore.cluster(redis_cluster, prefix=prefix, timeout=2):
            pass  # pragma: no cover
    gc.collect()  # an unclosed client would warn here (and warnings are errors)


# -- keys, hash tags, expiry -----------------------------------------------------------


WEIRD_KEYS = ["", "user:1", "{", "}", "a}b", "{x}", "%", "%7B", "tenant/{a}/b", "ü"]


@pytest.mark.parametrize("key", WEIRD_KEYS)
def test_every_key_of_a_scope_is_in_one_slot(key: str) -> None:
    layout = KeyLayout("app:")
    keys = [
        *layout.ledger(key, Window.sliding(60)),
        layout.cache(key),
        layout.lock(key),
        layout.value(key),
        layout.counter(key),
    ]
    assert len(set(keys)) == len(keys)
    assert len({key_slot(k.encode()) for k in keys}) == 1
    assert all(k.startswith("app:{") for k in keys)


def test_hash_tags_are_never_empty_and_never_collide() -> None:
    tags = [hash_tag(k) for k in WEIRD_KEYS]
    assert len(set(tags)) == len(tags)
    assert all(tag and "{" not in tag and "}" not in tag for tag in tags)


async def test_keys_expire_when_what_they_hold_stops_counting(
    store: RedisStore, prefix: str
) -> None:
    client = store._client
    layout = KeyLayout(prefix)
    h, e, w = layout.ledger("k", HOUR)
    await store.reserve("k", "a", 5, limit=100, window=HOUR, hold=5)
    for key in (h, e):
        assert 0 < await client.pttl(key) <= 6000  # the hold, plus a second of slack
    settled = await store.settle("k", "a", 5, window=HOUR)
    until_end = (settled.reset_at - time.time() + 1) * 1000
    assert 0 < await client.pttl(w) <= until_end + 100
    assert await client.pttl(e) > 3_500_000  # the closed id is remembered for an hour

    minute = Window.sliding(60)
    await store.settle("k", "b", 5, window=minute)
    sliding = layout.ledger("k", minute)[3]
    assert 0 < await client.pttl(sliding) <= 61_000

    await store.settle("k", "c", 5, window=Window.forever())
    assert await client.pttl(w) == -1  # a forever total never expires

    await store.set("c", b"v", ttl=3)
    assert 2000 < await client.pttl(layout.cache("c")) <= 3000  # Redis's own expiry, no slack
    await store.set("c", b"v", ttl=None)
    assert await client.pttl(layout.cache("c")) == -1
    await store.acquire_lock("l", ttl=2)
    assert 0 < await client.pttl(layout.lock("l")) <= 3000
    await store.increment("n", 1, ttl=2)
    assert 0 < await client.pttl(layout.counter("n")) <= 3000


async def test_time_comes_from_the_server_not_the_client(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    server_now = float((await store._client.time())[0])
    # This client's clock is a day and a half ahead: the windows follow the server.
    monkeypatch.setattr(redis_module, "wall_clock", lambda: server_now + 1.5 * 86400)
    result = await store.reserve("k", "a", 1, limit=10, window=HOUR, hold=60)
    # (the second figure: the hour ended while we asked)
    assert result.reset_at in {HOUR.bounds(server_now)[1], HOUR.bounds(server_now + 5)[1]}
    day = Window.fixed(86400, tz="Europe/Berlin")
    assert (await store.usage("k", window=day)).reset_at in {
        day.bounds(server_now)[1],
        day.bounds(server_now + 5)[1],
    }
    # And a hold expires by the server's clock, not ours.
    assert (await store.usage("k", window=HOUR)).reserved == 1


async def test_scripts_are_loaded_again_after_script_flush(store: RedisStore) -> None:
    await store.reserve("k", "a", 1, limit=10, window=HOUR, hold=60)
    await store._client.script_flush()
    assert (await store.reserve("k", "b", 1, limit=10, window=HOUR, hold=60)).reserved == 2
    assert await store.get("nothing") is None


async def test_reserve_and_settle_cost_one_round_trip_each(store: RedisStore) -> None:
    sent = count_commands(store)
    await store.reserve("k", "a", 10, limit=100, window=HOUR, hold=60)
    await store.settle("k", "a", 7, window=HOUR)
    assert sent == ["EVALSHA", "EVALSHA"]


def count_commands(store: RedisStore) -> list[str]:
    """The names of the commands ``store`` sends from now on."""
    sent: list[str] = []
    original = store._client.execute_command

    async def counting(*args: Any, **options: Any) -> Any:
        sent.append(str(args[0]))
        return await original(*args, **options)

    store._client.execute_command = counting  # type: ignore[method-assign]
    return sent


async def test_a_cache_value_is_one_plain_command_each_way(store: RedisStore) -> None:
    sent = count_commands(store)
    await store.set("k", b"v", ttl=10)
    assert await store.get("k") == b"v"
    assert await store.get("missing") is None
    await store.set("k", b"w", ttl=None)
    await store.set("k", b"x", ttl=0)  # a TTL of zero or less deletes
    await store.delete("k")
    assert sent == ["SET", "GET", "GET", "SET", "DEL", "DEL"]


async def test_cache_values_expire_by_redis_own_clock(store: RedisStore, prefix: str) -> None:
    client = store._client
    layout = KeyLayout(prefix)
    await store.set("k", b"v", ttl=10)
    assert 9000 < await client.pttl(layout.cache("k")) <= 10_000
    await store.set("k", b"v", ttl=None)  # a new value without a TTL drops the old TTL
    assert await client.pttl(layout.cache("k")) == -1
    await store.set("k", b"v", ttl=1e300)  # past what Redis can expire: kept, no expiry
    assert await client.pttl(layout.cache("k")) == -1
    await store.set("k", b"v", ttl=-1)
    assert await client.exists(layout.cache("k")) == 0
    with pytest.raises(ValueError, match="ttl"):
        await store.set("k", b"v", ttl=math.nan)

    await store.set("brief", b"v", ttl=0.0001)  # rounded up to Redis's 1 ms
    assert await client.pttl(layout.cache("brief")) in (-2, 0, 1)
    await store.set("short", b"v", ttl=0.05)
    deadline = time.monotonic() + 10
    while await store.get("short") is not None:  # Redis expires it; no duration asserted
        assert time.monotonic() < deadline, "a 50 ms cache value never expired"
        await anyio.sleep(0.01)
    assert await store.get("brief") is None


async def test_commands_beyond_max_connections_wait_their_turn(prefix: str) -> None:
    async with RedisStore.from_url(
        require_redis(), prefix=prefix, timeout=10, max_connections=2
    ) as store:
        await store.set("k", b"v", ttl=None)
        answers: list[bytes | None] = []

        async def one() -> None:
            answers.append(await store.get("k"))

        async with anyio.create_task_group() as group:
            for _ in range(20):
                group.start_soon(one)
        assert answers == [b"v"] * 20
        assert store._in_flight is not None
        assert store._in_flight.value == 2  # every turn was given back


async def test_a_cache_value_an_older_llmguard_stored_is_a_miss(
    store: RedisStore, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before ``:c2``, a value was a hash under ``:c`` read by a script: never read now
    (no ``WRONGTYPE``, no outage), and ``delete`` removes it too."""
    client = store._client
    layout = KeyLayout(prefix)
    old = layout.legacy_cache("k")
    await client.hset(old, mapping={"v": b"stale", "x": "1e18"})
    assert await store.get("k") is None
    await store.set("k", b"new", ttl=None)
    assert await store.get("k") == b"new"
    await store.delete("k")
    assert await client.exists(old, layout.cache("k")) == 0
    assert outage_warnings(caplog) == []


async def test_a_client_made_elsewhere_stays_open(prefix: str) -> None:
    async with redis.asyncio.Redis.from_url(require_redis()) as client:
        store = RedisStore(client, prefix=prefix)
        assert "redis" in repr(store)
        await store.set("k", b"v", ttl=None)
        await store.aclose()
        assert await client.ping()
        assert await store.get("k") == b"v"


# -- Redis Cluster ----------------------------------------------------------------------


async def test_the_cluster_runs_every_scope_in_one_slot(redis_cluster: list[str]) -> None:
    prefix = new_prefix()
    minute = Window.sliding(60)
    async with RedisStore.cluster(redis_cluster, prefix=prefix, timeout=2) as store:
        try:
            for key in WEIRD_KEYS:  # no CROSSSLOT, whatever the key
                assert (await store.reserve(key, "a", 2, limit=10, window=minute, hold=60)).ok
                assert (await store.settle(key, "a", 1, window=minute)).used == 1
                await store.set(key, b"v", ttl=10)
                assert await store.get(key) == b"v"
                await store.delete(key)  # the value and an older llmguard's, one slot
                assert await store.get(key) is None
                token = await store.acquire_lock(key, ttl=5)
                assert token is not None
                assert await store.release_lock(key, token)
                assert await store.compare_and_set(key, 0, b"x", ttl=None)
                assert await store.increment(key, 2, ttl=None) == 2
            nodes = {
                store._client.get_node_from_key(k).name
                for k in KeyLayout(prefix).ledger("user:1", minute)
            }
            assert len(nodes) == 1  # all of one scope on one node...
            owners = {
                store._client.get_node_from_key(f"{prefix}{{{k}}}:h").name for k in "abcdefgh"
            }
            assert len(owners) > 1  # ...and the scopes spread over the nodes

            await store._client.script_flush()  # on every primary
            assert (await store.usage("user:1", window=minute)).used == 1  # loaded again
        finally:
            await delete_prefix(store._client, prefix)


async def test_a_cluster_store_from_a_url(redis_cluster: list[str]) -> None:
    prefix = new_prefix()
    async with RedisStore.cluster(f"redis://{redis_cluster[0]}", prefix=prefix, timeout=2) as store:
        assert "cluster" in repr(store)
        try:
            assert (await store.reserve("k", "a", 1, limit=1, window=HOUR, hold=60)).ok
            assert not (await store.reserve("k", "b", 1, limit=1, window=HOUR, hold=60)).ok
        finally:
            await delete_prefix(store._client, prefix)


def test_a_cluster_node_must_be_host_and_port() -> None:
    with pytest.raises(ConfigurationError, match="host:port"):
        RedisStore.cluster(["localhost"])


def test_a_missing_redis_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        skip_or_fail("no Redis here")
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="REDIS TESTS SKIPPED"):
        skip_or_fail("no Redis here")


# -- idempotence: lost replies ---------------------------------------------------------


class LoseReplies:
    """A fault hook: the script runs on the server, then its reply is lost on the way."""

    def __init__(self, script: Any) -> None:
        self.script = script
        self.lost = 0

    async def __call__(self, **kwargs: Any) -> Any:
        await self.script(**kwargs)
        self.lost += 1
        raise redis.exceptions.ConnectionError("the reply was lost on the way")


async def each(items: list[Any], call: Callable[[Any], Awaitable[None]], limit: int = 20) -> None:
    """``call(item)`` for every item, ``limit`` at a time."""
    queue = list(reversed(items))

    async def worker() -> None:
        while queue:
            await call(queue.pop())

    async with anyio.create_task_group() as group:
        for _ in range(limit):
            group.start_soon(worker)


async def check_lost_replies(lossy: RedisStore, direct: RedisStore, n: int) -> int:
    """Reserve and settle ``n`` ids through ``lossy``, whose replies never arrive; the
    retries through ``direct`` must find each counted once. Returns the lost replies."""
    amounts = {f"r{i}": random.randint(1, 50) for i in range(n)}

    async def lost_reserve(rid: str) -> None:
        with pytest.raises(StoreUnavailable) as caught:
            await lossy.reserve("k", rid, 1, limit=10**9, window=HOUR, hold=600)
        assert isinstance(caught.value.__cause__, redis.exceptions.ConnectionError)

    async def retried_reserve(rid: str) -> None:  # the caller's own retry, answered
        assert (await direct.reserve("k", rid, 1, limit=10**9, window=HOUR, hold=600)).ok

    async def lost_settle(rid: str) -> None:
        with pytest.raises(StoreUnavailable):
            await lossy.settle("k", rid, amounts[rid], window=HOUR)

    async def repeated_settle(rid: str) -> None:  # repeated settles are no-ops
        await direct.settle("k", rid, amounts[rid], window=HOUR)

    await each(list(amounts), lost_reserve)
    held = await direct.usage("k", window=HOUR)
    assert (held.used, held.reserved) == (0, n)  # each counted once (sent twice)
    await each(list(amounts), retried_reserve)
    assert (await direct.usage("k", window=HOUR)).reserved == n

    await each(list(amounts), lost_settle)
    total = sum(amounts.values())
    settled = await direct.usage("k", window=HOUR)
    assert (settled.used, settled.reserved) == (total, 0)
    await each(list(amounts), repeated_settle)
    assert (await direct.usage("k", window=HOUR)).used == total
    return 4 * n  # each command was sent twice (the store's retry), both replies lost


async def test_a_lost_reply_never_counts_twice(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """1,000 reservations whose every reply is lost after the server ran the script."""
    url = require_redis()
    async with (  # generous timeouts: only the injected loss may fail a call here
        RedisStore.from_url(url, prefix=prefix, timeout=10) as lossy,
        RedisStore.from_url(url, prefix=prefix, timeout=10) as direct,
    ):
        hook = lossy._scripts["ledger"] = LoseReplies(lossy._scripts["ledger"])  # type: ignore[assignment]
        expected = await check_lost_replies(lossy, direct, 1000)
        assert hook.lost == expected
    assert len(outage_warnings(caplog)) == 1  # one outage of the lossy store, one warning


async def test_a_reply_lost_on_the_network_never_counts_twice(prefix: str) -> None:
    """The same through a TCP proxy that forwards EVALSHA, then drops the reply and closes."""
    url = require_redis()
    async with (
        Proxy(6379) as proxy,
        RedisStore.from_url(proxy.url, prefix=prefix, timeout=10) as lossy,
        RedisStore.from_url(url, prefix=prefix, timeout=10) as direct,
    ):
        proxy.drop_replies = True
        expected = await check_lost_replies(lossy, direct, 50)
        assert proxy.dropped == expected


# -- cancellation ----------------------------------------------------------------------


async def test_a_cancelled_call_never_delivers_its_reply_to_the_next(prefix: str) -> None:
    """Cancel calls mid-read behind a delaying proxy; the next call gets its own answer.

    As redis-py's regression test for CVE-2023-28858/28859: with one connection in the
    pool, a connection left with an unread reply would hand it to the next caller.
    """
    url = require_redis()
    async with (
        RedisStore.from_url(url, prefix=prefix) as direct,
        Proxy(6379) as proxy,
    ):
        await direct.set("a", b"A", ttl=None)
        await direct.set("b", b"B", ttl=None)
        await direct.reserve("kb", "x", 11, limit=100, window=HOUR, hold=600)
        for max_connections in (1, 4):
            async with RedisStore.from_url(
                proxy.url, prefix=prefix, timeout=5, max_connections=max_connections
            ) as store:
                for delay in (0.01, 0.03, 0.08):
                    for run in range(3):
                        await cancel_mid_read(proxy, delay, store, run)


async def cancel_mid_read(proxy: Proxy, delay: float, store: RedisStore, run: int) -> None:
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.get("a"),
        lambda: store.reserve("ka", f"r{run}", 1, limit=100, window=HOUR, hold=600),
        lambda: store.settle("ka", f"s{run}", 3, window=HOUR),
    ]
    for call in calls:
        proxy.reset()
        proxy.delay = delay
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as group:

                async def cancel_when_sent() -> None:
                    await proxy.request_seen.wait()
                    await anyio.sleep(delay / 2)  # the request is out, its reply held
                    scope.cancel()

                group.start_soon(cancel_when_sent)
                await call()
                pytest.fail("the call was not cancelled")  # pragma: no cover
        assert scope.cancelled_caught
        proxy.delay = 0
        assert await store.get("b") == b"B"
        usage = await store.usage("kb", window=HOUR, limit=100)
        assert (usage.used, usage.reserved, usage.limit) == (0, 11, 100)
        assert await store.get("a") == b"A"


# -- bounded failure -------------------------------------------------------------------


BOUND = 0.1  # shorter than the default 250 ms, to keep the tests quick
SLACK = 0.1  # beyond time the process was not scheduled at all (see _timing.py)
BATCH_UNWIND = 0.2  # 50 commands cut at once unwind one after another (see its test)


async def timed(
    meter: StarvationMeter, call: Callable[[], Awaitable[object]]
) -> tuple[float, BaseException | None]:
    """How long ``call`` took, less the time nobody ran; and its ``StoreUnavailable``."""
    start = time.monotonic()
    error: BaseException | None = None
    try:
        await call()
    except StoreUnavailable as exc:
        error = exc
    end = time.monotonic()
    return end - start - meter.starved(start, end), error


async def test_a_stopped_redis_is_unavailable_within_the_bound_and_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    require_server_binary()
    server = RedisServer().start()
    try:
        async with RedisStore.from_url(server.url, timeout=BOUND) as store:
            assert (await store.reserve("k", "a", 1, limit=10**6, window=HOUR, hold=60)).ok
            server.kill()
            with StarvationMeter() as meter:
                for i in range(1000):
                    elapsed, error = await timed(
                        meter,
                        lambda i=i: store.reserve(
                            "k", f"r{i}", 1, limit=10**6, window=HOUR, hold=60
                        ),
                    )
                    assert error is not None, "a call to a stopped Redis succeeded"
                    assert elapsed <= BOUND + SLACK, elapsed
                    assert isinstance(error.__cause__, (redis.RedisError, OSError, TimeoutError))
            assert len(outage_warnings(caplog)) == 1

            server.start()  # same port, empty data, no scripts loaded
            result = await store.reserve("k", "b", 1, limit=10**6, window=HOUR, hold=60)
            assert result.ok
            assert await store.get("x") is None
            assert any("answers again" in r.getMessage() for r in caplog.records)
    finally:
        server.stop()
    assert len(outage_warnings(caplog)) == 1


async def test_a_redis_that_does_not_answer_is_unavailable_within_the_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SIGSTOP: connections are accepted and nothing answers; 500 calls, 50 at a time."""
    require_server_binary()
    server = RedisServer().start()
    try:
        async with RedisStore.from_url(server.url, timeout=BOUND) as store:
            await store.set("k", b"v", ttl=None)
            server.pause()
            results: list[tuple[float, BaseException | None]] = []
            with StarvationMeter() as meter:

                async def one(i: int) -> None:
                    results.append(await timed(meter, lambda: store.get(f"k{i}")))

                for batch in range(10):
                    async with anyio.create_task_group() as group:
                        for i in range(50):
                            group.start_soon(one, batch * 50 + i)
            assert len(results) == 500
            assert all(error is not None for _, error in results)
            slowest = max(elapsed for elapsed, _ in results)
            # 50 commands cut at the same instant each unwind their connection: on a
            # loaded 2-core machine the last one ends ~0.1 s later (CPU, not a hang; the
            # unbounded default would be seconds per command)
            assert slowest <= BOUND + SLACK + BATCH_UNWIND, (slowest, meter.worst)
            assert len(outage_warnings(caplog)) == 1

            server.resume()
            assert await store.get("k") == b"v"
    finally:
        server.stop()

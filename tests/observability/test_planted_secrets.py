"""A planted-secret run: a sentinel API key, header, user id and prompt go through the
whole stack (the real openai SDK on the fake endpoint, budgets and cache on a real
Redis, telemetry, logging) on the success, provider-error, timeout, fallback and
budget-refusal paths; with content recording off, none of them appears in any log
record, span, metric, exception, repr, call record or store key.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tenacity import wait_none

import llmguard
from _redis_ping import require_redis
from llmguard import (
    Budget,
    BudgetExceeded,
    Cache,
    CallRecord,
    DeadlineExceeded,
    Fallback,
    Guard,
    Limit,
    Observe,
    OpenAIProvider,
    ProviderError,
    Pseudonymize,
    RedisStore,
    Request,
    Response,
    Retry,
)
from llmguard.testing import FakeOpenAIEndpoint, FakeReply, WireReply

from ._harness import all_text, make_telemetry

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

KEY = "sk-proj-PLANTEDKEY0c1f9e7b2a6d4c3b5a8e9f0dXyZq"
ECHOED_KEY = "sk-proj-****XyZq"  # how OpenAI's 401 quotes a key back
HEADER = "PLANTEDHEADER-7b1e5c"
USER = "planted-user-5d1c@example.com"
PROMPT = "PLANTEDPROMPT: my card number is 4111 1111 1111 1111"
SENTINELS = (KEY, "PLANTEDKEY", "XyZq", HEADER, "PLANTEDHEADER", USER, "planted-user", PROMPT)
SENTINELS += ("PLANTEDPROMPT", "4111 1111")
PSEUDONYM_KEY = b"a test secret for pseudonyms, 32b"
FIXTURES = Path(
    os.environ.get(
        "LLMGUARD_FIXTURES", Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "openai"
    )
)


def load(name: str) -> dict[str, Any]:
    path = FIXTURES / name
    if not path.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"the recorded fixtures are missing: {FIXTURES}")
        pytest.skip(f"the recorded fixtures are missing: {FIXTURES}")
    return json.loads(path.read_text())  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis.asyncio runs on asyncio only


@dataclass
class Capture:
    """Everything a run left behind that someone could read."""

    logs: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    records: list[CallRecord] = field(default_factory=list)

    def exception(self, error: BaseException) -> None:
        """An exception the caller saw, with its whole cause/context chain."""
        seen: set[int] = set()
        pending: list[BaseException | None] = [error]
        while pending:
            current = pending.pop()
            if current is None or id(current) in seen:
                continue
            seen.add(id(current))
            self.texts += [str(current), repr(current), *map(str, current.args)]
            pending += [current.__cause__, current.__context__]
            pending += list(getattr(current, "exceptions", ()))


class _Collect(logging.Handler):
    def __init__(self, capture: Capture) -> None:
        super().__init__(logging.DEBUG)
        self._capture = capture
        self._format = logging.Formatter("%(name)s %(levelname)s %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        # llmguard's own loggers at every level; other libraries' from INFO (the openai
        # SDK's DEBUG log prints request options, prompts included: its business).
        if not record.name.startswith("llmguard") and record.levelno < logging.INFO:
            return
        text = self._format.format(record)
        extras = {k: v for k, v in vars(record).items() if k not in ("msg", "args")}
        self._capture.logs.append(text + " " + json.dumps(extras, default=repr))


@contextmanager
def capture_logs(capture: Capture) -> Iterator[None]:
    handler = _Collect(capture)
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


def client_for(endpoint: FakeOpenAIEndpoint) -> Any:
    client = endpoint.async_client(api_key=KEY)
    return client.with_options(default_headers={"X-Internal-Token": HEADER})


@pytest.fixture
async def store() -> AsyncIterator[RedisStore]:
    prefix = f"llmguard-test-secrets-{uuid.uuid4().hex[:8]}:"
    async with RedisStore.from_url(require_redis(), prefix=prefix, timeout=5.0) as opened:
        yield opened
        client = opened._client
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)


async def store_keys(store: RedisStore) -> list[str]:
    client = store._client
    prefix = store._keys.prefix
    return [
        k.decode() if isinstance(k, bytes) else k
        async for k in client.scan_iter(match=f"{prefix}*")
    ]


async def canned(request: Request) -> Response:
    """The non-LLM last resort."""
    return Response(text="Our assistant is busy; here is our FAQ.", model="faq")


def stack(
    primary: FakeOpenAIEndpoint,
    store: RedisStore,
    capture: Capture,
    *,
    tokens: int = 1_000_000,
    timeout: float = 30,
) -> tuple[Guard, Any, list[Any]]:
    telemetry = make_telemetry()
    backup = OpenAIProvider(client_for(FakeOpenAIEndpoint(["The backup answers."])), name="backup")
    layers: list[Any] = [
        Pseudonymize(PSEUDONYM_KEY),
        telemetry.layer,
        Observe(callback=capture.records.append),
        Cache(store, scope="user"),
        Budget(Limit(tokens=tokens, per="hour", scope="user"), store=store),
        Fallback(to=[(backup, "gpt-4o-mini"), canned]),
        Retry(attempts=2, wait=wait_none()),
    ]
    guard = Guard(OpenAIProvider(client_for(primary)), layers, model="gpt-4o-mini", timeout=timeout)
    return guard, telemetry, layers


async def finish(
    capture: Capture, guard: Guard, telemetry: Any, layers: list[Any], store: RedisStore
) -> None:
    capture.texts.append(all_text(telemetry))
    data = telemetry.reader.get_metrics_data()
    capture.texts.append(data.to_json() if data is not None else "")
    capture.texts += [repr(guard), repr(store), *map(repr, layers)]
    for record in capture.records:
        capture.texts += [repr(record), json.dumps(record.as_dict())]
    capture.texts += await store_keys(store)


def assert_clean(capture: Capture) -> None:
    assert capture.logs and capture.records  # the run did leave things behind
    everything = [*capture.logs, *capture.texts]
    hits = [(s, t[:200]) for t in everything for s in SENTINELS if s in t]
    assert hits == []


async def test_success_stream_and_cache_hit_leave_no_secret(store: RedisStore) -> None:
    capture = Capture()
    endpoint = FakeOpenAIEndpoint(["First answer.", "A streamed answer."])
    guard, telemetry, layers = stack(endpoint, store, capture)
    with capture_logs(capture), llmguard.context(user=USER, endpoint="/chat"):
        first = await guard.complete(user=PROMPT)
        again = await guard.complete(user=PROMPT)  # a cache hit, scoped by the pseudonym
        async with guard.stream(user=PROMPT + " (stream)") as events:
            [_ async for _ in events]
    assert first.text == again.text == "First answer." and again.cached
    assert [r.cache for r in capture.records] == ["miss", "hit", "miss"]
    assert capture.records[0].user == Pseudonymize(PSEUDONYM_KEY).pseudonym(USER)
    # the plant did go out (the endpoint's own log redacts the authorization header)
    assert endpoint.requests[0].headers["x-internal-token"] == HEADER
    await finish(capture, guard, telemetry, layers, store)
    assert any("anon-" in key for key in capture.texts)  # budget keys carry the pseudonym
    assert_clean(capture)


async def test_a_401_that_echoes_the_key_leaves_no_secret(store: RedisStore) -> None:
    recording = load("error_401_invalid_api_key.json")
    body = recording["response"]["body"].replace("\\u003cnot-a-r****key\\u003e", ECHOED_KEY)
    assert ECHOED_KEY in body
    exchange = {**recording, "response": {**recording["response"], "body": body}}
    capture = Capture()
    endpoint = FakeOpenAIEndpoint([WireReply.recorded(exchange)])
    guard, telemetry, layers = stack(endpoint, store, capture)
    with capture_logs(capture), llmguard.context(user=USER), pytest.raises(ProviderError) as info:
        await guard.complete(user=PROMPT)
    assert info.value.status_code == 401  # not retried, no fallback: a 401 is not transient
    capture.exception(info.value)
    await finish(capture, guard, telemetry, layers, store)
    assert_clean(capture)


async def test_a_timeout_leaves_no_secret(store: RedisStore) -> None:
    capture = Capture()
    endpoint = FakeOpenAIEndpoint([WireReply.slow_first_byte(3600)])
    guard, telemetry, layers = stack(endpoint, store, capture, timeout=0.2)
    with (
        capture_logs(capture),
        llmguard.context(user=USER),
        pytest.raises(DeadlineExceeded) as info,
    ):
        await guard.complete(user=PROMPT)
    capture.exception(info.value)
    await finish(capture, guard, telemetry, layers, store)
    assert capture.records[0].error == "DeadlineExceeded"
    assert_clean(capture)


async def test_fallbacks_to_the_backup_and_the_canned_answer_leave_no_secret(
    store: RedisStore,
) -> None:
    capture = Capture()
    endpoint = FakeOpenAIEndpoint(default=FakeReply.server_error(503))
    guard, telemetry, layers = stack(endpoint, store, capture)
    backup_down = OpenAIProvider(
        client_for(FakeOpenAIEndpoint(default=FakeReply.server_error(500))), name="backup"
    )
    to_canned = Guard(
        OpenAIProvider(client_for(endpoint)),
        [*layers[:5], Fallback(to=[(backup_down, "gpt-4o"), canned]), layers[6]],
        model="gpt-4o-mini",
    )
    with capture_logs(capture), llmguard.context(user=USER):
        backed_up = await guard.complete(user=PROMPT)
        last_resort = await to_canned.complete(user=PROMPT + " again")
    assert backed_up.text == "The backup answers."
    assert last_resort.text.startswith("Our assistant is busy")
    assert [r.fallback for r in capture.records] == ["backup/gpt-4o-mini", "canned"]
    assert all(r.fallback_reasons for r in capture.records)
    assert sum("WARNING" in line and "fallback=" in line for line in capture.logs) == 2
    await finish(capture, guard, telemetry, layers, store)
    assert_clean(capture)


async def test_a_budget_refusal_leaves_no_secret(store: RedisStore) -> None:
    capture = Capture()
    endpoint = FakeOpenAIEndpoint(default="An answer long enough to spend the budget.")
    guard, telemetry, layers = stack(endpoint, store, capture, tokens=10)
    with capture_logs(capture), llmguard.context(user=USER), pytest.raises(BudgetExceeded) as info:
        for n in range(5):
            await guard.complete(user=f"{PROMPT} #{n}", max_output_tokens=5)
    capture.exception(info.value)
    assert "anon-" in str(info.value)  # the message names the pseudonym
    await finish(capture, guard, telemetry, layers, store)
    assert_clean(capture)

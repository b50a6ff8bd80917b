"""Cassettes: recording real exchanges (here: the fake endpoint standing in for the API)
through ``RecordingTransport``, scrubbed, and replaying them offline."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import openai
import pytest

import llmguard.testing._pytest_plugin as plugin
from llmguard import ConfigurationError, ToolCall
from llmguard.testing import (
    Cassette,
    FakeOpenAIEndpoint,
    FakeReply,
    RecordingTransport,
    UnexpectedRequest,
    WireReply,
)
from llmguard.testing._cassette import scrub_text
from llmguard.testing._openai_body import http_module_for_sdk

OPENAI_MAJOR = int(openai.__version__.split(".")[0])
SENTINEL = "sk-test-SENTINEL-123456"
ORG, PROJECT = "org-abcdefghijkl12345678", "proj_abcdefghijkl12345678"
FIXTURES = Path(
    os.environ.get(
        "LLMGUARD_FIXTURES", Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "openai"
    )
)


# The HTTP library of the installed SDK (httpx2 from openai 3.x on, httpx before).
http_module = http_module_for_sdk


HTTP = http_module()


def recording(
    endpoint: FakeOpenAIEndpoint, path: Path
) -> tuple[openai.AsyncOpenAI, RecordingTransport]:
    """A client whose traffic goes to ``endpoint`` (standing in for the real API) and is
    recorded to ``path``, with the sentinel key, an organization and a project."""
    recorder = RecordingTransport(HTTP.MockTransport(endpoint.handler), path)
    client = openai.AsyncOpenAI(
        api_key=SENTINEL,
        organization=ORG,
        project=PROJECT,
        base_url="https://api.openai.test/v1",
        max_retries=0,
        http_client=HTTP.AsyncClient(transport=recorder),
    )
    return client, recorder


def replaying(endpoint: FakeOpenAIEndpoint) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key="sk-test-replay-000000",
        base_url="https://api.openai.test/v1",
        max_retries=0,
        http_client=HTTP.AsyncClient(transport=HTTP.MockTransport(endpoint.handler)),
    )


async def session(client: openai.AsyncOpenAI) -> list[Any]:
    """One run of "the code under test": every API shape and two errors."""
    results: list[Any] = []
    completion = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": f"my key is {SENTINEL}, keep it secret"}],
    )
    results.append(completion.model_dump())
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    results.append([chunk.model_dump() async for chunk in stream])
    events = await client.responses.create(model="gpt-5.5", input="call a tool", stream=True)
    results.append([event.model_dump() async for event in events])
    embedded = await client.embeddings.create(model="text-embedding-3-small", input="hello")
    results.append(embedded.model_dump())
    for _ in range(2):
        try:
            await client.chat.completions.create(model="gpt-4o-mini", messages=[])
        except openai.APIStatusError as error:
            results.append((type(error).__name__, error.status_code, error.body))
            results.append(dict(error.response.headers).get("retry-after"))
    return results


def script() -> FakeOpenAIEndpoint:
    return FakeOpenAIEndpoint(
        [
            "Hello, secret keeper.",
            "A streamed answer.",
            FakeReply.tool_calls_of(ToolCall(id="call_1", name="lookup", arguments='{"q": 1}')),
            FakeReply.rate_limited(retry_after=3),
            WireReply.api_error(
                401,
                f"Incorrect API key provided: {SENTINEL}. Organization {ORG}.",
                code="invalid_api_key",
                headers={"openai-organization": ORG, "openai-project": PROJECT},
            ),
        ]
    )


pytestmark = pytest.mark.anyio


async def test_record_then_replay_offline(tmp_path: Path) -> None:
    path = tmp_path / "cassettes" / "session.json"
    live = script()
    client, recorder = recording(live, path)
    recorded_results = await session(client)
    assert len(recorder.interactions) == 6 == len(live.requests)
    text = path.read_text()
    # No key, no credential header, no organization or project id, anywhere.
    assert "SENTINEL" not in text
    for gone in ("authorization", "openai-organization", "openai-project", ORG, PROJECT):
        assert gone.lower() not in text.lower(), gone
    assert "sk-REDACTED" in text  # the key echoed in the message and in the 401 body
    document = json.loads(text)
    assert document["llmguard_cassette"] == 1
    first = document["interactions"][0]
    assert first["request"]["method"] == "POST"
    assert first["request"]["url"] == "https://api.openai.test/v1/chat/completions"
    assert (
        first["request"]["body"]["messages"][0]["content"]
        == "my key is sk-REDACTED, keep it secret"
    )
    assert first["response"]["status"] == 200
    streamed = document["interactions"][1]["response"]
    assert streamed["headers"]["content-type"].startswith("text/event-stream")
    assert streamed["body"] == live.responses[1].text  # the raw SSE text
    assert document["interactions"][4]["response"]["headers"]["retry-after"] == "3"

    cassette = Cassette.load(path)
    assert len(cassette) == 6
    replay = cassette.endpoint()
    replayed_results = await session(replaying(replay))
    assert replayed_results[:5] == recorded_results[:5]  # the 401 message was scrubbed
    assert replayed_results[6][:2] == recorded_results[6][:2] == ("AuthenticationError", 401)
    assert SENTINEL not in json.dumps(replayed_results[6])
    for original, again in zip(live.responses[:5], replay.responses[:5], strict=True):
        assert again.body == original.body  # byte for byte
        assert again.status == original.status


async def test_replay_matching_by_request(tmp_path: Path) -> None:
    path = tmp_path / "by_request.json"
    live = FakeOpenAIEndpoint()
    live.when(lambda r: "one" in json.dumps(r.json)).reply("first answer")
    live.when(lambda r: "two" in json.dumps(r.json)).reply("second answer")
    client, _ = recording(live, path)
    for word in ("one", "two"):
        await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": word}]
        )
    replay = replaying(Cassette.load(path).endpoint(match="request"))
    for word, answer in (("two", "second answer"), ("one", "first answer")):
        completion = await replay.chat.completions.create(
            model="m", messages=[{"role": "user", "content": word}]
        )
        assert completion.choices[0].message.content == answer
    with pytest.raises(_escaping(UnexpectedRequest)) as info:  # each exchange answers once
        await replay.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "one"}]
        )
    assert _raised(info.value, UnexpectedRequest)


async def test_replay_in_order_checks_method_and_path(tmp_path: Path) -> None:
    path = tmp_path / "order.json"
    client, _ = recording(FakeOpenAIEndpoint(["chat answer"]), path)
    await client.chat.completions.create(model="m", messages=[])
    replay = replaying(Cassette.load(path).endpoint())
    with pytest.raises(_escaping(UnexpectedRequest)) as info:
        await replay.embeddings.create(model="m", input="x")
    assert _raised(info.value, UnexpectedRequest)
    assert "expected POST /chat/completions next but got POST /embeddings" in str(
        info.value.__cause__ or info.value
    )


def _escaping(kind: type[BaseException]) -> type[BaseException]:
    """openai 2.x turns any exception from the transport into APIConnectionError."""
    return kind if OPENAI_MAJOR >= 3 else openai.APIConnectionError


def _raised(error: BaseException, kind: type[BaseException]) -> bool:
    """openai 2.x wraps the transport's exception in APIConnectionError; 3.x does not."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__
    return False


async def test_a_fixture_file_is_a_cassette_of_one() -> None:
    path = FIXTURES / "chat_completion_basic.json"
    if not path.exists():
        pytest.skip(f"the recorded fixtures are missing: {FIXTURES}")
    cassette = Cassette.load(path)
    assert len(cassette) == 1
    completion = await replaying(cassette.endpoint()).chat.completions.create(
        model="gpt-3.5-turbo", messages=[]
    )
    assert completion.choices[0].message.content == "Mitochondria"


def test_loading_something_else_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    path.write_text('{"hello": 1}')
    with pytest.raises(ConfigurationError, match="not a cassette"):
        Cassette.load(path)
    path.write_text('{"interactions": []}')
    with pytest.raises(ConfigurationError, match="match must be"):
        Cassette.load(path).endpoint(match="sideways")  # type: ignore[arg-type]


async def test_recording_drops_transfer_headers_and_keeps_binary_bodies(tmp_path: Path) -> None:
    path = tmp_path / "raw.json"
    live = FakeOpenAIEndpoint(
        [
            WireReply.raw(
                200,
                headers={
                    "content-type": "application/octet-stream",
                    "content-length": "3",
                    "set-cookie": "__cf_bm=abc",
                    "x-request-id": "req_1",
                },
                body=b"\xff\x00\x01",
            )
        ]
    )
    recorder = RecordingTransport(HTTP.MockTransport(live.handler), path)
    async with HTTP.AsyncClient(transport=recorder) as client:
        response = await client.get("https://api.openai.test/v1/files/file-1/content")
        assert response.content == b"\xff\x00\x01"
    saved = json.loads(path.read_text())["interactions"][0]
    assert saved["response"]["headers"] == {
        "content-type": "application/octet-stream",
        "x-request-id": "req_1",
    }
    assert saved["response"]["body"] is None
    assert saved["response"]["body_base64"] == "/wAB"
    assert saved["request"]["body"] is None
    assert "RecordingTransport" in repr(recorder)
    replay = Cassette.load(path).endpoint()
    async with HTTP.AsyncClient(transport=replay.mock_transport()) as client:
        again = await client.get("https://api.openai.test/v1/files/file-1/content")
    assert again.content == b"\xff\x00\x01"


def test_scrub_text() -> None:
    text = (
        f"key {SENTINEL} proj sk-proj-AbC_123-xyz masked sk-abc****wxyz org {ORG} {PROJECT} "
        "user user-abcdefghijklmnopqrst Bearer abc.def-ghi_jkl https://x/?api-key=zzz&x=1"
    )
    clean = scrub_text(text, secrets=("my-own-secret",)) + scrub_text(
        "my-own-secret", ("my-own-secret",)
    )
    for secret in (
        SENTINEL,
        "AbC_123",
        "wxyz",
        ORG,
        PROJECT,
        "user-abcdefghij",
        "abc.def",
        "zzz",
        "my-own",
    ):
        assert secret not in clean, secret
    assert "x=1" in clean and "sk-REDACTED" in clean


# The openai_cassette fixture, as a user meets it ------------------------------------------

USER_TEST = """
import pytest


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.openai_cassette("hello")
async def test_hello(openai_cassette):
    completion = await openai_cassette.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}]
    )
    assert completion.choices[0].message.content == "Hello from the cassette"
"""

INI = """
[pytest]
addopts = --strict-markers --strict-config -p no:cacheprovider -p no:hypothesispytest -p no:asyncio
filterwarnings = error
"""


def _without_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def test_the_fixture_records_with_a_key_then_replays_without(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_user=USER_TEST)
    # Standing in for the real API: the recording client of the fixture, on the fake endpoint.
    live = FakeOpenAIEndpoint(["Hello from the cassette"])

    def fake_network(path: Path, *, api_key: str, base_url: str | None = None) -> Any:
        assert api_key == SENTINEL
        recorder = RecordingTransport(HTTP.MockTransport(live.handler), path)
        http_client = HTTP.AsyncClient(transport=recorder)
        client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url="https://api.openai.test/v1",
            max_retries=0,
            http_client=http_client,
        )
        return client, http_client

    monkeypatch.setattr(plugin, "recording_client", fake_network)
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    pytester.runpytest_inprocess().assert_outcomes(passed=1)
    cassette = pytester.path / "cassettes" / "hello.json"
    assert cassette.exists()
    assert "SENTINEL" not in cassette.read_text()
    assert len(live.requests) == 1

    _without_key(monkeypatch)
    monkeypatch.setattr(plugin, "recording_client", None)  # replaying must not record
    pytester.runpytest_inprocess().assert_outcomes(passed=1)
    assert len(live.requests) == 1


def test_a_missing_cassette_without_a_key_fails_saying_how_to_record(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _without_key(monkeypatch)
    pytester.makeini(INI)
    pytester.makepyfile(test_user=USER_TEST)
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*the OpenAI cassette */cassettes/hello.json is missing. Record it once against the "
            "real API: set OPENAI_API_KEY and run this test again "
            "(OPENAI_API_KEY=sk-... pytest 'test_user.py::test_hello')*",
        ]
    )


def test_the_marker_is_registered_and_the_default_name_is_the_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _without_key(monkeypatch)
    pytester.makeini(INI)
    (pytester.path / "cassettes").mkdir()
    cassette_file = pytester.path / "cassettes" / "test_default.json"
    exchange = {
        "request": {
            "method": "POST",
            "url": "https://api.openai.com/v1/chat/completions",
            "headers": {},
            "body": {},
        },
        "response": {
            "status": 200,
            "headers": {"content-type": "application/json"},
            "body": json.dumps(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 1,
                    "model": "m",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "default"},
                            "finish_reason": "stop",
                        }
                    ],
                }
            ),
        },
    }
    cassette_file.write_text(json.dumps({"llmguard_cassette": 1, "interactions": [exchange]}))
    pytester.makepyfile(
        test_user=textwrap.dedent(
            """
            import pytest

            @pytest.fixture(params=["asyncio", "trio"])
            def anyio_backend(request):
                return request.param

            @pytest.mark.anyio
            async def test_default(openai_cassette):
                reply = await openai_cassette.chat.completions.create(model="m", messages=[])
                assert reply.choices[0].message.content == "default"
            """
        )
    )
    pytester.runpytest_inprocess().assert_outcomes(passed=2)
    result = pytester.runpytest_inprocess("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.openai_cassette(name=None, *, match='order')*"])


def test_the_recording_client_goes_to_the_network_through_a_recorder(tmp_path: Path) -> None:
    from llmguard.testing._cassette import close_now, recording_client

    client, http_client = recording_client(tmp_path / "live.json", api_key="sk-test-not-used-000")
    assert isinstance(client, openai.AsyncOpenAI)
    assert client.max_retries == 0
    transport = http_client._transport
    assert isinstance(transport, RecordingTransport)
    assert isinstance(transport.inner, HTTP.AsyncHTTPTransport)
    assert not close_now(http_client.aclose())  # a pool needs a loop to close: abandoned
    assert not (tmp_path / "live.json").exists()


def test_close_now_gives_up_on_a_close_that_has_to_wait() -> None:
    import anyio

    from llmguard.testing._cassette import close_now

    async def waits() -> None:
        await anyio.sleep(1)

    class Pause:
        def __await__(self) -> Any:
            yield None  # what a real wait looks like to the coroutine's driver

    async def yields() -> None:
        await Pause()

    assert close_now(waits()) is False  # needs a loop
    assert close_now(yields()) is False  # had to wait


def test_cassette_basics(tmp_path: Path) -> None:
    cassette = Cassette([], path=tmp_path / "x.json")
    assert len(cassette) == 0
    assert repr(cassette).endswith("interactions=0)")


async def test_a_cassette_replays_under_another_base_url(tmp_path: Path) -> None:
    path = tmp_path / "gateway.json"
    live = FakeOpenAIEndpoint(["through a gateway"])
    recorder = RecordingTransport(HTTP.MockTransport(live.handler), path)
    gateway = openai.AsyncOpenAI(
        api_key=SENTINEL,
        base_url="https://gateway.example.test/openai/v1",
        max_retries=0,
        http_client=HTTP.AsyncClient(transport=recorder),
    )
    await gateway.chat.completions.create(model="m", messages=[])
    for match in ("order", "request"):
        replay = replaying(Cassette.load(path).endpoint(match=match))  # type: ignore[arg-type]
        reply = await replay.chat.completions.create(model="m", messages=[])
        assert reply.choices[0].message.content == "through a gateway"


def test_a_misused_marker_says_how_to_use_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _without_key(monkeypatch)
    pytester.makeini(INI)
    pytester.makepyfile(
        test_user="""
        import pytest

        @pytest.mark.openai_cassette("hello", match="sideways")
        def test_misused(openai_cassette):
            pass
        """
    )
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*usage: @pytest.mark.openai_cassette(name=None, *, match=*"])

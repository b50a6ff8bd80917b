"""The lean wire client: what it sends (body, headers, URL, timeout, cookies) against
what the SDK sends, how it is built (from a client, or without openai), what it
refuses, and that it closes what it opens."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from datetime import UTC, datetime
from typing import Any

import anyio
import openai
import pydantic
import pytest
from trio.testing import MockClock

import llmguard
from llmguard import (
    ConfigurationError,
    Deadlines,
    Guard,
    Message,
    OpenAIProvider,
    Request,
    StreamTimeout,
    StreamTimeouts,
    ToolCall,
    ToolSpec,
)
from llmguard.testing import FakeOpenAIEndpoint, FakeReply, WireReply

from ._parity import WIRES, complete_outcome, stream_outcome
from .conftest import http_module

pytestmark = pytest.mark.anyio

KEY = "sk-test-PLANTED-lean-0123456789"
COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
    ],
}
STREAM = (
    'data: {"id":"c","choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":"stop"}]}\n\n'
    "data: [DONE]\n\n"
)


class Capture:
    """A transport handler that records every request and answers a fixed body."""

    def __init__(self, *, set_cookie: bool = False) -> None:
        self.requests: list[Any] = []
        self.set_cookie = set_cookie

    def __call__(self, request: Any) -> Any:
        self.requests.append(request)
        http = http_module()
        headers = {"content-type": "application/json"}
        if self.set_cookie:
            headers["set-cookie"] = "__cf_bm=abc; Path=/"
        if b'"stream":true' in request.content:
            headers["content-type"] = "text/event-stream"
            return http.Response(200, headers=headers, content=STREAM.encode())
        return http.Response(200, headers=headers, content=json.dumps(COMPLETION).encode())

    def transport(self) -> Any:
        return http_module().MockTransport(self)


def sdk_client(capture: Capture, **kw: Any) -> openai.AsyncOpenAI:
    http = http_module()
    kw.setdefault("api_key", KEY)
    kw.setdefault("max_retries", 0)
    return openai.AsyncOpenAI(http_client=http.AsyncClient(transport=capture.transport()), **kw)


async def sent_by_both(request: Request, stream: bool = False, **client_kw: Any) -> list[Any]:
    """The HTTP request each wire sends for ``request`` (SDK first, then lean)."""
    sent = []
    for wire in WIRES:
        capture = Capture()
        provider = OpenAIProvider(sdk_client(capture, **client_kw), wire=wire)
        if stream:
            async with provider.stream(request) as events:
                [_ async for _ in events]
        else:
            await provider.complete(request)
        (sent_request,) = capture.requests
        sent.append(sent_request)
    return sent


def compact(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


class Meta(pydantic.BaseModel):
    source: str
    score: float | None = None


REQUESTS = {
    "minimal": Request.create(model="gpt-4o-mini", user="hi"),
    "everything": Request.create(
        model="gpt-4o-mini",
        system="Answer in French. «Guillemets», ü, 日本語, emoji 🚀.",
        user='quotes " and \\ backslashes and \u2028 separators',
        messages=[
            Message.assistant(tool_calls=[ToolCall(id="c1", name="f", arguments='{"a": 1}')]),
            Message.tool("42", tool_call_id="c1"),
            Message(role="user", content="named", name="ada"),
            Message(role="developer", content=None),
        ],
        tools=[
            ToolSpec(name="f", description="F.", parameters={"type": "object"}, strict=True),
            ToolSpec(name="g", parameters={"type": "object", "properties": {}}),
        ],
        tool_choice={"type": "function", "function": {"name": "f"}},
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True},
        },
        temperature=0.1,
        top_p=1e-7,
        max_output_tokens=50,
        stop=["\n\n", "END"],
        seed=2**40,
        extras={"reasoning_effort": "low", "metadata": {"k": "v"}, "logit_bias": {"50256": -100}},
    ),
    "extras-override-arguments": Request.create(
        model="gpt-4o-mini", user="hi", extras={"model": "other", "messages": []}
    ),
    "extras-datetime-and-pydantic": Request.create(
        model="gpt-4o-mini",
        user="hi",
        extras={
            "when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            "meta": Meta(source="x"),
            "nested": [{"m": Meta(source="y", score=0.5)}],
        },
    ),
}


@pytest.mark.parametrize("name", list(REQUESTS))
@pytest.mark.parametrize("stream", [False, True])
async def test_the_body_is_the_sdks_body(name: str, stream: bool) -> None:
    sdk, lean = await sent_by_both(REQUESTS[name], stream=stream)
    assert json.loads(lean.content) == json.loads(sdk.content)
    # Both are compact UTF-8 JSON (no ASCII escapes): the same bytes up to key order.
    assert lean.content == compact(json.loads(lean.content))
    assert sdk.content == compact(json.loads(sdk.content))
    canonical = [
        json.dumps(json.loads(r.content), sort_keys=True, ensure_ascii=False) for r in (sdk, lean)
    ]
    assert canonical[0] == canonical[1]
    assert lean.headers["content-length"] == str(len(lean.content))
    if name == "everything":
        assert "日本語".encode() in lean.content


@pytest.mark.parametrize(
    "extras",
    [{"x": math.nan}, {"x": object()}, {"x": {1, 2}}],
    ids=["nan", "object", "set"],
)
async def test_a_body_that_cannot_be_encoded_fails_the_same_way(extras: dict[str, Any]) -> None:
    request = Request.create(model="m", user="hi", extras=extras)
    outcomes = []
    for wire in WIRES:
        capture = Capture()
        provider = OpenAIProvider(sdk_client(capture), wire=wire)
        outcome = await complete_outcome(provider, request)
        outcomes.append((outcome.error, len(capture.requests)))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] is not None and outcomes[0][1] == 0
    assert str(type(extras["x"]).__name__) in outcomes[0][0][1] or "float" in outcomes[0][0][1]


def _comparable_headers(request: Any) -> dict[str, str]:
    return {
        name.lower(): value
        for name, value in request.headers.items()
        if not name.lower().startswith("x-stainless") and name.lower() != "user-agent"
    }


@pytest.mark.parametrize(
    "client_kw",
    [
        {},
        {"organization": "org-1", "project": "proj-1"},
        {"default_headers": {"X-Team": "search", "Accept": "application/json, */*"}},
        {"default_headers": {"OpenAI-Organization": "org-from-header"}, "organization": "org-2"},
        {"base_url": "http://localhost:11434/v1"},
        {"base_url": "https://gateway.test/openai/v1/"},
        {"default_query": {"api-version": "2024-10-21"}},
    ],
    ids=["plain", "org-project", "default-headers", "header-wins", "ollama", "slash", "query"],
)
async def test_headers_url_and_timeout_are_the_sdks(client_kw: dict[str, Any]) -> None:
    sdk, lean = await sent_by_both(REQUESTS["minimal"], **client_kw)
    assert _comparable_headers(lean) == _comparable_headers(sdk)
    assert lean.headers["authorization"] == f"Bearer {KEY}"
    assert lean.headers["user-agent"] == f"llmguard/{llmguard.__version__}"
    assert not any(name.lower().startswith("x-stainless") for name in lean.headers)
    assert str(lean.url) == str(sdk.url)
    assert lean.method == sdk.method == "POST"
    assert lean.extensions["timeout"] == sdk.extensions["timeout"]


@pytest.mark.parametrize("seconds", [None, 12.5, "object"])
async def test_the_clients_timeout(seconds: Any) -> None:
    if seconds == "object":
        seconds = http_module().Timeout(7.0, connect=2.0)
    sdk, lean = await sent_by_both(REQUESTS["minimal"], timeout=seconds)
    assert lean.extensions["timeout"] == sdk.extensions["timeout"]


async def test_a_user_agent_in_default_headers_wins() -> None:
    sdk, lean = await sent_by_both(REQUESTS["minimal"], default_headers={"User-Agent": "mine/1"})
    assert lean.headers["user-agent"] == sdk.headers["user-agent"] == "mine/1"


async def test_cookies_set_by_the_server_are_sent_back_on_both_wires() -> None:
    for wire in WIRES:
        capture = Capture(set_cookie=True)
        provider = OpenAIProvider(sdk_client(capture), wire=wire)
        await provider.complete(REQUESTS["minimal"])
        await provider.complete(REQUESTS["minimal"])
        assert "cookie" not in capture.requests[0].headers
        assert capture.requests[1].headers["cookie"] == "__cf_bm=abc", wire


# Without an SDK client --------------------------------------------------------------


def standalone(wire: str, capture: Capture, **kw: Any) -> OpenAIProvider:
    http = http_module()
    return OpenAIProvider(
        wire=wire,  # type: ignore[arg-type]
        api_key=KEY,
        base_url="https://api.openai.test/v1",
        organization="org-9",
        project="proj-9",
        default_headers={"X-Team": "t"},
        http_client=http.AsyncClient(transport=capture.transport()),
        **kw,
    )


@pytest.mark.parametrize("seconds", [None, 9.0])
async def test_built_by_llmguard_the_lean_wire_sends_what_the_sdk_sends(
    seconds: float | None,
) -> None:
    sent = []
    for wire in WIRES:
        capture = Capture()
        provider = standalone(wire, capture, timeout=seconds)
        response = await provider.complete(REQUESTS["everything"])
        assert response.text == "ok"
        sent.append(capture.requests[0])
    sdk, lean = sent
    assert _comparable_headers(lean) == _comparable_headers(sdk)
    assert str(lean.url) == str(sdk.url) == "https://api.openai.test/v1/chat/completions"
    assert json.loads(lean.content) == json.loads(sdk.content)
    assert lean.extensions["timeout"] == sdk.extensions["timeout"]


async def test_the_environment_is_read_as_the_sdk_reads_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", "https://env.test/v2")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-env")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-env")
    sent = []
    for wire in WIRES:
        capture = Capture()
        http = http_module()
        provider = OpenAIProvider(
            wire=wire,  # type: ignore[arg-type]
            http_client=http.AsyncClient(transport=capture.transport()),
        )
        await provider.complete(REQUESTS["minimal"])
        sent.append(capture.requests[0])
    assert _comparable_headers(sent[1]) == _comparable_headers(sent[0])
    assert str(sent[1].url) == str(sent[0].url) == "https://env.test/v2/chat/completions"
    assert sent[1].headers["openai-organization"] == "org-env"


def test_without_a_key_the_lean_wire_refuses_at_construction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        OpenAIProvider(wire="lean")


def test_the_lean_wire_never_imports_openai() -> None:
    code = (
        "import sys, json, llmguard\n"
        "p = llmguard.OpenAIProvider(api_key='sk-x', wire='lean')\n"
        "heavy = ('openai', 'pydantic', 'httpx2', 'httpx')\n"
        "print(json.dumps([sorted(m for m in heavy if m in sys.modules), p.wire, repr(p)]))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    loaded, wire, text = json.loads(out.stdout)
    assert loaded == []  # the HTTP library loads on the first request
    assert wire == "lean"
    assert "sk-x" not in text
    assert "https://api.openai.com/v1/" in text


async def test_embeddings_and_the_client_come_from_the_sdk_built_on_first_use() -> None:
    endpoint = FakeOpenAIEndpoint(embedding_dimensions=4)
    http = http_module()
    provider = OpenAIProvider(
        wire="lean",
        api_key=KEY,
        base_url="https://api.openai.test/v1",
        http_client=http.AsyncClient(transport=endpoint.mock_transport()),
    )
    assert provider._client is None
    result = await provider.embed(["a", "b"])
    assert [len(v) for v in result.vectors] == [4, 4]
    assert isinstance(provider.client, openai.AsyncOpenAI)
    assert provider.client.max_retries == 0
    assert provider.client.api_key == KEY
    assert endpoint.requests[0].path == "/v1/embeddings"


# What the lean wire refuses -----------------------------------------------------------


def test_misuse_is_a_configuration_error() -> None:
    client = sdk_client(Capture())
    with pytest.raises(ConfigurationError, match="Chat Completions only"):
        OpenAIProvider(client, wire="lean", api="responses")
    with pytest.raises(ConfigurationError, match="wire must be"):
        OpenAIProvider(client, wire="fast")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not both"):
        OpenAIProvider(client, wire="lean", organization="org")
    with pytest.raises(ConfigurationError, match="http_client must be"):
        OpenAIProvider(wire="lean", api_key=KEY, http_client=object())
    azure = openai.AsyncAzureOpenAI(
        api_key="k", api_version="2024-10-21", azure_endpoint="https://x.openai.azure.com"
    )
    with pytest.raises(ConfigurationError, match="Azure"):
        OpenAIProvider(azure, wire="lean")
    with pytest.raises(ConfigurationError, match="AsyncOpenAI"):
        OpenAIProvider(openai.OpenAI(api_key="k"), wire="lean")  # type: ignore[arg-type]
    strict = openai.AsyncOpenAI(api_key="k", _strict_response_validation=True)
    with pytest.raises(ConfigurationError, match="validate"):
        OpenAIProvider(strict, wire="lean")
    keyed = openai.AsyncOpenAI(api_key="k")
    keyed._api_key_provider = lambda: "k"  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match="static API key"):
        OpenAIProvider(keyed, wire="lean")
    query = openai.AsyncOpenAI(api_key="k", default_query={"n": 1})
    with pytest.raises(ConfigurationError, match="default_query"):
        OpenAIProvider(query, wire="lean")


def test_a_retrying_client_multiplies_nothing_on_the_lean_wire() -> None:
    client = openai.AsyncOpenAI(api_key="k", max_retries=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        provider = OpenAIProvider(client, wire="lean")
    assert provider.wire == "lean"
    assert provider.client is client


# Closing what is opened ---------------------------------------------------------------


async def test_leaving_early_closes_the_http_response() -> None:
    endpoint = FakeOpenAIEndpoint([FakeReply.of_text("word " * 200)])
    guard = Guard(OpenAIProvider(endpoint.async_client(), wire="lean"), model="m")
    async with guard.stream(user="hi") as events:
        async for _ in events:
            break
    (served,) = endpoint.responses
    assert served.closed_early


async def test_cancelling_the_consumer_closes_the_http_response() -> None:
    endpoint = FakeOpenAIEndpoint([FakeReply.of_text("word " * 200)])
    guard = Guard(OpenAIProvider(endpoint.async_client(), wire="lean"), model="m")
    with anyio.CancelScope() as scope:
        async with guard.stream(user="hi") as events:
            async for _ in events:
                scope.cancel()
                await anyio.lowlevel.checkpoint()
    (served,) = endpoint.responses
    assert served.closed_early


async def test_an_error_status_on_a_stream_closes_the_response() -> None:
    endpoint = FakeOpenAIEndpoint([FakeReply.server_error(503)])
    guard = Guard(OpenAIProvider(endpoint.async_client(), wire="lean"), model="m")
    with pytest.raises(llmguard.ProviderError) as info:
        async with guard.stream(user="hi") as events:
            [_ async for _ in events]
    assert info.value.status_code == 503
    assert endpoint.responses[0].closed


async def test_a_whole_stream_is_read_to_its_end_for_connection_reuse() -> None:
    # After [DONE] the rest of the body is read (openai 3.x does the same on HTTP/1.1).
    body = STREAM + "data: trailing\n\n"
    endpoint = FakeOpenAIEndpoint(
        [WireReply.raw(200, headers={"content-type": "text/event-stream"}, body=body)]
    )
    provider = OpenAIProvider(endpoint.async_client(), wire="lean")
    async with provider.stream(REQUESTS["minimal"]) as events:
        assert [type(e).__name__ async for e in events] == ["TextDelta", "Finish"]
    (served,) = endpoint.responses
    assert served.completed and served.closed


@pytest.mark.parametrize("anyio_backend", [("trio", {"clock": MockClock(autojump_threshold=0)})])
async def test_a_slow_first_byte_trips_the_first_token_deadline_on_both_wires() -> None:
    outcomes = []
    for wire in WIRES:
        endpoint = FakeOpenAIEndpoint([WireReply.slow_first_byte(30, "late")])
        provider = OpenAIProvider(endpoint.async_client(), wire=wire)
        deadlines = Deadlines(StreamTimeouts(first_token=5, idle=10, total=60))
        outcome = await stream_outcome(provider, layers=[deadlines])
        outcomes.append((outcome.error, outcome.events, endpoint.responses[0].closed))
    assert outcomes[0] == outcomes[1]
    error, events, closed = outcomes[1]
    assert error is not None and error[0] == StreamTimeout.__name__
    assert events == [] and closed


async def test_the_key_never_leaks_from_the_lean_wire() -> None:
    echoed = json.dumps({"error": {"message": f"Incorrect API key provided: {KEY}. Bearer {KEY}"}})
    endpoint = FakeOpenAIEndpoint(
        [WireReply.raw(401, headers={"content-type": "application/json"}, body=echoed)]
    )
    provider = OpenAIProvider(endpoint.async_client(api_key=KEY), wire="lean")
    with pytest.raises(llmguard.ProviderError) as info:
        await provider.complete(REQUESTS["minimal"])
    for text in (str(info.value), repr(info.value), str(info.value.__cause__), repr(provider)):
        assert KEY not in text
        assert "PLANTED" not in text
    assert "[redacted]" in str(info.value)


async def test_a_transport_error_keeps_its_cause_scrubbed() -> None:
    http = http_module()

    def handler(request: Any) -> Any:
        raise http.ConnectError(f"refused (key {KEY})", request=request)

    client = openai.AsyncOpenAI(
        api_key=KEY,
        max_retries=0,
        http_client=http.AsyncClient(transport=http.MockTransport(handler)),
    )
    with pytest.raises(llmguard.ProviderConnectionError) as info:
        await OpenAIProvider(client, wire="lean").complete(REQUESTS["minimal"])
    assert str(info.value) == "could not reach the provider: ConnectError"
    assert isinstance(info.value.__cause__, http.ConnectError)
    assert KEY not in str(info.value.__cause__)


# Failures in odd places -------------------------------------------------------------


def failing_body(chunks: list[bytes], error: str) -> Any:
    """A response body that sends ``chunks`` and then fails with the HTTP library's
    ``error`` (``"RemoteProtocolError"``, ``"ReadTimeout"``)."""
    http = http_module()

    class Body(http.AsyncByteStream):  # type: ignore[misc, name-defined]
        async def __aiter__(self) -> Any:
            for chunk in chunks:
                yield chunk
            raise getattr(http, error)("the body broke")

    return Body()


def client_answering(handler: Any) -> openai.AsyncOpenAI:
    http = http_module()
    return openai.AsyncOpenAI(
        api_key=KEY,
        max_retries=0,
        http_client=http.AsyncClient(transport=http.MockTransport(handler)),
    )


@pytest.mark.parametrize("error", ["RemoteProtocolError", "ReadTimeout"])
async def test_an_error_body_that_breaks_while_read(error: str) -> None:
    outcomes = []
    for wire in WIRES:

        def handler(request: Any) -> Any:
            body = failing_body([b'{"error": {"mess'], error)
            return http_module().Response(
                500, headers={"content-type": "application/json"}, stream=body
            )

        provider = OpenAIProvider(client_answering(handler), wire=wire)
        outcomes.append((await stream_outcome(provider)).error)
    assert outcomes[0] == outcomes[1]
    assert outcomes[1] is not None
    assert outcomes[1][0] in ("ProviderConnectionError", "ProviderTimeout")


async def test_a_failure_after_done_is_no_failure() -> None:
    outcomes = []
    for wire in WIRES:

        def handler(request: Any) -> Any:
            body = failing_body([STREAM.encode()], "RemoteProtocolError")
            return http_module().Response(
                200, headers={"content-type": "text/event-stream"}, stream=body
            )

        provider = OpenAIProvider(client_answering(handler), wire=wire)
        outcome = await stream_outcome(provider)
        outcomes.append((outcome.error, outcome.events))
    assert outcomes[0] == outcomes[1]
    assert outcomes[1][0] is None


async def test_an_exception_from_the_transport_itself() -> None:
    def handler(request: Any) -> Any:
        raise RuntimeError(f"a bug in a custom transport ({KEY})")

    outcome = await complete_outcome(OpenAIProvider(client_answering(handler), wire="lean"))
    assert outcome.error is not None
    assert outcome.error[:2] == (
        "ProviderError",
        "RuntimeError: a bug in a custom transport ([redacted])",
    )
    if int(openai.__version__.split(".")[0]) >= 3:  # openai 2.x calls it a connection error
        sdk = await complete_outcome(OpenAIProvider(client_answering(handler)))
        assert sdk.error == outcome.error


async def test_a_script_error_of_the_fake_endpoint_passes_through() -> None:
    endpoint = FakeOpenAIEndpoint()  # nothing scripted
    provider = OpenAIProvider(endpoint.async_client(), wire="lean")
    with pytest.raises(llmguard.testing.FakeScriptExhausted):
        await provider.complete(REQUESTS["minimal"])
    with pytest.raises(llmguard.testing.FakeScriptExhausted):
        async with provider.stream(REQUESTS["minimal"]):
            pass


async def test_a_body_that_cannot_be_encoded_fails_a_stream_too() -> None:
    request = Request.create(model="m", user="hi", extras={"x": math.inf})
    errors = []
    for wire in WIRES:
        errors.append(
            (await stream_outcome(OpenAIProvider(sdk_client(Capture()), wire=wire), request)).error
        )
    assert errors[0] == errors[1]
    assert errors[1] is not None and errors[1][0] == "MalformedResponse"


async def test_omitted_default_headers_are_removed_on_both_wires() -> None:
    sdk, lean = await sent_by_both(
        REQUESTS["minimal"],
        organization="org-1",
        default_headers={"OpenAI-Organization": openai.Omit(), "X-Keep": "1"},  # type: ignore[dict-item]
    )
    assert "openai-organization" not in lean.headers
    assert _comparable_headers(lean) == _comparable_headers(sdk)


@pytest.mark.parametrize("url", ["localhost:8000/v1", "ftp://x.test/v1", "https://"])
def test_a_base_url_that_is_not_http_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="base_url"):
        OpenAIProvider(api_key=KEY, base_url=url, wire="lean")


def test_a_client_without_a_key_is_refused() -> None:
    client = openai.AsyncOpenAI(api_key="k")
    client.api_key = ""
    with pytest.raises(ConfigurationError, match="API key"):
        OpenAIProvider(client, wire="lean")


@pytest.mark.skipif(
    int(openai.__version__.split(".")[0]) < 3, reason="openai 3.x on a legacy httpx client"
)
@pytest.mark.parametrize("seconds", [None, 8.0], ids=["sdk-default", "given"])
async def test_openai_3_on_a_legacy_httpx_client(seconds: float | None) -> None:
    import httpx

    sent: list[Any] = []
    options: dict[str, Any] = {} if seconds is None else {"timeout": httpx.Timeout(seconds)}

    def record(request: Any) -> Any:
        sent.append(request)
        return httpx.Response(200, json=COMPLETION)

    for wire in WIRES:
        client = openai.AsyncOpenAI(
            api_key=KEY,
            max_retries=0,
            http_client=httpx.AsyncClient(transport=httpx.MockTransport(record)),
            **options,
        )
        response = await OpenAIProvider(client, wire=wire).complete(REQUESTS["minimal"])
        assert response.text == "ok"
    sdk, lean = sent
    assert lean.extensions["timeout"] == sdk.extensions["timeout"]
    assert json.loads(lean.content) == json.loads(sdk.content)


async def test_built_by_llmguard_the_http_client_is_built_as_the_sdk_builds_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import httpx2

    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # httpx2, not llmguard's own
    provider = OpenAIProvider(api_key=KEY, wire="lean", timeout=12.0)
    assert provider._lean is not None
    client = provider._lean.http_client
    sdk = OpenAIProvider(api_key=KEY, timeout=12.0).client._client
    assert type(client) is httpx2.AsyncClient
    assert client.timeout == httpx2.Timeout(12.0)
    assert client.follow_redirects is sdk.follow_redirects is True
    assert client._transport._pool._max_connections == 1000  # the SDK's limits
    assert client._transport._pool._max_keepalive_connections == 100
    await client.aclose()


async def test_without_httpx2_the_lean_wire_builds_an_httpx_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import httpx

    monkeypatch.setitem(sys.modules, "httpx2", None)
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # httpx, not llmguard's own
    provider = OpenAIProvider(api_key=KEY, wire="lean", base_url="http://127.0.0.1:9/v1")
    assert provider._lean is not None
    client = provider._lean.http_client
    assert type(client) is httpx.AsyncClient
    assert client.timeout == httpx.Timeout(60.0)
    assert provider._lean.http_client is client  # built once
    await client.aclose()


async def test_the_sdk_client_built_later_takes_the_key_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    provider = OpenAIProvider(wire="lean", base_url="http://127.0.0.1:9/v1")
    assert provider.client.api_key == KEY
    assert str(provider.client.base_url) == "http://127.0.0.1:9/v1/"


async def test_the_sdk_path_validates_for_a_strict_client_and_the_lean_wire_refuses_it() -> None:
    def handler(request: Any) -> Any:
        return http_module().Response(200, json={"choices": "not a list"})

    strict = client_answering(handler).with_options()
    strict._strict_response_validation = True
    with pytest.raises(llmguard.MalformedResponse, match="did not match the expected shape"):
        await OpenAIProvider(strict).complete(REQUESTS["minimal"])
    with pytest.raises(ConfigurationError):
        OpenAIProvider(strict, wire="lean")


def test_the_shared_error_mapping() -> None:
    import ssl

    from llmguard._providers._openai_errors import map_openai_error, status_error, transport_kind

    def unread() -> str:
        raise RuntimeError("the body was never read")

    error = status_error(500, {}, None, unread, provider="p")
    assert (str(error), error.retryable) == ("HTTP 500: Error code: 500", True)
    error = status_error(400, {}, {"error": "nested text"}, unread, provider="p")
    assert str(error) == "HTTP 400: nested text"
    assert transport_kind(ssl.SSLError("bad handshake")) == "connection"
    assert transport_kind(anyio.EndOfStream()) == "connection"
    assert transport_kind(ValueError()) is None
    mapped = map_openai_error(openai.OpenAIError("odd"), provider="p")
    assert (type(mapped).__name__, str(mapped)) == ("ProviderError", "OpenAIError: odd")


@pytest.mark.parametrize("anyio_backend", [("trio", {"clock": MockClock(autojump_threshold=0)})])
async def test_a_body_that_goes_on_after_done_is_read_for_at_most_a_tenth_of_a_second() -> None:
    http = http_module()
    closed: list[bool] = []

    class Endless(http.AsyncByteStream):  # type: ignore[misc, name-defined]
        async def __aiter__(self) -> Any:
            yield STREAM.encode()
            while True:
                await anyio.sleep(0.03)
                yield b": still here\n\n"

        async def aclose(self) -> None:
            closed.append(True)

    def handler(request: Any) -> Any:
        return http.Response(200, headers={"content-type": "text/event-stream"}, stream=Endless())

    provider = OpenAIProvider(client_answering(handler), wire="lean")
    start = anyio.current_time()
    async with provider.stream(REQUESTS["minimal"]) as events:
        kinds = [type(e).__name__ async for e in events]
    assert kinds == ["TextDelta", "Finish"]
    assert 0.1 <= anyio.current_time() - start < 0.2
    assert closed == [True]

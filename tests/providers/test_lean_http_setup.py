"""llmguard's own HTTP/1.1 client against a loopback server: redirects as httpx follows
them, TLS with the CAs the environment names, the proxy fallback to httpx2, the
defaults it shares with the SDK, and what a first request loads."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from llmguard import OpenAIProvider, ProviderConnectionError, ProviderError
from llmguard._providers._lean_errors import ReadTimeout, TooManyRedirects, UnsupportedProtocol
from llmguard._providers._lean_http import SDK_TIMEOUTS, LeanClient, Timeouts
from llmguard._providers._lean_response import Headers
from llmguard._providers._openai_errors import transport_kind

from ._lean_helpers import (
    JSON,
    KEY,
    REQUEST,
    answer_json,
    by_kind,
    own_client,
    provider_for,
    read_stream,
    running,
)
from ._loopback import Exchange, serve

pytestmark = pytest.mark.anyio


# Redirects -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "method", "body_kept"),
    [
        (301, "GET", False),
        (302, "GET", False),
        (303, "GET", False),
        (307, "POST", True),
        (308, "POST", True),
    ],
)
async def test_redirects_are_followed_as_httpx_follows_them(
    status: int, method: str, body_kept: bool
) -> None:
    async def app(exchange: Exchange) -> None:
        if exchange.request.target == "/v1/chat/completions":
            await exchange.respond(status, [("location", "/moved?x=1")], b"moved")
        else:
            await answer_json(exchange)

    async with running(app) as (server, provider):
        assert (await provider.complete(REQUEST)).text == "ok"
        first, second = server.requests
        assert (second.method, second.target) == (method, "/moved?x=1")
        assert (second.body == first.body) is body_kept
        assert ("content-length" in second.headers) is body_kept
        assert second.headers["authorization"] == f"Bearer {KEY}"  # same origin
        assert server.connections == 1


async def test_a_redirect_to_another_origin_drops_the_key() -> None:
    async with serve(answer_json) as other:

        async def app(exchange: Exchange) -> None:
            await exchange.respond(307, [("location", f"{other.url}/elsewhere")])

        async with running(app) as (_, provider):
            assert (await provider.complete(REQUEST)).text == "ok"
    (sent,) = other.requests
    assert sent.target == "/elsewhere" and sent.method == "POST"
    assert "authorization" not in sent.headers
    assert sent.headers["host"] == f"127.0.0.1:{other.port}"


async def test_redirect_loops_and_bad_targets_are_connection_errors() -> None:
    async def loop(exchange: Exchange) -> None:
        await exchange.respond(302, [("location", "/again")])

    async with running(loop) as (server, provider):
        with pytest.raises(ProviderConnectionError, match="TooManyRedirects"):
            await provider.complete(REQUEST)
        assert len(server.requests) == 21

    async def elsewhere(exchange: Exchange) -> None:
        await exchange.respond(302, [("location", "ftp://127.0.0.1/x")])

    async with running(elsewhere) as (_, provider):
        with pytest.raises(ProviderConnectionError, match="UnsupportedProtocol"):
            await provider.complete(REQUEST)
    assert (
        transport_kind(TooManyRedirects())
        == transport_kind(UnsupportedProtocol())
        == ("connection")
    )


async def test_a_redirect_without_location_is_the_answer() -> None:
    async def app(exchange: Exchange) -> None:
        await exchange.respond(302, JSON, b'{"error": {"message": "where?"}}')

    async with running(app) as (_, provider):
        with pytest.raises(ProviderError, match="HTTP 302: where") as caught:
            await provider.complete(REQUEST)
        assert caught.value.status_code == 302


# TLS -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA and a certificate for 127.0.0.1 it signed (``openssl`` CLI)."""
    folder = tmp_path_factory.mktemp("tls")
    paths = {n: folder / f"{n}.pem" for n in ("ca", "ca_key", "key", "csr", "cert")}
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ext = folder / "ext.cnf"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    commands = [
        ["req", "-x509", *ec, "-keyout", paths["ca_key"], "-out", paths["ca"], "-days", "2",
         "-subj", "/CN=llmguard test CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["req", *ec, "-keyout", paths["key"], "-out", paths["csr"], "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", paths["csr"], "-CA", paths["ca"], "-CAkey", paths["ca_key"],
         "-CAcreateserial", "-out", paths["cert"], "-days", "2", "-extfile", ext],
    ]  # fmt: skip
    for command in commands:
        try:
            subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True)
        except FileNotFoundError:  # pragma: no cover - openssl is on every CI image
            pytest.skip("the openssl command is missing")
    # SSL_CERT_DIR: a folder of CAs named by their subject hash
    name = subprocess.run(
        ["openssl", "x509", "-hash", "-noout", "-in", str(paths["ca"])],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    paths["capath"] = folder / "capath"
    paths["capath"].mkdir()
    (paths["capath"] / f"{name}.0").write_bytes(paths["ca"].read_bytes())
    return paths


def server_context(certificates: dict[str, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates["cert"], certificates["key"])
    return context


@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "SSL_CERT_DIR"])
async def test_tls_trusts_the_ca_named_by_the_environment(
    certificates: dict[str, Path], monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)  # it wins over SSL_CERT_DIR
    where = "ca" if variable == "SSL_CERT_FILE" else "capath"
    monkeypatch.setenv(variable, str(certificates[where]))
    async with serve(by_kind, tls=server_context(certificates)) as server:
        provider = provider_for(server)
        try:
            assert (await provider.complete(REQUEST)).text == "ok"
            assert await read_stream(provider) == "Hello there"
            assert server.connections == 1
        finally:
            await provider.aclose()


async def test_tls_refuses_a_server_the_default_store_does_not_trust(
    certificates: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    async with serve(by_kind, tls=server_context(certificates)) as server:
        provider = provider_for(server)
        with pytest.raises(ProviderConnectionError) as caught:
            await provider.complete(REQUEST)
        assert str(caught.value) == "could not reach the provider: ConnectError"
        assert isinstance(caught.value.__cause__.__cause__, ssl.SSLCertVerificationError)  # type: ignore[union-attr]
        assert KEY not in repr(caught.value.__cause__)
        await provider.aclose()


async def test_the_tls_context_is_built_once_on_the_first_https_request(
    certificates: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates["ca"]))
    async with (
        serve(answer_json, tls=server_context(certificates)) as server,
        serve(answer_json) as plain,
        own_client(keepalive_expiry=0) as client,
    ):
        await client.send(client.build_request("GET", plain.url))
        assert client._ssl_context is None
        await client.send(client.build_request("GET", server.url))
        context = client._ssl_context
        assert context is not None
        monkeypatch.delenv("SSL_CERT_FILE")
        await anyio.sleep(0.01)  # past the keep-alive expiry: a new connection
        response = await client.send(client.build_request("GET", server.url))
        assert response.status_code == 200 and client._ssl_context is context
        assert server.connections == 2


# The proxy fallback, the defaults, what loads -----------------------------------------


@pytest.mark.parametrize(
    ("variable", "base_url", "falls_back"),
    [
        ("HTTPS_PROXY", "https://api.openai.test/v1", True),
        ("all_proxy", "https://api.openai.test/v1", True),
        ("https_proxy", "http://127.0.0.1:9/v1", False),
        ("HTTP_PROXY", "http://127.0.0.1:9/v1", True),
        ("NO_PROXY", "https://api.openai.test/v1", False),
    ],
)
async def test_with_a_proxy_httpx2_sends_as_the_sdk_would(
    monkeypatch: pytest.MonkeyPatch, variable: str, base_url: str, falls_back: bool
) -> None:
    import httpx2

    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.setenv(variable, "http://127.0.0.1:9")
    provider = OpenAIProvider(api_key=KEY, base_url=base_url, wire="lean")
    assert provider._lean is not None
    client = provider._lean.http_client
    assert isinstance(client, httpx2.AsyncClient if falls_back else LeanClient)
    await provider.aclose()
    assert client.is_closed


def test_timeouts_are_the_sdks() -> None:
    assert LeanClient().timeouts == SDK_TIMEOUTS == Timeouts(5.0, 600.0, 600.0, 600.0)
    assert Timeouts.of(12) == Timeouts(12, 12, 12, 12)
    assert Timeouts.of(None) == Timeouts(None, None, None, None)
    provider = OpenAIProvider(api_key=KEY, wire="lean", timeout=9.0)
    assert provider._lean is not None
    bound = provider._lean._bind()
    assert bound.timeout == bound.client.timeouts == Timeouts(9.0, 9.0, 9.0, 9.0)
    assert bound.url == "https://api.openai.com/v1/chat/completions"


async def test_default_query_and_params_reach_the_target() -> None:
    async with serve(answer_json) as server, own_client() as client:
        request = client.build_request("POST", f"{server.url}/a?b=1", params={"c": "d e"})
        await client.send(request)
        assert server.requests[0].target == "/a?b=1&c=d+e"


def test_the_key_is_in_no_repr() -> None:
    client = LeanClient()
    request = client.build_request("POST", "https://h.test/v1", headers=(("Authorization", KEY),))
    headers = Headers([(b"Set-Cookie", b"a"), (b"set-cookie", b"b"), (b"X-Key", KEY.encode())])
    assert headers["SET-COOKIE"] == "a, b" and len(headers) == 2 and "x-key" in headers
    for text in (repr(request), repr(headers), repr(client), repr(ReadTimeout("x"))):
        assert KEY not in text


def test_a_first_request_loads_neither_httpx2_nor_trio() -> None:
    code = (
        "import sys, json, anyio, llmguard\n"
        "p = llmguard.OpenAIProvider(api_key='sk-x', wire='lean')\n"
        "bound = p._lean._bind()\n"
        "from llmguard._providers._lean_env import default_ssl_context\n"
        "default_ssl_context()\n"
        "heavy = ('openai', 'httpx2', 'httpx', 'httpcore2', 'httpcore', 'trio', 'certifi')\n"
        "print(json.dumps([sorted(m for m in heavy if m in sys.modules), type(bound.client).__name__]))"
    )
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert json.loads(out.stdout) == [[], "LeanClient"]

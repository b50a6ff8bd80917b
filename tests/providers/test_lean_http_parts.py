"""The lean HTTP client's parts one by one: a connection whose stream fails or stalls,
the pool's connect errors, the body decoder, charsets, timeouts, informational
responses, a reset connection, and who closes what on ``aclose``."""

from __future__ import annotations

import zlib
from typing import Any

import anyio
import h11
import pytest
from anyio.abc import ByteStream

from llmguard import OpenAIProvider, ProviderConnectionError
from llmguard._providers._lean_errors import (
    ConnectError,
    ConnectTimeout,
    DecodingError,
    WriteError,
    WriteTimeout,
)
from llmguard._providers._lean_http import LeanClient, Timeouts
from llmguard._providers._lean_pool import Connection, Pool
from llmguard._providers._lean_response import _charset, _Decoder
from llmguard.testing import FakeOpenAIEndpoint

from ._lean_helpers import JSON, KEY, REQUEST, SSE, completion, lean_client, running, sse_events
from ._loopback import Exchange
from .conftest import http_module

pytestmark = pytest.mark.anyio

ORIGIN = ("http", "127.0.0.1", 9)


class Stalled(ByteStream):
    """A stream that never takes a byte (or breaks when asked to)."""

    def __init__(self, broken: bool = False) -> None:
        self.broken = broken

    async def send(self, item: bytes) -> None:
        if self.broken:
            raise anyio.BrokenResourceError
        await anyio.sleep_forever()

    async def receive(self, max_bytes: int = 65536) -> bytes:
        raise anyio.EndOfStream  # pragma: no cover - never read

    async def send_eof(self) -> None:  # pragma: no cover - never called
        pass

    async def aclose(self) -> None:
        pass


def head() -> h11.Request:
    return h11.Request(method="POST", target="/", headers=[("Host", "x"), ("Content-Length", "2")])


async def test_a_write_that_stalls_or_breaks() -> None:
    with pytest.raises(WriteTimeout):
        await Connection(ORIGIN, Stalled()).send(head(), b"{}", 0.01)
    with pytest.raises(WriteError, match="BrokenResourceError"):
        await Connection(ORIGIN, Stalled(broken=True)).send(head(), b"{}", 1)


async def test_connecting_that_stalls_or_fails() -> None:
    async def stalls(origin: Any) -> Any:
        await anyio.sleep_forever()

    async def refused(origin: Any) -> Any:
        raise ConnectionRefusedError

    for connect, error in ((stalls, ConnectTimeout), (refused, ConnectError)):
        pool = Pool(connect, max_connections=1, max_keepalive=1, keepalive_expiry=5)
        with pytest.raises(error):
            await pool.acquire(ORIGIN, connect=0.01, pool=1)
        assert pool._open == 0  # the slot is free again


def test_the_decoder() -> None:
    decoder = _Decoder("deflate")
    good = zlib.compress(b"hello world")
    assert decoder.decode(good[:5]) + decoder.decode(good[5:]) + decoder.flush() == b"hello world"
    broken = _Decoder("deflate")
    broken.decode(good[:2])  # the zlib header: then an invalid block
    with pytest.raises(DecodingError):
        broken.decode(b"\xff" * 20)
    both = _Decoder("deflate, gzip")  # applied in order: undone in reverse
    data = zlib.compress(b"x")
    gz = zlib.compressobj(wbits=zlib.MAX_WBITS | 16)
    data = gz.compress(data) + gz.flush()
    assert both.decode(data) + both.flush() == b"x"


def test_charsets() -> None:
    assert _charset("text/plain; format=flowed; charset=ISO-8859-1") == "iso8859-1"
    assert _charset('text/plain; charset="utf-16"') == "utf-16"
    assert _charset("text/plain; charset=klingon") == "utf-8"
    assert _charset("application/json") == "utf-8"


def test_timeouts_from_an_httpx2_timeout() -> None:
    import httpx2

    assert Timeouts.of(httpx2.Timeout(3.0, connect=1.0)) == Timeouts(1.0, 3.0, 3.0, 3.0)


async def test_an_informational_response_is_skipped() -> None:
    async def app(exchange: Exchange) -> None:
        await exchange._stream.send(b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n")
        await exchange.respond(200, JSON, completion("after hints"))

    async with running(app) as (_, provider):
        assert (await provider.complete(REQUEST)).text == "after hints"


async def test_an_accept_encoding_of_the_users_wins() -> None:
    async def app(exchange: Exchange) -> None:
        await exchange.respond(200, JSON, completion())

    async with running(app, default_headers={"Accept-Encoding": "identity"}) as (server, p):
        await p.complete(REQUEST)
    assert server.requests[0].headers["accept-encoding"] == "identity"


async def test_a_connection_reset_mid_stream() -> None:
    async def app(exchange: Exchange) -> None:
        await exchange.head(200, SSE)
        await exchange.data(sse_events("a", "b")[0])
        await anyio.sleep(0.05)  # the client has read the head and the first event
        await exchange.reset()

    async with running(app) as (_, provider):
        with pytest.raises(ProviderConnectionError) as caught:
            async with provider.stream(REQUEST) as events:
                async for _ in events:
                    pass
    assert str(caught.value) == "the connection to the provider broke: ReadError"


async def test_a_body_read_twice_and_iterated_past_its_end() -> None:
    async def app(exchange: Exchange) -> None:
        await exchange.respond(200, JSON, completion())

    async with running(app) as (server, provider):
        client = lean_client(provider)
        response = await client.send(client.build_request("GET", server.url), stream=True)
        iterator = response.aiter_bytes()
        assert [piece async for piece in iterator] == [completion()]
        with pytest.raises(StopAsyncIteration):
            await iterator.__anext__()
        assert await response.aread() == b""  # read already: nothing left
        again = await client.send(client.build_request("GET", server.url))
        assert await again.aread() == await again.aread() == completion()


async def test_aclose_closes_only_what_llmguard_built() -> None:
    provider = OpenAIProvider(api_key=KEY, wire="lean")
    await provider.aclose()  # nothing built yet: nothing to close
    endpoint = FakeOpenAIEndpoint(["ok"])
    client = endpoint.async_client()
    theirs = OpenAIProvider(client, wire="lean")
    await theirs.complete(REQUEST)
    await theirs.aclose()
    assert not client._client.is_closed  # the caller's client stays open
    sdk = OpenAIProvider(api_key=KEY)
    built = sdk.client
    await sdk.aclose()
    assert built._client.is_closed and sdk.client is not built  # a fresh one to use
    lean = OpenAIProvider(api_key=KEY, wire="lean")
    built = lean.client  # the SDK client behind embed
    await lean.aclose()
    assert built._client.is_closed
    yours = http_module().AsyncClient()  # the installed SDK's HTTP library
    mine = OpenAIProvider(api_key=KEY, http_client=yours)
    assert mine.client._client is yours
    await mine.aclose()
    assert not yours.is_closed  # your HTTP client under llmguard's SDK client: yours
    await yours.aclose()
    await client.close()


def test_a_client_repr() -> None:
    assert repr(LeanClient()) == "<LeanClient idle=0>"


async def test_a_header_http_cannot_carry_and_a_bad_port() -> None:
    key = KEY + "\n"  # a key read from a file with its line break
    provider = OpenAIProvider(api_key=key, base_url="http://127.0.0.1:9/v1", wire="lean")
    with pytest.raises(ProviderConnectionError) as caught:
        await provider.complete(REQUEST)
    assert str(caught.value) == "could not reach the provider: LocalProtocolError"
    cause = caught.value.__cause__
    assert cause is not None and cause.__context__ is None and KEY not in str(cause)
    provider = OpenAIProvider(api_key=KEY, base_url="http://127.0.0.1:port/v1", wire="lean")
    with pytest.raises(ProviderConnectionError, match="UnsupportedProtocol"):
        await provider.complete(REQUEST)

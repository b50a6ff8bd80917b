"""llmguard's own HTTP/1.1 client (``_lean_http``), used by ``OpenAIProvider(api_key=...,
wire="lean")``, against a real server on 127.0.0.1 (``_loopback``): keep-alive and when a
connection is not reused, bodies (chunked, gzip, deflate), errors as the other paths
report them, the pool's bounds. Every recorded exchange also runs on it in
``test_wire_parity`` (``on_loopback``); redirects, TLS and the proxy fallback are in
``test_lean_http_setup``."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from llmguard import (
    OpenAIProvider,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
    RateLimited,
)
from llmguard._providers._lean_errors import PoolTimeout
from llmguard._providers._lean_http import LeanClient, Timeouts
from llmguard._providers._openai_errors import transport_kind

from ._lean_helpers import (
    JSON,
    KEY,
    REQUEST,
    SSE,
    answer_json,
    answer_stream,
    by_kind,
    completion,
    lean_client,
    own_client,
    read_stream,
    running,
    sse_events,
)
from ._loopback import Exchange, serve

pytestmark = pytest.mark.anyio

# Keep-alive -----------------------------------------------------------------------------


async def test_sequential_calls_share_one_connection() -> None:
    async with running(by_kind) as (server, provider):
        assert (await provider.complete(REQUEST)).text == "ok"
        assert await read_stream(provider) == "Hello there"
        assert (await provider.complete(REQUEST)).text == "ok"
        assert server.connections == 1
        assert lean_client(provider).pool.idle == 1
        sent = server.requests[0]
        assert sent.method == "POST" and sent.target == "/v1/chat/completions"
        assert sent.headers["host"] == f"127.0.0.1:{server.port}"
        assert sent.headers["accept-encoding"] == "gzip, deflate"
        assert sent.headers["authorization"] == f"Bearer {KEY}"
        assert sent.headers["content-length"] == str(len(sent.body))


async def test_a_stream_closed_early_closes_its_connection() -> None:
    async with running(by_kind) as (server, provider):
        async with provider.stream(REQUEST) as events:
            async for _ in events:
                break
        assert lean_client(provider).pool.idle == 0
        assert (await provider.complete(REQUEST)).text == "ok"
        assert server.connections == 2


async def test_a_cancelled_call_closes_its_connection() -> None:
    arrived = anyio.Event()

    async def first_hangs(exchange: Exchange) -> None:
        if not arrived.is_set():
            arrived.set()
            await anyio.sleep_forever()
        await answer_json(exchange)

    async with running(first_hangs) as (server, provider):
        async with anyio.create_task_group() as group:
            group.start_soon(provider.complete, REQUEST)
            await arrived.wait()
            group.cancel_scope.cancel()
        assert lean_client(provider).pool.idle == 0
        assert (await provider.complete(REQUEST)).text == "ok"
        assert server.connections == 2


async def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    closed = anyio.Event()

    async def close_after_answer(exchange: Exchange) -> None:
        await answer_json(exchange)
        await exchange.abort()
        closed.set()

    async with running(close_after_answer) as (server, provider):
        assert (await provider.complete(REQUEST)).text == "ok"
        await closed.wait()
        assert (await provider.complete(REQUEST)).text == "ok"
        assert server.connections == 2


async def test_connection_close_from_the_server_is_obeyed() -> None:
    async def close_header(exchange: Exchange) -> None:
        await exchange.respond(200, [*JSON, ("connection", "close")], completion())

    async with running(close_header) as (server, provider):
        await provider.complete(REQUEST)
        await provider.complete(REQUEST)
        assert server.connections == 2
        assert lean_client(provider).pool.idle == 0


async def test_closing_the_provider_closes_the_pool() -> None:
    async with running(by_kind) as (server, provider):
        await provider.complete(REQUEST)
        client = lean_client(provider)
        await provider.aclose()
        assert client.is_closed and client.pool.idle == 0
        with anyio.fail_after(5):
            await server.hung_up.wait()
        assert (await provider.complete(REQUEST)).text == "ok"  # a new client
        assert lean_client(provider) is not client
        assert server.connections == 2


async def test_a_closed_client_refuses_to_send() -> None:
    client = LeanClient()
    await client.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await client.send(client.build_request("GET", "http://127.0.0.1:9/"))


# Bodies --------------------------------------------------------------------------------


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data)


def deflated(data: bytes) -> bytes:
    return zlib.compress(data)


def raw_deflated(data: bytes) -> bytes:
    obj = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return obj.compress(data) + obj.flush()


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [("gzip", gzipped), ("deflate", deflated), ("deflate", raw_deflated), ("br", lambda d: d)],
    ids=["gzip", "deflate", "raw-deflate", "unknown-passes-through"],
)
async def test_chunked_and_compressed_bodies_are_decoded(
    encoding: str, encode: Callable[[bytes], bytes]
) -> None:
    body = encode(completion("squeezed"))

    async def app(exchange: Exchange) -> None:
        await exchange.head(200, [*JSON, ("content-encoding", encoding)])
        for start in range(0, len(body), 7):
            await exchange.data(body[start : start + 7])
        await exchange.end()

    async with running(app) as (server, provider):
        assert (await provider.complete(REQUEST)).text == "squeezed"
        assert (await provider.complete(REQUEST)).text == "squeezed"
        assert server.connections == 1


async def test_a_gzipped_stream_is_decoded_as_it_arrives() -> None:
    compressor = zlib.compressobj(wbits=zlib.MAX_WBITS | 16)

    async def app(exchange: Exchange) -> None:
        await exchange.head(200, [*SSE, ("content-encoding", "gzip")])
        for event in sse_events("a", "b"):
            await exchange.data(compressor.compress(event) + compressor.flush(zlib.Z_SYNC_FLUSH))
        await exchange.data(compressor.flush())
        await exchange.end()

    async with running(app) as (_, provider):
        assert await read_stream(provider) == "ab"


async def test_a_corrupt_gzip_body_is_a_connection_error() -> None:
    async def app(exchange: Exchange) -> None:
        await exchange.respond(200, [*JSON, ("content-encoding", "gzip")], b"not gzip at all")

    async with running(app) as (server, provider):
        with pytest.raises(ProviderConnectionError, match="DecodingError"):
            await provider.complete(REQUEST)
        assert lean_client(provider).pool.idle == 0
        assert server.connections == 1


async def test_a_body_without_length_ends_with_the_connection() -> None:
    async def app(exchange: Exchange) -> None:
        # No Content-Length, not chunked: the body ends when the connection does.
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n"
        await exchange._stream.send(head + completion("until EOF"))
        await exchange.abort()

    async with running(app) as (_, provider):
        assert (await provider.complete(REQUEST)).text == "until EOF"
        assert lean_client(provider).pool.idle == 0


async def test_text_reads_the_charset() -> None:
    async def app(exchange: Exchange) -> None:
        body = "é".encode("latin-1")
        await exchange.respond(200, [("content-type", "text/plain; charset=latin-1")], body)

    async with serve(app) as server, own_client() as client:
        response = await client.send(client.build_request("GET", server.url))
        assert response.text == "é"
        assert response.headers["Content-Type"] == response.headers.get("CONTENT-TYPE")


async def test_a_response_read_in_pieces_and_its_body_before_reading() -> None:
    async with serve(answer_stream) as server, own_client() as client:
        response = await client.send(client.build_request("GET", server.url), stream=True)
        with pytest.raises(RuntimeError, match="not read"):
            _ = response.content
        pieces = [piece async for piece in response.aiter_bytes()]
        assert b"".join(pieces) == b"".join(sse_events("Hel", "lo", " there"))
        assert response.is_closed and client.pool.idle == 1
        assert "LeanResponse [200]" in repr(response)


# Errors, as the other paths report them -------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "error", "retry_after"),
    [
        (429, [("retry-after", "3")], RateLimited, 3.0),
        (429, [("retry-after-ms", "250")], RateLimited, 0.25),
        (503, [("retry-after", "7")], ProviderError, 7.0),
        (400, [], ProviderError, None),
    ],
)
async def test_error_statuses_and_retry_after(
    status: int, headers: list[tuple[str, str]], error: type[ProviderError], retry_after: Any
) -> None:
    body = json.dumps({"error": {"message": f"no {KEY}"}}).encode()

    async def app(exchange: Exchange) -> None:
        await exchange.respond(status, [*JSON, ("x-request-id", "req_9"), *headers], body)

    async with running(app) as (server, provider):
        for call in (provider.complete(REQUEST), read_stream(provider)):
            with pytest.raises(error) as caught:
                await call
            assert type(caught.value) is error
            assert caught.value.status_code == status
            assert caught.value.retry_after == retry_after
            assert caught.value.request_id == "req_9"
            assert KEY not in str(caught.value)
        assert server.connections == 1  # an error body read to its end: reused


async def test_a_refused_connection_is_a_connection_error() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    provider = OpenAIProvider(api_key=KEY, base_url=f"http://127.0.0.1:{port}/v1", wire="lean")
    with pytest.raises(ProviderConnectionError) as caught:
        await provider.complete(REQUEST)
    assert str(caught.value) == "could not reach the provider: ConnectError"
    assert transport_kind(caught.value.__cause__) == "connection"  # type: ignore[arg-type]
    assert KEY not in repr(caught.value.__cause__)


async def test_a_server_that_never_answers_is_a_timeout() -> None:
    async def silent(exchange: Exchange) -> None:
        await anyio.sleep_forever()

    async with running(silent, timeout=0.2) as (_, provider):
        with pytest.raises(ProviderTimeout, match="did not answer in time"):
            await provider.complete(REQUEST)
        with pytest.raises(ProviderTimeout):
            await read_stream(provider)
        assert lean_client(provider).pool.idle == 0


async def test_a_stream_that_stops_sending_is_a_timeout() -> None:
    async def stalls(exchange: Exchange) -> None:
        await exchange.head(200, SSE)
        await exchange.data(sse_events("a")[0])
        await anyio.sleep_forever()

    async with running(stalls, timeout=0.2) as (_, provider):
        with pytest.raises(ProviderTimeout, match="stopped sending in time"):
            await read_stream(provider)


async def test_a_server_that_closes_mid_stream_cuts_the_stream() -> None:
    async def cuts(exchange: Exchange) -> None:
        await exchange.head(200, SSE)
        await exchange.data(sse_events("a", "b")[0])
        await exchange.abort()

    async with running(cuts) as (_, provider):
        with pytest.raises(ProviderConnectionError) as caught:
            await read_stream(provider)
        assert str(caught.value) == "the connection to the provider broke: RemoteProtocolError"


async def test_a_server_that_closes_without_answering() -> None:
    async def hangs_up(exchange: Exchange) -> None:
        await exchange.abort()

    async with running(hangs_up) as (_, provider):
        with pytest.raises(ProviderConnectionError, match="RemoteProtocolError"):
            await provider.complete(REQUEST)


async def test_garbage_from_the_server_is_a_connection_error() -> None:
    async def garbage(exchange: Exchange) -> None:
        await exchange._stream.send(b"SPDY/9 what\r\n\r\n")
        await exchange.abort()

    async with running(garbage) as (_, provider):
        with pytest.raises(ProviderConnectionError, match="RemoteProtocolError"):
            await provider.complete(REQUEST)


async def test_the_pool_bounds_connections_and_waits_for_one() -> None:
    async with serve(answer_stream) as server, own_client(max_connections=1) as client:
        held = await client.send(client.build_request("GET", server.url), stream=True)
        request = client.build_request("GET", server.url, timeout=Timeouts(5, 5, 5, 0.05))
        with pytest.raises(PoolTimeout):
            await client.send(request)
        assert transport_kind(PoolTimeout()) == "timeout"

        async def release_soon() -> None:
            await anyio.sleep(0.01)
            await held.aread()

        async with anyio.create_task_group() as group:
            group.start_soon(release_soon)
            response = await client.send(client.build_request("GET", server.url))
        assert response.status_code == 200
        assert server.connections == 1


async def test_idle_connections_are_bounded_and_expire() -> None:
    async with serve(answer_stream) as server, own_client(max_keepalive=1) as client:
        first = await client.send(client.build_request("GET", server.url), stream=True)
        second = await client.send(client.build_request("GET", server.url), stream=True)
        await first.aread()
        await second.aread()
        assert client.pool.idle == 1 and server.connections == 2
    async with serve(answer_stream) as server, own_client(keepalive_expiry=0) as client:
        await client.send(client.build_request("GET", server.url))
        await anyio.sleep(0.01)
        await client.send(client.build_request("GET", server.url))
        assert server.connections == 2
    async with serve(answer_stream) as server, own_client(max_keepalive=0) as client:
        await client.send(client.build_request("GET", server.url))
        assert client.pool.idle == 0


async def test_a_full_pool_closes_an_idle_connection_to_another_origin() -> None:
    async with (
        serve(answer_stream) as one,
        serve(answer_stream) as two,
        own_client(max_connections=1) as client,
    ):
        await client.send(client.build_request("GET", one.url))
        await client.send(client.build_request("GET", two.url))
        assert client.pool.idle == 1
        with anyio.fail_after(5):
            await one.hung_up.wait()

"""A small HTTP/1.1 server on 127.0.0.1 (an anyio TCP listener speaking h11), for the
lean HTTP client's tests: real sockets, keep-alive, chunked or sized bodies, TLS, and
the misbehaviour a test scripts (never answering, closing mid-body, closing at once).

``serve(app)`` runs it for the length of an ``async with``; ``app(exchange)`` answers
one request. ``endpoint_app(endpoint)`` serves a ``FakeOpenAIEndpoint`` over it.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import h11
from anyio.abc import ByteStream, SocketStream
from anyio.streams.tls import TLSListener


@dataclass
class Received:
    """One request as the server read it."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    connection: int  # which TCP connection (1, 2, ...) it came on


class Exchange:
    """The server's side of one request: answer it, or misbehave."""

    def __init__(self, request: Received, stream: ByteStream, conn: h11.Connection) -> None:
        self.request = request
        self._stream = stream
        self._conn = conn
        self.aborted = False

    async def head(self, status: int, headers: list[tuple[str, str]]) -> None:
        """Send the status line and headers (no Content-Length: the body is chunked)."""
        await self._send(h11.Response(status_code=status, headers=headers))

    async def data(self, data: bytes) -> None:
        if data:
            await self._send(h11.Data(data=data))

    async def end(self) -> None:
        await self._send(h11.EndOfMessage())

    async def respond(
        self, status: int, headers: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> None:
        """A whole answer with a Content-Length."""
        headers = [*(headers or []), ("content-length", str(len(body)))]
        await self.head(status, headers)
        await self.data(body)
        await self.end()

    async def abort(self) -> None:
        """Close the connection now (mid-answer, or without any)."""
        self.aborted = True
        await anyio.aclose_forcefully(self._stream)

    async def reset(self) -> None:
        """Close the connection with a TCP reset (the client's next read fails)."""
        self.aborted = True
        sock = self._stream.extra(anyio.abc.SocketAttribute.raw_socket)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await anyio.aclose_forcefully(self._stream)

    async def _send(self, event: Any) -> None:
        await self._stream.send(self._conn.send(event))


App = Callable[[Exchange], Awaitable[None]]


@dataclass
class Server:
    """A running loopback server."""

    port: int
    scheme: str = "http"
    requests: list[Received] = field(default_factory=list)
    connections: int = 0
    closed_by_client: int = 0  # connections the client closed (EOF while idle)
    hung_up: anyio.Event = field(default_factory=anyio.Event)  # set on each such close

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"


async def _read_request(
    stream: ByteStream, conn: h11.Connection, server: Server, number: int
) -> Received | None:
    method = target = ""
    headers: dict[str, str] = {}
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                data = b""
            conn.receive_data(data)
            continue
        if isinstance(event, h11.ConnectionClosed):
            server.closed_by_client += 1
            server.hung_up.set()
            return None
        if isinstance(event, h11.Request):
            method, target = event.method.decode(), event.target.decode()
            headers = {k.decode().lower(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return Received(method, target, headers, body, number)


async def _serve_connection(stream: ByteStream, app: App, server: Server) -> None:
    server.connections += 1
    number = server.connections
    conn = h11.Connection(our_role=h11.SERVER)
    async with stream:
        while True:
            try:
                request = await _read_request(stream, conn, server, number)
            except h11.RemoteProtocolError:
                return
            if request is None:
                return
            server.requests.append(request)
            exchange = Exchange(request, stream, conn)
            try:
                await app(exchange)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return
            if exchange.aborted or conn.our_state is not h11.DONE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return


@asynccontextmanager
async def serve(app: App, *, tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    """Serve ``app`` on 127.0.0.1 (a free port) while the ``async with`` lasts."""
    listener: Any = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    server = Server(port, "https" if tls else "http")
    if tls is not None:
        listener = TLSListener(listener, tls, standard_compatible=False)

    async def handle(stream: SocketStream) -> None:
        await _serve_connection(stream, app, server)

    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, handle)
        try:
            yield server
        finally:
            group.cancel_scope.cancel()


def endpoint_app(endpoint: Any) -> App:
    """Serve a ``FakeOpenAIEndpoint``: each request goes through its transport handler; a
    scripted timeout never answers, a refused connection closes unanswered, a stream
    the script cuts closes mid-body."""
    from llmguard.testing._openai_body import http_module_for_sdk

    http = http_module_for_sdk()  # httpx2 under openai 3.x, httpx under 2.x

    async def app(exchange: Exchange) -> None:
        received = exchange.request
        request = http.Request(
            received.method,
            f"http://127.0.0.1{received.target}",
            headers=received.headers,
            content=received.body,
        )
        try:
            response = endpoint.handler(request)
        except http.ReadTimeout:
            await anyio.sleep_forever()
        except http.ConnectError:
            await exchange.abort()
            return
        headers = [(k, v) for k, v in response.headers.items() if k != "content-length"]
        await exchange.head(response.status_code, headers)
        try:
            async for chunk in response.stream:
                await exchange.data(chunk)
        except http.ReadTimeout:
            await anyio.sleep_forever()
        except http.RemoteProtocolError:
            await exchange.abort()
            return
        finally:
            await response.stream.aclose()
        await exchange.end()

    return app

"""HTTP/1.1 connections (``h11`` over anyio byte streams) and their keep-alive pool.

A ``Connection`` sends one request and reads one response at a time. The ``Pool``
hands out connections per origin (scheme, host, port), at most ``max_connections``
open at once (a caller waits up to the pool timeout for one), and keeps at most
``max_keepalive`` idle for ``keepalive_expiry`` seconds, as httpx does. A connection
goes back to the pool only when its response was read to the end and h11 says both
sides may start the next request; any other ending (an error, a cancellation, a body
closed early) closes it.
"""

from __future__ import annotations

import select
import ssl
import time
from collections.abc import Callable
from typing import Any

import anyio
import h11
from anyio.abc import ByteStream, SocketAttribute

from ._lean_errors import (
    ConnectError,
    ConnectTimeout,
    PoolTimeout,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    WriteError,
    WriteTimeout,
)

__all__ = ["Connection", "Origin", "Pool"]

Origin = tuple[str, str, int]  # scheme, host, port
_READ_SIZE = 65536
_IO_ERRORS = (OSError, ssl.SSLError, anyio.BrokenResourceError, anyio.ClosedResourceError)


class Connection:
    """One HTTP/1.1 connection to an origin."""

    __slots__ = ("_h11", "_stream", "idle_since", "origin")

    def __init__(self, origin: Origin, stream: ByteStream) -> None:
        self.origin = origin
        self._stream = stream
        self._h11 = h11.Connection(our_role=h11.CLIENT)
        self.idle_since = 0.0

    async def send(self, request: h11.Request, body: bytes, seconds: float | None) -> None:
        """Send the head and the whole body in one write."""
        conn = self._h11
        data = conn.send(request) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        try:
            with anyio.fail_after(seconds):
                await self._stream.send(data)
        except TimeoutError:
            raise WriteTimeout("timed out sending the request") from None
        except _IO_ERRORS as exc:
            raise WriteError(f"sending the request failed: {type(exc).__name__}") from exc

    async def next_event(self, seconds: float | None) -> Any:
        """The next h11 event from the server (reading from the socket as needed, each
        read bounded by ``seconds``)."""
        conn = self._h11
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise RemoteProtocolError(str(exc)) from exc
            if event is not h11.NEED_DATA:
                if type(event) is h11.ConnectionClosed:  # pragma: no cover - h11 raises first
                    raise RemoteProtocolError("Server disconnected without sending a response.")
                return event
            try:
                if seconds is None:  # no cancel scope to set up for each read
                    data = await self._stream.receive(_READ_SIZE)
                else:
                    with anyio.fail_after(seconds):
                        data = await self._stream.receive(_READ_SIZE)
            except TimeoutError:
                raise ReadTimeout("timed out waiting for the server") from None
            except anyio.EndOfStream:
                data = b""
            except _IO_ERRORS as exc:
                raise ReadError(f"reading the response failed: {type(exc).__name__}") from exc
            try:
                conn.receive_data(data)
            except h11.RemoteProtocolError as exc:  # pragma: no cover - h11 raises on next_event
                raise RemoteProtocolError(str(exc)) from exc

    def reusable(self) -> bool:
        """The response was read to the end and both sides may go on: start over."""
        conn = self._h11
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            return True
        return False

    def alive(self) -> bool:
        """An idle connection the server has not closed (nothing to read on it)."""
        sock = self._stream.extra(SocketAttribute.raw_socket, None)
        if sock is None:  # pragma: no cover - anyio's TCP streams always have one
            return True
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):  # pragma: no cover - a socket closed under us
            return False
        return not readable  # readable while idle: closed by the server (or garbage)

    async def aclose(self) -> None:
        """Close at once (no TLS goodbye: the connection may be in any state)."""
        with anyio.CancelScope(shield=True):
            await anyio.aclose_forcefully(self._stream)


Connector = Callable[[Origin], Any]  # async (origin) -> ByteStream


class Pool:
    """Keep-alive connections per origin, bounded as the openai SDK's client is."""

    __slots__ = (
        "_connect",
        "_expiry",
        "_freed",
        "_idle",
        "_max_connections",
        "_max_keepalive",
        "_open",
        "closed",
    )

    def __init__(
        self,
        connect: Connector,
        *,
        max_connections: int,
        max_keepalive: int,
        keepalive_expiry: float,
    ) -> None:
        self._connect = connect
        self._max_connections = max_connections
        self._max_keepalive = max_keepalive
        self._expiry = keepalive_expiry
        self._idle: list[Connection] = []  # oldest first
        self._open = 0  # connections open: idle and in use
        self._freed: anyio.Event | None = None
        self.closed = False

    @property
    def idle(self) -> int:
        """How many connections wait in the pool."""
        return len(self._idle)

    async def acquire(self, origin: Origin, *, connect: float | None, pool: float | None) -> Any:
        """A connection to ``origin``: an idle one that is still alive, else a new one
        (waiting up to ``pool`` seconds while ``max_connections`` are open)."""
        try:
            with anyio.fail_after(pool):
                while True:
                    found = await self._take_idle(origin)
                    if found is not None:
                        return found
                    if self._open < self._max_connections:
                        break
                    if self._idle:  # room: close the oldest idle connection elsewhere
                        await self._discard(self._idle.pop(0))
                        continue
                    if self._freed is None:
                        self._freed = anyio.Event()
                    await self._freed.wait()
        except TimeoutError:
            raise PoolTimeout("timed out waiting for a free connection") from None
        self._open += 1
        try:
            stream = await self._open_stream(origin, connect)
        except BaseException:
            self._open -= 1
            self._notify()
            raise
        return Connection(origin, stream)

    async def _open_stream(self, origin: Origin, seconds: float | None) -> ByteStream:
        try:
            with anyio.fail_after(seconds):
                stream: ByteStream = await self._connect(origin)
        except TimeoutError:
            raise ConnectTimeout("timed out connecting") from None
        except _IO_ERRORS as exc:
            raise ConnectError(f"could not connect: {type(exc).__name__}") from exc
        return stream

    async def _take_idle(self, origin: Origin) -> Connection | None:
        """The newest live idle connection to ``origin``; expired ones, and those of
        ``origin`` the server closed, are closed (the list changes only between awaits,
        so other tasks see it whole; only the candidates' sockets are polled)."""
        now, idle = time.monotonic(), self._idle
        stale = [c for c in idle if now - c.idle_since > self._expiry]
        for connection in stale:
            idle.remove(connection)
        found = None
        for index in range(len(idle) - 1, -1, -1):
            candidate = idle[index]
            if candidate.origin == origin:
                del idle[index]
                if candidate.alive():
                    found = candidate
                    break
                stale.append(candidate)
        for connection in stale:
            await self._discard(connection)
        return found

    async def release(self, connection: Connection) -> None:
        """Back to the pool if its exchange ended cleanly, else closed."""
        if self.closed or not connection.reusable() or self._max_keepalive < 1:
            await self._discard(connection)
            return
        if len(self._idle) >= self._max_keepalive:
            await self._discard(self._idle.pop(0))
        connection.idle_since = time.monotonic()
        self._idle.append(connection)
        self._notify()

    async def discard(self, connection: Connection) -> None:
        """Close a connection that is in use (its exchange did not end cleanly)."""
        await self._discard(connection)

    async def _discard(self, connection: Connection) -> None:
        self._open -= 1
        self._notify()
        await connection.aclose()

    def _notify(self) -> None:
        freed, self._freed = self._freed, None
        if freed is not None:
            freed.set()

    async def aclose(self) -> None:
        """Close every idle connection; those in use close when their response ends."""
        self.closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await self._discard(connection)

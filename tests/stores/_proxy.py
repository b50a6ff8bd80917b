"""A TCP proxy between a Redis client and Redis, for fault injection.

In the spirit of redis-py's own regression test for CVE-2023-28858/28859 (its
``DelayProxy``): the proxy runs in the test's event loop and can

- ``delay``: hold every reply for that many seconds, so a caller can be cancelled
  while it waits for one;
- ``drop_replies``: forward an ``EVALSHA`` to Redis, let Redis run the script, then
  drop the reply and close the connection: the client never learns the outcome.

``request_seen`` is set whenever a request has been forwarded.
"""

from __future__ import annotations

from types import TracebackType

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

HOST = "127.0.0.1"
_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)


class Proxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.delay = 0.0
        self.drop_replies = False
        self.dropped = 0  # replies to EVALSHA thrown away
        self.connections = 0
        self.request_seen = anyio.Event()
        self.port = 0
        self._group: anyio.abc.TaskGroup | None = None
        self._listener: anyio.abc.Listener[anyio.abc.SocketStream]

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    async def __aenter__(self) -> Proxy:
        self._listener = await anyio.create_tcp_listener(local_host=HOST, local_port=0)
        self.port = self._listener.extra(SocketAttribute.local_port)
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self._group.start_soon(self._listener.serve, self._handle)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._group is not None
        self._group.cancel_scope.cancel()
        await self._group.__aexit__(None, None, None)
        await self._listener.aclose()

    def reset(self) -> None:
        self.request_seen = anyio.Event()

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        self.connections += 1
        try:
            upstream = await anyio.connect_tcp(HOST, self.target_port)
        except OSError:
            await client.aclose()
            return
        pending_eval = [False]
        async with client, upstream, anyio.create_task_group() as group:
            group.start_soon(self._up, client, upstream, pending_eval, group)
            group.start_soon(self._down, upstream, client, pending_eval, group)

    async def _up(
        self,
        client: anyio.abc.SocketStream,
        upstream: anyio.abc.SocketStream,
        pending_eval: list[bool],
        group: anyio.abc.TaskGroup,
    ) -> None:
        try:
            async for chunk in client:
                if b"EVALSHA" in chunk.upper():
                    pending_eval[0] = True
                await upstream.send(chunk)
                self.request_seen.set()
        except _GONE:
            pass
        group.cancel_scope.cancel()

    async def _down(
        self,
        upstream: anyio.abc.SocketStream,
        client: anyio.abc.SocketStream,
        pending_eval: list[bool],
        group: anyio.abc.TaskGroup,
    ) -> None:
        try:
            async for chunk in upstream:
                if self.drop_replies and pending_eval[0]:
                    self.dropped += 1  # Redis ran the script; the client never hears
                    break
                pending_eval[0] = False
                if self.delay:
                    await anyio.sleep(self.delay)
                await client.send(chunk)
        except _GONE:
            pass
        group.cancel_scope.cancel()

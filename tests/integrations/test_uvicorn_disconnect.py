"""A real uvicorn server on a loopback port: a client that hangs up mid-stream
makes the upstream close at once, leaves no task behind, and is charged what it got."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import uvicorn
from fastapi import FastAPI

from llmguard import (
    CallRecord,
    FunctionProvider,
    Guard,
    Observe,
    Request,
    Response,
    StreamEvent,
    TextDelta,
)
from llmguard.integrations.fastapi import stream_response

closed_at: list[float] = []
upstream_closed = threading.Event()


async def never(request: Request) -> Response:  # pragma: no cover - streams only
    raise NotImplementedError


async def two_then_stall(request: Request) -> AsyncIterator[StreamEvent]:
    try:
        yield TextDelta(text="Hello, ")
        yield TextDelta(text="world")
        await anyio.sleep_forever()  # the model stalls: only a close ends this
    finally:
        closed_at.append(time.monotonic())
        upstream_closed.set()


def test_client_hangup_closes_the_upstream_within_100ms() -> None:
    records: list[CallRecord] = []
    guard = Guard(
        FunctionProvider(never, stream=two_then_stall),
        [Observe(callback=records.append)],
        model="m",
        timeout=None,
    )
    app = FastAPI()

    @app.get("/chat")
    async def chat() -> Any:
        return await stream_response(guard.stream(user="hi"))

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", ws="none", http="h11", loop="asyncio"
    )
    server = uvicorn.Server(config)
    loops: list[asyncio.AbstractEventLoop] = []

    async def serve() -> None:
        loops.append(asyncio.get_running_loop())
        await server.serve(sockets=[sock])

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        loop = loops[0]

        async def tasks_now() -> int:
            return len(asyncio.all_tasks())

        idle_tasks = asyncio.run_coroutine_threadsafe(tasks_now(), loop).result(5)

        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        client.sendall(b"GET /chat HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n")
        received = b""
        while received.count(b"data: ") < 2:
            chunk = client.recv(4096)
            assert chunk, "the server closed early"
            received += chunk
        assert b"200 OK" in received and b"text/event-stream" in received
        assert b'"text":"Hello, "' in received and b'"text":"world"' in received
        assert not upstream_closed.is_set()  # the upstream is stalled, still open

        hung_up_at = time.monotonic()
        client.close()
        assert upstream_closed.wait(5), "the upstream was never closed"
        assert closed_at[0] - hung_up_at < 0.100, closed_at[0] - hung_up_at

        deadline = time.monotonic() + 5
        while not records:
            assert time.monotonic() < deadline, "no record"
            time.sleep(0.005)
        (record,) = records
        assert record.error == "ClientDisconnected"
        assert record.usage.output_tokens > 0 and record.usage.estimated

        deadline = time.monotonic() + 5
        while (left := asyncio.run_coroutine_threadsafe(tasks_now(), loop).result(5)) > idle_tasks:
            assert time.monotonic() < deadline, f"{left - idle_tasks} task(s) left behind"
            time.sleep(0.005)
    finally:
        server.should_exit = True
        thread.join(10)
    assert not thread.is_alive()

"""CPU per call of the lean wire path on llmguard's own HTTP/1.1 client against the same
path on an ``httpx2.AsyncClient`` (what it used before), over real loopback sockets.

A ``ThreadingHTTPServer`` in other threads answers every POST (a chat completion, or a
stream of ``--chunks`` events when the body asks for one); the client's thread CPU time
(``time.thread_time``) is measured, so the server's work is not counted. Both clients
run interleaved, round after round; each figure is the median over rounds of the mean
per call. Run: ``.venv/bin/python benchmarks/lean_http.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import httpx2

from llmguard import OpenAIProvider, Request

REQUEST = Request.create(model="m", user="hi")
COMPLETION = json.dumps(
    {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
    }
).encode()


def stream_body(chunks: int) -> bytes:
    event = {"id": "c", "choices": [{"index": 0, "delta": {"content": "tok "}}]}
    stop = {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    lines = [json.dumps(event)] * chunks + [json.dumps(stop), "[DONE]"]
    return "".join(f"data: {line}\n\n" for line in lines).encode()


class Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # the head and the body leave at once
    stream = b""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        streamed = b'"stream":true' in body
        data = self.stream if streamed else COMPLETION
        self.send_response(200)
        self.send_header("content-type", "text/event-stream" if streamed else "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


async def measure(url: str, rounds: int, calls: int) -> dict[str, float]:
    lean = OpenAIProvider(api_key="sk-x", base_url=url, wire="lean")
    on_httpx2 = OpenAIProvider(
        api_key="sk-x",
        base_url=url,
        wire="lean",
        http_client=httpx2.AsyncClient(
            timeout=60.0,
            follow_redirects=True,
            limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=100),
        ),
    )

    def complete(provider: OpenAIProvider) -> Callable[[], Awaitable[Any]]:
        async def run() -> None:
            await provider.complete(REQUEST)

        return run

    def stream(provider: OpenAIProvider) -> Callable[[], Awaitable[Any]]:
        async def run() -> None:
            async with provider.stream(REQUEST) as events:
                async for _ in events:
                    pass

        return run

    variants = {
        "call: httpx2 client": complete(on_httpx2),
        "call: lean HTTP/1.1 client": complete(lean),
        "stream: httpx2 client": stream(on_httpx2),
        "stream: lean HTTP/1.1 client": stream(lean),
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for call in variants.values():  # warm up: connections open, code paths loaded
        for _ in range(20):
            await call()
    for _ in range(rounds):
        for name, call in variants.items():
            start = time.thread_time()
            for _ in range(calls):
                await call()
            samples[name].append((time.thread_time() - start) / calls * 1e6)
    await lean.aclose()
    await on_httpx2.aclose()
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--chunks", type=int, default=100)
    args = parser.parse_args()
    Answer.stream = stream_body(args.chunks)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    for backend in ("asyncio", "trio"):
        figures = anyio.run(measure, url, args.rounds, args.calls, backend=backend)
        print(f"\n{backend}: client CPU µs per call (median of {args.rounds} x {args.calls})")
        for name, micros in figures.items():
            base = figures[name.split(":")[0] + ": httpx2 client"]
            print(f"{name:32} {micros:9.1f}  ratio to httpx2 {micros / base:5.2f}")
    server.shutdown()


if __name__ == "__main__":
    main()

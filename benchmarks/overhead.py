"""Per-call overhead of the Guard, and the cost of ``import llmguard``.

Run with ``make bench``. Every variant calls the same ``FunctionProvider`` whose
function returns a prebuilt response, so what is measured is llmguard's own work.
Then the raw openai SDK against ``Guard(OpenAIProvider)`` on one fake transport, on
the SDK path and on the lean wire path (``wire="lean"``), and cold starts (``import
llmguard``, the lean provider without openai, the first guarded call on it, the raw
SDK's first request, the SDK path), llmguard's bytecode written first.
Variants run interleaved, round after round, and each figure is the median over
rounds of the mean per-call time inside a round: the machines here are shared and
noisy, so compare ratios measured in the same run, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).parent))

from llmguard import (
    CallRecord,
    FunctionProvider,
    Guard,
    Observe,
    OpenTelemetry,
    Request,
    Response,
    Usage,
)

RESPONSE = Response(text="ok", usage=Usage(input_tokens=10, output_tokens=2), model="m")
REQUEST = Request.create(model="m", user="hello")


def otel_layer() -> OpenTelemetry:
    """An ``OpenTelemetry`` layer on SDK providers set up as in production: spans to a
    ``BatchSpanProcessor`` (its exporter drops them), metrics aggregated in memory."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(BatchSpanProcessor(Drop()))
    meter_provider = MeterProvider([InMemoryMetricReader()], shutdown_on_exit=False)
    return OpenTelemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)


async def answer(request: Request) -> Response:
    return RESPONSE


def variants() -> dict[str, Callable[[], Awaitable[Response]]]:
    provider = FunctionProvider(answer)
    sink: list[CallRecord] = []
    quiet = logging.getLogger("llmguard.calls.bench")
    quiet.setLevel(logging.CRITICAL)
    bare = Guard(provider, timeout=None)
    with_deadline = Guard(provider)
    observe_callback = Guard(provider, [Observe(logger=quiet, callback=sink.append)], timeout=None)
    observe_default = Guard(provider, [Observe(callback=lambda r: None)])
    otel_sdk = Guard(provider, timeout=None, telemetry=otel_layer())
    otel_noop = Guard(provider, timeout=None, telemetry=OpenTelemetry())

    def direct() -> Awaitable[Response]:
        return provider.complete(REQUEST)

    def keep_sink_small() -> None:
        if len(sink) > 10_000:
            sink.clear()

    async def observed() -> Response:
        keep_sink_small()
        return await observe_callback.complete(REQUEST)

    return {
        "provider called directly": direct,
        "Guard, no layers, timeout=None": lambda: bare.complete(REQUEST),
        "Guard, no layers, default 30 s deadline": lambda: with_deadline.complete(REQUEST),
        "Guard + Observe (records built), timeout=None": observed,
        "Guard + Observe + default deadline": lambda: observe_default.complete(REQUEST),
        "Guard + OpenTelemetry (SDK), timeout=None": lambda: otel_sdk.complete(REQUEST),
        "Guard + OpenTelemetry (no SDK set up), timeout=None": lambda: otel_noop.complete(REQUEST),
    }


async def measure(rounds: int, calls: int) -> dict[str, float]:
    cases = variants()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for call in cases.values():  # warm up
        for _ in range(200):
            await call()
    for _ in range(rounds):
        for name, call in cases.items():
            start = time.perf_counter()
            for _ in range(calls):
                await call()
            samples[name].append((time.perf_counter() - start) / calls * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


async def measure_openai(rounds: int, calls: int, chunks: int) -> dict[str, float]:
    """The raw openai SDK against Guard(OpenAIProvider), on one fake transport: on the SDK
    path (the default) and on the lean wire path (``wire="lean"``, the same client)."""
    from _openai_fake import fake_client
    from _openai_fake import raw_call as sdk_call
    from _openai_fake import raw_stream as sdk_stream

    from llmguard import OpenAIProvider

    client = fake_client(chunks)
    request = Request.create(model="gpt-4o-mini", user="hello")
    provider = OpenAIProvider(client)
    lean = OpenAIProvider(client, wire="lean")
    quiet = logging.getLogger("llmguard.calls.bench")
    bare = Guard(provider)
    observed = Guard(provider, [Observe(logger=quiet, callback=lambda r: None)])
    traced = Guard(provider, telemetry=otel_layer())
    lean_bare = Guard(lean)
    lean_observed = Guard(lean, [Observe(logger=quiet, callback=lambda r: None)])

    async def raw_call() -> None:
        await sdk_call(client)

    async def raw_stream() -> None:
        await sdk_stream(client)

    def guarded_stream(guard: Guard) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            async with guard.stream(request) as events:
                async for _ in events:
                    pass

        return run

    cases: dict[str, Callable[[], Awaitable[Any]]] = {
        "call: raw openai SDK": raw_call,
        "call: Guard(OpenAIProvider), no layers": lambda: bare.complete(request),
        "call: Guard(OpenAIProvider) + Observe": lambda: observed.complete(request),
        "call: Guard(OpenAIProvider) + OpenTelemetry": lambda: traced.complete(request),
        "call: lean wire, Guard, no layers": lambda: lean_bare.complete(request),
        "call: lean wire, Guard + Observe": lambda: lean_observed.complete(request),
        "stream: raw openai SDK": raw_stream,
        "stream: Guard(OpenAIProvider), no layers": guarded_stream(bare),
        "stream: Guard(OpenAIProvider) + Observe": guarded_stream(observed),
        "stream: Guard(OpenAIProvider) + OpenTelemetry": guarded_stream(traced),
        "stream: lean wire, Guard, no layers": guarded_stream(lean_bare),
        "stream: lean wire, Guard + Observe": guarded_stream(lean_observed),
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for call in cases.values():
        for _ in range(20):
            await call()
    for _ in range(rounds):
        for name, call in cases.items():
            count = calls if name.startswith("call") else max(1, calls // chunks)
            # CPU time of this thread: the fake transport is all in-process work, and
            # CPU time leaves out the time other processes on a shared machine took.
            start = time.thread_time()
            for _ in range(count):
                await call()
            per = (time.thread_time() - start) / count * 1e6
            samples[name].append(per / chunks if name.startswith("stream") else per)
    return {name: statistics.median(values) for name, values in samples.items()}


#: Cold starts, each measured in a fresh interpreter (``python -c``). The first requests
#: go to a loopback server of the parent process (plain HTTP: ``loopback_server``); the
#: lean lines also build the TLS context an https request builds (loading the CA
#: bundle), which the SDK builds with its client whatever the scheme.
_NO_TRIO = "import sys; sys.modules['trio'] = None\n"
_LEAN_TLS = "from llmguard._providers._lean_env import default_ssl_context; default_ssl_context()"
_FIRST_REQUEST = """
import os, anyio, llmguard
provider = llmguard.OpenAIProvider(
    api_key='sk-x', base_url=os.environ['LLMGUARD_BENCH_URL'], wire='lean'{client}
)
async def first() -> None:
    await provider.complete(llmguard.Request.create(model='m', user='hi'))
anyio.run(first)
{tls}
"""
_FIRST_GUARDED = (
    """
import logging, os, anyio, llmguard
provider = llmguard.OpenAIProvider(
    api_key='sk-x', base_url=os.environ['LLMGUARD_BENCH_URL'], wire='lean'
)
guard = llmguard.Guard(provider, [llmguard.Observe(logger=logging.getLogger('cold'))])
async def first() -> None:
    await guard.complete(llmguard.Request.create(model='m', user='hi'))
anyio.run(first)
"""
    + _LEAN_TLS
)
_FIRST_RAW_SDK = """
import os, anyio, openai
client = openai.AsyncOpenAI(
    api_key='sk-x', base_url=os.environ['LLMGUARD_BENCH_URL'], max_retries=0
)
async def first() -> None:
    await client.chat.completions.create(
        model='m', messages=[{'role': 'user', 'content': 'hi'}]
    )
anyio.run(first)
"""
_HTTPX2 = (
    ", http_client=__import__('httpx2').AsyncClient(timeout=60.0, follow_redirects=True, "
    "limits=__import__('httpx2').Limits(max_connections=1000, max_keepalive_connections=100))"
)
COLD = {
    "python -c pass": "pass",
    "import llmguard": "import llmguard",
    "+ OpenAIProvider(wire='lean')": (
        "import llmguard; llmguard.OpenAIProvider(api_key='sk-x', wire='lean')"
    ),
    "+ an event loop run (no request)": (
        "import anyio, llmguard; llmguard.OpenAIProvider(api_key='sk-x', wire='lean'); "
        "anyio.run(anyio.lowlevel.checkpoint)"
    ),
    "+ first request, lean client + TLS context": _FIRST_REQUEST.format(client="", tls=_LEAN_TLS),
    "first guarded call: Guard+Observe, lean, TLS": _FIRST_GUARDED,
    "the same, trio not installed": _NO_TRIO + _FIRST_GUARDED,
    "first request, lean wire on httpx2": _FIRST_REQUEST.format(client=_HTTPX2, tls=""),
    "raw openai SDK: import, client, first request": _FIRST_RAW_SDK,
    "OpenAIProvider() (the SDK path), no request": (
        "import llmguard; llmguard.OpenAIProvider(api_key='sk-x')"
    ),
}
#: The line the target (``import llmguard`` plus the fast path: at most 150 ms) is read
#: on, and the raw SDK line it is compared with.
COLD_TARGET = "first guarded call: Guard+Observe, lean, TLS"
COLD_RAW = "raw openai SDK: import, client, first request"
# httpcore2 imports trio when it is installed (it is, in the dev environment): the
# "trio not installed" line hides it, as in a deployment without trio.


def compile_llmguard() -> None:
    """Write llmguard's bytecode, as installing its wheel does (pip compiles every module
    it installs). The dev environment installs llmguard editable, and a shell with
    ``PYTHONDONTWRITEBYTECODE`` set (this project's machines set it) never writes it:
    every fresh interpreter would then compile llmguard's source again (about 12 ms
    here), which no installed deployment does. The other packages were installed by
    pip and have theirs."""
    import compileall

    import llmguard

    compileall.compile_dir(str(Path(llmguard.__file__).parent), quiet=1)


class _Answer(BaseHTTPRequestHandler):
    """A chat completion for every POST (HTTP/1.1, keep-alive), for the cold starts."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # the head and the body leave at once
    body = (
        b'{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
        b'"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":1,"completion_tokens":1}}'
    )

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def loopback_server() -> ThreadingHTTPServer:
    """A server on 127.0.0.1 answering in a thread; its base URL goes to the children."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    os.environ["LLMGUARD_BENCH_URL"] = f"http://127.0.0.1:{server.server_address[1]}/v1"
    return server


def cold_starts(runs: int) -> dict[str, tuple[float, float]]:
    """Median wall time and median CPU time (user + system, of the child) in ms of each
    ``COLD`` command, run interleaved ``runs`` times. CPU time moves less than wall time
    when other processes share the machine. llmguard's bytecode is written first, and
    one round runs before the counted ones (the operating system's file cache)."""
    compile_llmguard()
    wall: dict[str, list[float]] = {name: [] for name in COLD}
    cpu: dict[str, list[float]] = {name: [] for name in COLD}
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    for round_ in range(runs + 1):
        for name, code in COLD.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, env=env)
            if round_ == 0:
                continue
            wall[name].append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[name].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return {
        name: (statistics.median(wall[name]) * 1e3, statistics.median(cpu[name]) * 1e3)
        for name in COLD
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--import-runs", type=int, default=15)
    parser.add_argument("--openai", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--openai-calls", type=int, default=300)
    parser.add_argument("--chunks", type=int, default=100)
    args = parser.parse_args()

    for backend in ("asyncio", "trio"):
        results = anyio.run(measure, args.rounds, args.calls, backend=backend)
        base = results["provider called directly"]
        print(f"\nper-call cost on {backend}: median of {args.rounds} rounds x {args.calls} calls")
        print(f"{'variant':50} {'µs/call':>9} {'added µs':>9} {'ratio':>7}")
        for name, micros in results.items():
            print(f"{name:50} {micros:9.2f} {micros - base:9.2f} {micros / base:7.2f}")

    if args.openai:
        import openai

        figures = anyio.run(measure_openai, args.rounds, args.openai_calls, args.chunks)
        print(
            f"\nopenai {openai.__version__} on a fake transport (asyncio, CPU time): "
            f"per call, and per stream chunk ({args.chunks} chunks a stream)"
        )
        print(f"{'variant':50} {'µs':>9} {'ratio to raw SDK':>17}")
        for name, micros in figures.items():
            raw = figures[
                "call: raw openai SDK" if name.startswith("call") else "stream: raw openai SDK"
            ]
            print(f"{name:50} {micros:9.2f} {micros / raw:17.3f}")

    server = loopback_server()
    cold = cold_starts(args.import_runs)
    server.shutdown()
    empty = cold["python -c pass"][0]
    ours = cold["import llmguard"][0]
    heavy = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, llmguard; print([m for m in ('openai', 'redis', 'opentelemetry',"
            " 'genai_prices') if m in sys.modules])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(f"\ncold start, median of {args.import_runs} runs")
    print(f"python -c pass              {empty:8.1f} ms")
    print(f"python -c 'import llmguard' {ours:8.1f} ms  (adds {ours - empty:.1f} ms)")
    print(f"heavy modules loaded by import llmguard: {heavy}")
    base_wall, base_cpu = cold["python -c pass"]
    raw_cpu = cold[COLD_RAW][1]
    header = f"{'wall ms':>8} {'added':>7} {'CPU ms':>8} {'added':>7} {'÷ raw SDK':>9}"
    print(f"\n{'cold start (fresh interpreter)':46} {header}")
    for name, (wall, cpu) in cold.items():
        print(
            f"{name:46} {wall:8.1f} {wall - base_wall:7.1f} {cpu:8.1f} {cpu - base_cpu:7.1f}"
            f" {cpu / raw_cpu:9.3f}"
        )
    target_wall, target_cpu = cold[COLD_TARGET]
    verdict = "met" if target_wall <= 150 else "NOT met"
    print(
        f"target (import llmguard + the fast path <= 150 ms), {COLD_TARGET!r}: "
        f"{target_wall:.1f} ms wall, {target_cpu:.1f} ms CPU: {verdict}"
    )


if __name__ == "__main__":
    main()

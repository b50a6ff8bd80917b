"""Redis for the store tests: the shared server on 6379, private servers, a cluster.

- ``require_redis()``: the URL of the Redis on 127.0.0.1:6379, or a loud skip (a
  failure when ``CI=true``) if none answers.
- ``RedisServer``: a private ``redis-server`` on a free port, to stop, pause (SIGSTOP:
  it accepts connections and never answers) and bring back.
- ``CLUSTER``: a 3-node Redis Cluster made from the same binary on free ports, started
  on first use and stopped at the end of the session (``conftest.py``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from _redis_ping import HOST, REDIS_URL, skip_or_fail
from _redis_ping import ci as ci  # conftest.py imports it from here
from _redis_ping import redis_answers as answers  # conftest.py imports it from here

TRIO_REASON = "RedisStore runs on asyncio only (redis.asyncio); trio is refused with ConfigurationError, see test_redis.py"


def on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


_shared: bool | None = None


def require_redis() -> str:
    """The URL of the shared Redis on 6379 (skip loudly, or fail under CI, without one)."""
    global _shared
    if _shared is None:
        _shared = answers(6379)
    if not _shared:
        skip_or_fail(f"no Redis answers on {HOST}:6379 (run scripts/ensure-redis.sh)")
    return REDIS_URL


def server_binary() -> str | None:
    found = shutil.which("redis-server")
    if found is None and os.access("/usr/bin/redis-server", os.X_OK):
        found = "/usr/bin/redis-server"
    return found


def require_server_binary() -> str:
    binary = server_binary()
    if binary is None:
        skip_or_fail("no redis-server binary to start a private Redis or a Redis Cluster")
    assert binary is not None
    return binary


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port(*, with_bus: bool = False) -> int:
    """A free TCP port (and, for a cluster node, its bus port + 10000 free too)."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if not with_bus or (port + 10000 < 65536 and _port_free(port + 10000)):
            return port
    raise RuntimeError("no free port found")


class RedisServer:
    """One private ``redis-server`` process on a free port."""

    def __init__(self, *, cluster: bool = False) -> None:
        self.binary = require_server_binary()
        self.cluster = cluster
        self.port = free_port(with_bus=cluster)
        self.dir = Path(tempfile.mkdtemp(prefix=f"llmguard-redis-{self.port}-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            self.binary,
            "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
            "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log"),
        ]  # fmt: skip
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            args += ["--cluster-node-timeout", "5000"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not answers(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log}")
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        """Stop at once (SIGKILL): the store sees refused connections."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel, and nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None:
            self.resume()
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisClusterRunner:
    """A 3-primary Redis Cluster on free local ports, started once per session."""

    def __init__(self) -> None:
        self.servers: list[RedisServer] = []
        self.error: str | None = None

    @property
    def nodes(self) -> list[str]:
        return [f"{HOST}:{server.port}" for server in self.servers]

    def ensure(self) -> list[str]:
        """Start the cluster if it is not running; its nodes as ``host:port``."""
        if self.error is not None:
            raise RuntimeError(self.error)
        if not self.servers:
            try:
                self._start()
            except Exception as exc:
                self.stop()
                self.error = f"could not start a Redis Cluster: {exc}"
                raise
        return self.nodes

    def _start(self) -> None:
        binary = require_server_binary()
        self.servers = [RedisServer(cluster=True).start() for _ in range(3)]
        cli = shutil.which("redis-cli") or str(Path(binary).with_name("redis-cli"))
        result = subprocess.run(
            [cli, "--cluster", "create", *self.nodes, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed:\n{result.stdout}\n{result.stderr}"
            )
        deadline = time.monotonic() + 30
        while not all(self._state_ok(server.port) for server in self.servers):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not reach cluster_state:ok in 30 s")
            time.sleep(0.05)

    @staticmethod
    def _state_ok(port: int) -> bool:
        with socket.create_connection((HOST, port), timeout=1) as sock:
            sock.sendall(b"CLUSTER INFO\r\n")
            data = b""
            while b"cluster_state" not in data or not data.endswith(b"\r\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        return b"cluster_state:ok" in data

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self.servers = []


CLUSTER = RedisClusterRunner()


def age_keys(urls: list[str], prefix: str, seconds: float) -> None:
    """Let ``seconds`` pass for Redis's own expiry of the keys under ``prefix``.

    Redis's clock cannot be set, so each key's expiry comes ``seconds`` closer
    (``PEXPIRE``), and a key whose expiry that passes is deleted, as Redis would have
    expired it. With a store's ``_test_clock`` moved by as much, the scripts' time and
    Redis's expiry move together. ``urls``: every node (each scans its own keys).
    """
    shift = round(seconds * 1000)
    if shift <= 0:
        return
    for url in urls:
        with redis.Redis.from_url(url) as client:
            for key in client.scan_iter(match=f"{prefix}*", count=1000):
                left = client.pttl(key)
                if left < 0:  # -1: no expiry; -2: already gone
                    continue
                if left <= shift:
                    client.delete(key)
                else:
                    client.pexpire(key, left - shift)


async def delete_prefix(client: Any, prefix: str) -> int:
    """Delete every key that starts with ``prefix`` (on every node of a cluster)."""
    keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
    for key in keys:
        await client.delete(key)
    return len(keys)

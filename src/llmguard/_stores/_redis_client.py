"""The redis-py side of ``RedisStore``: the lazy import, clients with our bounds, scripts.

redis is imported here, inside functions, and only when a ``RedisStore`` is made:
``import llmguard`` never loads it. The clients we build answer within the store's
``timeout``: socket and connect timeouts are the timeout itself, the pool waits no
longer for a free connection, and redis-py retries nothing (its defaults retry ten
times with backoff, seconds in all); ``RedisStore`` retries an idempotent command once
on a dropped connection, within the same bound.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from importlib import resources
from types import ModuleType
from typing import TYPE_CHECKING

from .._errors import ConfigurationError

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster

__all__ = ["SCRIPTS", "build_client", "build_cluster", "import_redis", "script_source"]

#: The Lua scripts in ``lua/``, each loaded with ``prelude.lua`` in front.
SCRIPTS = ("ledger", "cache", "state")

INSTALL_HINT = 'RedisStore needs redis-py: pip install "llmguard[redis]"'


def import_redis() -> ModuleType:
    """The ``redis`` package, or an ``ImportError`` that says what to install."""
    try:
        import redis
        import redis.asyncio
        import redis.asyncio.cluster
        import redis.asyncio.retry
        import redis.backoff
        import redis.exceptions
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return redis


@functools.cache
def script_source(name: str) -> str:
    """The text of script ``name``: the prelude, then the script (read once)."""
    folder = resources.files("llmguard._stores").joinpath("lua")
    prelude = folder.joinpath("prelude.lua").read_text(encoding="utf-8")
    body = folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    return f"{prelude}\n{body}"


def _no_retry(redis: ModuleType) -> object:
    return redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 0)


def build_client(url: str, *, timeout: float, max_connections: int) -> Redis:
    """A ``redis.asyncio.Redis`` on its own blocking pool, bounded by ``timeout``."""
    redis = import_redis()
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=_no_retry(redis),
    )
    client: Redis = redis.asyncio.Redis.from_pool(pool)
    return client


def build_cluster(
    nodes: str | Sequence[str | tuple[str, int]], *, timeout: float, max_connections: int
) -> RedisCluster:
    """A ``redis.asyncio.RedisCluster`` from a URL or ``host:port`` startup nodes."""
    redis = import_redis()
    options = {
        "max_connections": max_connections,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": _no_retry(redis),
    }
    cluster_class = redis.asyncio.cluster.RedisCluster
    if isinstance(nodes, str):
        client: RedisCluster = cluster_class.from_url(nodes, **options)
        return client
    startup = []
    for node in nodes:
        host, port = node if isinstance(node, tuple) else _host_port(node)
        startup.append(redis.asyncio.cluster.ClusterNode(host, port))
    client = cluster_class(startup_nodes=startup, **options)
    return client


def _host_port(node: str) -> tuple[str, int]:
    host, sep, port = node.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigurationError(f"a cluster node is 'host:port' or (host, port), not {node!r}")
    return host.strip("[]"), int(port)

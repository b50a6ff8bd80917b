"""The shared Redis of the tests: whether it answers, and the URL or a loud skip.

- ``redis_answers()``: one PING over a plain socket, no client library.
- ``skip_or_fail(reason)``: a loud skip, or a failure when ``CI=true`` (CI must run
  every Redis test; ``scripts/ensure-redis.sh`` starts one).
- ``require_redis()``: the URL of the Redis on 127.0.0.1:6379, or ``skip_or_fail``.

The test packages import it by its top-level name: pytest puts ``tests/`` on
``sys.path`` (``tests/conftest.py`` and the test packages' root, in its default
``prepend`` import mode), as it puts ``tests/stores/`` there for ``_redis_servers``.
"""

from __future__ import annotations

import os
import socket

import pytest

__all__ = ["REDIS_URL", "ci", "redis_answers", "require_redis", "skip_or_fail"]

HOST = "127.0.0.1"
REDIS_URL = f"redis://{HOST}:6379/0"


def redis_answers(port: int = 6379, host: str = HOST, timeout: float = 0.5) -> bool:
    """True when a Redis on ``host:port`` answers PING within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def ci() -> bool:
    """Whether this run is CI's (``CI=true``), where no Redis test may skip."""
    return os.environ.get("CI", "").lower() == "true"


def skip_or_fail(reason: str) -> None:
    """Skip loudly, or fail when ``CI=true`` (CI must run every Redis test)."""
    if ci():
        pytest.fail(f"{reason} (CI=true: Redis tests may not skip)", pytrace=False)
    pytest.skip(f"!!! REDIS TESTS SKIPPED: {reason} !!!")


def require_redis() -> str:
    """The URL of the shared Redis on 6379 (skip loudly, or fail under CI, without one)."""
    if not redis_answers():
        skip_or_fail(f"no Redis answers on {HOST}:6379 (run scripts/ensure-redis.sh)")
    return REDIS_URL

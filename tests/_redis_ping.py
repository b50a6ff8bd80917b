"""Whether a Redis answers: one PING over a plain socket, no client library.

The test packages import it by its top-level name: pytest puts ``tests/`` on
``sys.path`` (``tests/conftest.py`` and the test packages' root, in its default
``prepend`` import mode), as it puts ``tests/stores/`` there for ``_redis_servers``.
"""

from __future__ import annotations

import socket

__all__ = ["redis_answers"]


def redis_answers(port: int = 6379, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when a Redis on ``host:port`` answers PING within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False

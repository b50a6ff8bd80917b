"""Open a store from a URL (for ``python -m llmguard`` and configuration files).

- ``memory:``: a new, empty ``MemoryStore`` (valid, but it holds nothing yet);
- ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (SQLAlchemy's
  spelling): a ``SQLiteStore`` on that file;
- ``redis://``, ``rediss://`` or ``unix://`` URLs: a ``RedisStore`` (``prefix`` as
  the application uses; needs ``pip install "llmguard[redis]"``).
"""

from __future__ import annotations

import os
from typing import Any

from .._errors import ConfigurationError

__all__ = ["open_store"]

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def open_store(
    url: str, *, prefix: str | None = None, timeout: float = 2.0, create: bool = True
) -> Any:
    """The store ``url`` names (see the module docstring); raises ``ConfigurationError``.

    ``create=False`` refuses a SQLite file that does not exist (a reader must not
    create an empty database because of a typo).
    """
    if url in ("memory:", "memory://"):
        from .memory import MemoryStore

        return MemoryStore()
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if not path:
            raise ConfigurationError("a sqlite URL needs a path: sqlite:///budget.db")
        if not create and not os.path.exists(path):
            raise ConfigurationError(f"no SQLite file at {path!r}")
        from .sqlite import SQLiteStore

        return SQLiteStore(path, timeout=timeout)
    if url.startswith(_REDIS_SCHEMES):
        from .redis import RedisStore

        if prefix is None:
            return RedisStore.from_url(url, timeout=timeout)
        return RedisStore.from_url(url, prefix=prefix, timeout=timeout)
    raise ConfigurationError(
        f"unknown store URL {url!r}: use memory:, sqlite:///path.db, or redis://host:6379/0"
    )

"""Store tests: Redis servers for the whole session, and the ``redis`` marker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _redis_servers import CLUSTER, answers, ci, require_server_binary, server_binary

REDIS_PARAMS = {"redis", "redis-cluster"}


def pytest_report_header(config: pytest.Config) -> list[str]:
    shared = "answers" if answers(6379) else "!!! DOES NOT ANSWER: Redis tests will skip !!!"
    binary = server_binary() or "!!! NOT FOUND: cluster and outage tests will skip !!!"
    lines = [f"redis on 127.0.0.1:6379: {shared}", f"redis-server binary: {binary}"]
    if ci():
        lines.append("CI=true: a missing Redis fails the Redis tests instead of skipping them")
    return lines


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Contract tests run against a Redis store get the ``redis`` marker."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("store") in REDIS_PARAMS:
            item.add_marker(pytest.mark.redis)


@pytest.fixture(scope="session", autouse=True)
def _stop_redis_cluster() -> Iterator[None]:
    """Whoever starts the session's Redis Cluster, it stops when the session ends."""
    yield
    CLUSTER.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> list[str]:
    """The nodes (``host:port``) of a 3-node Redis Cluster started for this session."""
    require_server_binary()
    return CLUSTER.ensure()

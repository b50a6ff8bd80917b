"""One process of the cross-process cache tests (run by ``test_cache_redis.py``).

    python _cache_redis_worker.py URL NAMESPACE WORKDIR NAME MODE CONCURRENT

Builds a Guard with ``Cache(RedisStore, lock=True)`` over a provider that notes each
upstream call in ``WORKDIR/calls`` (one line per call, ``O_APPEND``), says it is ready
(``WORKDIR/ready-NAME``), waits for ``WORKDIR/go``, then sends ``CONCURRENT`` identical
requests at once and prints their answers as JSON. ``MODE`` is ``answer`` (the
upstream call takes 0.3 s) or ``hang`` (it never ends: the test kills this process
while it holds the lock).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio

from llmguard import Cache, FunctionProvider, Guard, RedisStore, Request, Response

LOCK_TTL = 1.5


async def main(url: str, namespace: str, workdir: Path, name: str, mode: str, n: int) -> None:
    calls = workdir / "calls"

    async def upstream(request: Request) -> Response:
        fd = os.open(calls, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{name}\n".encode())
        finally:
            os.close(fd)
        if mode == "hang":
            await anyio.sleep_forever()
        await anyio.sleep(0.3)
        return Response(text=f"answered by {name}", finish_reason="stop")

    async with RedisStore.from_url(url, timeout=5.0) as store:  # stampede semantics, not bounds
        cache = Cache(store, namespace=namespace, lock=True, lock_ttl=LOCK_TTL, lock_poll=0.02)
        guard = Guard(FunctionProvider(upstream), [cache], model="m", timeout=None)
        (workdir / f"ready-{name}").touch()
        # Another process starts us: a file is the signal (no Event crosses processes).
        while not (workdir / "go").exists():  # noqa: ASYNC110
            await anyio.sleep(0.005)
        answers: list[str] = []

        async def one() -> None:
            answers.append((await guard.complete(user="the popular question")).text)

        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(one)
    print(json.dumps(answers))


if __name__ == "__main__":
    url, namespace, workdir, name, mode, n = sys.argv[1:7]
    anyio.run(main, url, namespace, Path(workdir), name, mode, int(n), backend="asyncio")

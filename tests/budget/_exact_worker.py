"""One worker process of the exactness test: N concurrent guarded calls, then a report.

Usage: python _exact_worker.py STORE_URL PREFIX BUDGET LIMIT CALLS SEED FOLDER INDEX

Waits for FOLDER/go (so every worker starts at once), runs CALLS concurrent calls on
one budget, and prints one JSON line: each call's settled tokens, or the error class.
The fake provider reports usage equal to the call's worst case, sizes vary by call.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import anyio

from llmguard import (
    Budget,
    BudgetExceeded,
    FunctionProvider,
    Guard,
    Limit,
    Pricing,
    RedisStore,
    Request,
    Response,
    SQLiteStore,
    Usage,
)
from llmguard._budget_estimate import heuristic_input_tokens


async def main(
    url: str, prefix: str, name: str, limit: int, calls: int, seed: int, folder: Path, index: int
) -> None:
    rng = random.Random(seed)
    if url.startswith("redis://"):
        store: RedisStore | SQLiteStore = RedisStore.from_url(url, prefix=prefix, timeout=10.0)
    else:
        store = SQLiteStore(url.removeprefix("sqlite:///"), timeout=30.0)
    delays = [rng.random() / 100 for _ in range(calls)]

    async def answer(request: Request) -> Response:
        await anyio.sleep(delays[len(request.last_user_text) % calls])
        usage = Usage(
            input_tokens=heuristic_input_tokens(request),
            output_tokens=request.max_output_tokens or 0,
        )
        return Response(text="ok", usage=usage)

    budget = Budget(
        Limit(tokens=limit, per="day", name=name, alerts=()),
        store=store,
        pricing=Pricing(database=False),
        input_tokens="heuristic",
    )
    guard = Guard(FunctionProvider(answer), [budget], model="m", timeout=None)
    requests = [
        Request.create(
            model="m", user="x" * rng.randint(1, 80), max_output_tokens=rng.randint(10, 120)
        )
        for _ in range(calls)
    ]
    outcomes: list[int | str] = [""] * calls

    async def call(i: int) -> None:
        try:
            response = await guard.complete(requests[i])
            outcomes[i] = response.usage.total_tokens
        except BudgetExceeded:
            outcomes[i] = "BudgetExceeded"
        except Exception as exc:  # reported, and the test fails on it
            outcomes[i] = type(exc).__name__

    async with anyio.create_task_group() as tg:
        for i in range(calls):
            tg.start_soon(call, i)
    await store.aclose()
    worst = [heuristic_input_tokens(r) + (r.max_output_tokens or 0) for r in requests]
    print(json.dumps({"outcomes": outcomes, "largest": max(worst)}))


if __name__ == "__main__":
    url, prefix, name, limit, calls, seed, folder, index = sys.argv[1:]
    (Path(folder) / f"ready-{index}").touch()  # imported: wait for every worker
    while not (Path(folder) / "go").exists():
        time.sleep(0.005)
    anyio.run(main, url, prefix, name, int(limit), int(calls), int(seed), Path(folder), int(index))

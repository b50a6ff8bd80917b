"""Exactness across processes, as the ``limits`` project tests it: 1,000 concurrent
guarded calls from 4 OS processes against one budget, on Redis and on SQLite.

Settled usage is at most the limit and at least the limit minus the largest single
call (so refusing everything fails), every refused call raised ``BudgetExceeded``, and
the per-call settlements add up to exactly what the store holds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import anyio
import pytest

from llmguard import RedisStore, SQLiteStore, Window
from llmguard._budget_limits import ledger_key

from .conftest import REDIS_URL, delete_prefix, need_redis

WORKER = Path(__file__).with_name("_exact_worker.py")
PROCESSES = 4
CALLS = 250  # per process: 1,000 in all
LIMIT = 25_000  # about half of what the 1,000 calls ask for


def run_workers(url: str, prefix: str, name: str, folder: Path) -> list[dict[str, object]]:
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                url,
                prefix,
                name,
                str(LIMIT),
                str(CALLS),
                str(1000 + i),
                str(folder),
                str(i),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(folder.glob("ready-*"))) < PROCESSES:  # every worker imported and set up
            assert time.monotonic() < deadline, "workers did not get ready"
            assert all(w.poll() is None for w in workers), [w.communicate() for w in workers]
            time.sleep(0.01)
        (folder / "go").touch()
        reports = []
        for worker in workers:
            out, err = worker.communicate(timeout=120)
            assert worker.returncode == 0, err
            reports.append(json.loads(out.strip().splitlines()[-1]))
        return reports
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()


def check(reports: list[dict[str, object]], stored: int) -> None:
    outcomes = [o for report in reports for o in report["outcomes"]]  # type: ignore[attr-defined]
    assert len(outcomes) == PROCESSES * CALLS
    settled = [o for o in outcomes if isinstance(o, int)]
    refused = [o for o in outcomes if not isinstance(o, int)]
    assert set(refused) == {"BudgetExceeded"}, set(refused)  # every refusal, and only refusals
    largest = max(int(report["largest"]) for report in reports)  # type: ignore[call-overload]
    total = sum(settled)
    assert total == stored  # the calls' settlements are exactly the store's figure
    assert total <= LIMIT
    assert total >= LIMIT - largest, (total, LIMIT, largest)
    assert len(settled) > 100 and len(refused) > 100


@pytest.mark.redis
def test_exact_on_redis_from_four_processes() -> None:
    need_redis("asyncio")
    prefix = f"llmguard-test:{uuid.uuid4().hex}:"
    name = f"exact-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as folder:
        reports = run_workers(REDIS_URL, prefix, name, Path(folder))

    async def stored() -> int:
        store = RedisStore.from_url(REDIS_URL, prefix=prefix, timeout=5.0)
        try:
            result = await store.usage(
                ledger_key(name, "tokens", "global"), window=Window.fixed(86400)
            )
            assert result.reserved == 0
            return result.used
        finally:
            await delete_prefix(store._client, prefix)
            await store.aclose()

    check(reports, anyio.run(stored))


def test_exact_on_sqlite_from_four_processes() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "budget.db"
        name = "exact"
        reports = run_workers(f"sqlite:///{path}", "", name, Path(folder))

        async def stored() -> int:
            async with SQLiteStore(path, timeout=30.0) as store:
                result = await store.usage(
                    ledger_key(name, "tokens", "global"), window=Window.fixed(86400)
                )
                assert result.reserved == 0
                return result.used

        check(reports, anyio.run(stored))

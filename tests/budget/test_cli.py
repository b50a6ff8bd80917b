"""``python -m llmguard usage --store URL``: usage per scope, as a table."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from pathlib import Path

import anyio
import pytest

import llmguard
from llmguard import Budget, Guard, Limit, SQLiteStore, Usage
from llmguard.__main__ import main
from llmguard.testing import FakeProvider, FakeReply

from .conftest import REDIS_URL, delete_prefix, need_redis

USAGE = Usage(input_tokens=100, output_tokens=50)


async def spend(store: object) -> None:
    budget = Budget(
        Limit(tokens=50_000, per="hour", scope="user", name="hourly"),
        Limit(usd="5", per="day", name="daily"),
        store=store,  # type: ignore[arg-type]
    )
    guard = Guard(
        FakeProvider(default=FakeReply.of_text("hi", usage=USAGE)), [budget], model="gpt-4o"
    )
    for user in ("alice", "bob", "alice"):
        with llmguard.context(user=user):
            await guard.complete(user="hi", max_output_tokens=100)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    path = tmp_path / "budget.db"

    async def fill() -> None:
        async with SQLiteStore(path, timeout=5.0) as store:
            await spend(store)

    anyio.run(fill)
    return f"sqlite:///{path}"


def run(*argv: str) -> str:
    out = io.StringIO()
    assert main(list(argv), out=out) == 0
    return out.getvalue()


def test_prints_usage_per_scope_as_a_table(sqlite_url: str) -> None:
    lines = run("usage", "--store", sqlite_url).splitlines()
    assert lines[0].split() == [
        "budget",
        "scope",
        "unit",
        "limit",
        "used",
        "reserved",
        "remaining",
        "resets",
        "at",
        "(UTC)",
    ]
    assert set(lines[1]) == {"-", " "}
    rows = [line.split() for line in lines[2:]]
    assert [row[:3] for row in rows] == [
        ["daily", "global", "usd"],
        ["hourly", "user=alice", "tokens"],
        ["hourly", "user=bob", "tokens"],
    ]
    assert rows[1][3:7] == ["50,000", "300", "0", "49,700"]
    cost = llmguard.Pricing().cost_micros("gpt-4o", USAGE)
    assert cost is not None and rows[0][4] == f"${3 * cost / 1_000_000:.6f}"


def test_json_and_one_budget(sqlite_url: str) -> None:
    data = json.loads(run("usage", "--store", sqlite_url, "--budget", "hourly", "--json"))
    assert [(d["scope"], d["used"], d["remaining"]) for d in data] == [
        ("user=alice", 300, 49_700),
        ("user=bob", 150, 49_850),
    ]
    assert data[0]["unit"] == "tokens" and data[0]["reset_at"].endswith("+00:00")


def test_runs_as_a_module(sqlite_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llmguard", "usage", "--store", sqlite_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "user=alice" in result.stdout and "hourly" in result.stdout


def test_an_empty_store_says_so() -> None:
    assert run("usage", "--store", "memory:") == "no budget usage recorded in this store\n"


def test_a_bad_url_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["usage", "--store", "postgres://db"])
    assert exited.value.code == 2
    assert "unknown store URL" in capsys.readouterr().err
    missing = tmp_path / "typo.db"
    with pytest.raises(SystemExit) as exited:
        main(["usage", "--store", f"sqlite:///{missing}"])
    assert exited.value.code == 2
    assert "no SQLite file" in capsys.readouterr().err
    assert not missing.exists()  # reading never creates a database
    with pytest.raises(SystemExit):
        main(["usage", "--store", "sqlite:///"])


@pytest.mark.redis
def test_a_store_that_does_not_answer_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("redis")
    assert main(["usage", "--store", "redis://127.0.0.1:1/0"], out=io.StringIO()) == 1
    assert "unavailable" in capsys.readouterr().err


@pytest.mark.redis
def test_reads_a_redis_store_with_its_prefix() -> None:
    need_redis("asyncio")
    prefix = f"llmguard-test:{uuid.uuid4().hex}:"

    async def fill() -> None:
        async with llmguard.RedisStore.from_url(REDIS_URL, prefix=prefix, timeout=5.0) as store:
            await spend(store)

    async def clean() -> None:
        async with llmguard.RedisStore.from_url(REDIS_URL, prefix=prefix, timeout=5.0) as store:
            await delete_prefix(store._client, prefix)

    anyio.run(fill)
    try:
        output = run("usage", "--store", REDIS_URL, "--prefix", prefix)
        assert "user=alice" in output and "user=bob" in output
        assert "no budget usage" in run(
            "usage", "--store", REDIS_URL, "--prefix", prefix + "other:"
        )
    finally:
        anyio.run(clean)

"""``python -m llmguard usage --store URL``: budget usage per scope, as a table.

Reads the index that budgets keep in their store (see ``llmguard.budget_report``), so
it needs nothing of the application but the store's URL (``memory:``,
``sqlite:///path.db``, ``redis://host:6379/0``). Exit status: 0, or 1 when the store
does not answer, or 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from decimal import Decimal
from typing import TextIO

import anyio

from ._budget_index import budget_report
from ._budget_limits import BudgetStatus
from ._errors import ConfigurationError, LLMGuardError
from ._stores._url import open_store

__all__ = ["main"]

COLUMNS = ("budget", "scope", "unit", "limit", "used", "reserved", "remaining", "resets at (UTC)")


def _amount(status: BudgetStatus, value: int) -> str:
    if status.unit == "usd_micros":
        return f"${Decimal(value) / 1_000_000:.6f}"
    return f"{value:,}"


def _row(status: BudgetStatus) -> tuple[str, ...]:
    reset = "never" if status.reset_at is None else status.reset_at.strftime("%Y-%m-%d %H:%M:%S")
    return (
        status.name,
        status.scope,
        "usd" if status.unit == "usd_micros" else status.unit,
        _amount(status, status.limit),
        _amount(status, status.used),
        _amount(status, status.reserved),
        _amount(status, status.remaining),
        reset,
    )


def render_table(statuses: Sequence[BudgetStatus]) -> str:
    """The statuses as an aligned text table (amounts right-aligned)."""
    rows = [COLUMNS, *(_row(s) for s in statuses)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    numeric = {3, 4, 5, 6}
    lines = []
    for number, row in enumerate(rows):
        cells = [
            cell.rjust(widths[i]) if i in numeric and number else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _as_json(statuses: Sequence[BudgetStatus]) -> str:
    return json.dumps(
        [
            {
                "budget": s.name,
                "scope": s.scope,
                "unit": s.unit,
                "limit": s.limit,
                "used": s.used,
                "reserved": s.reserved,
                "remaining": s.remaining,
                "reset_at": None if s.reset_at is None else s.reset_at.isoformat(),
            }
            for s in statuses
        ],
        indent=2,
    )


async def _read(url: str, prefix: str | None, budget: str | None) -> list[BudgetStatus]:
    store = open_store(url, prefix=prefix, create=False)
    try:
        return await budget_report(store, name=budget)
    finally:
        close = getattr(store, "aclose", None)
        if close is not None:
            await close()


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit status."""
    out = out or sys.stdout
    parser = argparse.ArgumentParser(prog="python -m llmguard", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    usage = commands.add_parser("usage", help="budget usage per scope, as a table")
    usage.add_argument("--store", required=True, help="memory:, sqlite:///path.db, redis://...")
    usage.add_argument(
        "--prefix", default=None, help="the RedisStore key prefix, if not the default"
    )
    usage.add_argument("--budget", default=None, help="show one budget (by name)")
    usage.add_argument("--json", action="store_true", help="print JSON (amounts as integers)")
    args = parser.parse_args(argv)
    try:
        statuses = anyio.run(_read, args.store, args.prefix, args.budget)
    except ConfigurationError as exc:
        parser.error(str(exc))
    except LLMGuardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(_as_json(statuses), file=out)
    elif not statuses:
        print("no budget usage recorded in this store", file=out)
    else:
        print(render_table(statuses), file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Settling a ``Ticket`` at the end of a call: every line's settle (or release).

Batched (``settle_many``), at once (an ``InstantLedger``) or one command per line;
then the alerts for the thresholds reached and the index entries of new scopes.
A line whose price became unknown is charged the worst case it reserved.
(``Ticket.close`` works out the spend and runs these, shielded and bounded.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._budget_limits import Line
from ._errors import StoreUnavailable
from ._stores._roles import InstantLedger, LedgerEntry, LedgerResult

if TYPE_CHECKING:
    from ._budget_engine import LineKey
    from ._budget_ticket import Ticket

__all__ = ["after_settle", "settle", "settle_entries", "settle_now"]

_entry = tuple.__new__  # ``LedgerEntry(...)`` without its Python-level ``__new__``


def settle_entries(
    ticket: Ticket, tokens: int, micros: int | None
) -> tuple[list[LedgerEntry], list[LineKey]]:
    """The batched settle of every line (``amount`` ``None``: release), and its keys."""
    entries: list[LedgerEntry] = []
    keys: list[LineKey] = []
    reserved = ticket._reserved
    for index, key in enumerate(ticket._keys):
        if key is None:
            continue
        line = key[0]
        if line.unit == "tokens":
            amount: int | None = tokens
        else:
            # A price that became unknown is charged the worst case it reserved.
            amount = micros if micros is not None else reserved[index] or None
        if not amount:
            if not reserved[index]:
                continue  # nothing to settle, nothing held
            amount = None  # release
        entries.append(_entry(LedgerEntry, (key[1], line.limit.window, amount, None)))
        keys.append(key)
    return entries, keys


def _settle_entry(
    ticket: Ticket, index: int, line: Line, tokens: int, micros: int | None
) -> int | None:
    """What to settle on line ``index``: an amount, ``None`` to release, ``0``: nothing."""
    if line.unit == "tokens":
        amount: int | None = tokens
    else:
        # A price that became unknown is charged the worst case it reserved.
        amount = micros if micros is not None else ticket._reserved[index] or None
    if amount:
        return amount
    return None if ticket._reserved[index] else 0


def settle_now(
    ticket: Ticket, instant: InstantLedger, tokens: int, micros: int | None
) -> list[tuple[LineKey, LedgerResult]] | None:
    """Settle at once; what ``after_settle`` must then do (``None``: nothing)."""
    entries, keys = settle_entries(ticket, tokens, micros)
    if not entries:
        return None
    figures = instant.settle_all_now(ticket.rid, entries)
    engine = ticket._engine
    engine.store_answered()
    alerts, index_keeper = engine.alerts, engine.index
    for (line, _, scope, _), (used, _, _) in zip(keys, figures, strict=True):
        if alerts.due(line, used) or not index_keeper.knows(line, scope):
            break
    else:
        return None  # the common case: no alert reached, every index entry written
    return [
        (key, LedgerResult(ok=True, used=used, reserved=held, limit=None, reset_at=reset))
        for key, (used, held, reset) in zip(keys, figures, strict=True)
    ]


async def settle(ticket: Ticket, tokens: int, micros: int | None) -> None:
    """Settle (or release) every line: one ``settle_many``, or one command per line."""
    engine = ticket._engine
    batch = engine.batch
    done: list[tuple[LineKey, LedgerResult]] = []
    if batch is not None:
        entries, keys = settle_entries(ticket, tokens, micros)
        if not entries:
            return
        try:
            results = await batch.settle_many(ticket.rid, entries)
        except StoreUnavailable as exc:
            line, _, scope, _ = keys[0]
            engine.settle_failed(exc, line.name, scope, entries[0].amount or 0)
            return
        engine.store_answered()
        done = list(zip(keys, results, strict=True))
    else:
        store = engine.store
        for index, key in enumerate(ticket._keys):
            if key is None:
                continue
            line, ledger, scope, _ = key
            amount = _settle_entry(ticket, index, line, tokens, micros)
            try:
                if amount:
                    result = await store.settle(
                        ledger, ticket.rid, amount, window=line.limit.window
                    )
                elif amount is None:
                    result = await store.release(ledger, ticket.rid, window=line.limit.window)
                else:
                    continue
            except StoreUnavailable as exc:
                engine.settle_failed(exc, line.name, scope, amount or 0)
                continue
            engine.store_answered()
            done.append((key, result))
    await after_settle(ticket, done)


async def after_settle(ticket: Ticket, done: list[tuple[LineKey, LedgerResult]]) -> None:
    """Alerts for the thresholds reached, index entries for new scopes."""
    alerts, index_keeper = ticket._engine.alerts, ticket._engine.index
    for (line, ledger, scope, _), result in done:
        if alerts.due(line, result.used):
            await alerts.settled(line, ledger, scope, result)
        if not index_keeper.knows(line, scope):
            await index_keeper.remember(line, scope)

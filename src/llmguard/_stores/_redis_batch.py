"""``RedisStore``'s batched ledger commands (``reserve_many``, ``settle_many``).

Several keys under one reservation id go to the ledger script in one call (op
``reserve_many``, ``settle_many``): one round trip, one atomic step, all or none. The
script checks every entry's window before it writes anything, and on a refusal it
undoes the holds the command made (``lua/ledger.lua``).

On a Redis Cluster a script may only touch keys of one slot. Every ledger key has its
own hash tag, so the keys of one batch usually sit in several slots: then the batch
falls back to one script call per key (each atomic on its key), and a refusal undoes
the holds made before it with op ``drop_many`` (which forgets a hold without closing
the id, as the one-call batch does). The answers are the same; what differs is that
other clients may see a hold between two of those calls, as with the single commands.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from .._errors import StoreUnavailable
from ._memory_ledger import _check_amount
from ._roles import LedgerEntry, LedgerResult

if TYPE_CHECKING:
    from .redis import RedisStore

__all__ = ["BatchRunner", "check_reserve_entries", "check_settle_entries"]


def check_reserve_entries(entries: Sequence[LedgerEntry]) -> None:
    """Refuse a bad entry before anything is sent (as the other stores do)."""
    for entry in entries:
        if entry.amount is None or entry.limit is None:
            raise ValueError(f"reserve_many needs an amount and a limit: {entry!r}")
        _check_amount(entry.amount)


def check_settle_entries(entries: Sequence[LedgerEntry]) -> None:
    for entry in entries:
        if entry.amount is not None:
            _check_amount(entry.amount)


class BatchRunner:
    """A ``RedisStore``'s batched commands: builds each batch's keys and arguments,
    sends it through the store's ``_eval`` (its bounds, its outage mapping) and reads
    the answer. ``key_slot`` (a cluster's) tells when keys sit in several slots."""

    def __init__(self, store: RedisStore, key_slot: Callable[[bytes], int] | None) -> None:
        self._store = store
        self._key_slot = key_slot

    async def reserve_many(
        self, rid: str, entries: Sequence[LedgerEntry], hold: float
    ) -> list[LedgerResult]:
        """``reserve_many`` of checked entries."""
        if not entries:
            return []
        if self.one_slot(entries):
            return (
                await self.many("reserve_many", rid, entries, ["reserve"] * len(entries), hold)
            )[0]
        return await self._reserve_each(rid, entries, hold)

    async def settle_many(self, rid: str, entries: Sequence[LedgerEntry]) -> list[LedgerResult]:
        """``settle_many`` of checked entries."""
        ops = ["release" if entry.amount is None else "settle" for entry in entries]
        if not entries:
            return []
        if self.one_slot(entries):
            return (await self.many("settle_many", rid, entries, ops, 0.0))[0]
        results: list[LedgerResult] = []
        for entry, op in zip(entries, ops, strict=True):
            results += (await self.many("settle_many", rid, [entry], [op], 0.0))[0]
        return results

    def one_slot(self, entries: Sequence[LedgerEntry]) -> bool:
        """Whether one script may take every entry's keys (always, off a cluster)."""
        key_slot = self._key_slot
        if key_slot is None:
            return True
        layout = self._store._keys
        found = {key_slot(layout.ledger(e.key, e.window)[0].encode()) for e in entries}
        return len(found) == 1

    async def many(
        self,
        command: str,
        rid: str,
        entries: Sequence[LedgerEntry],
        ops: Sequence[str],
        hold: float,
    ) -> tuple[list[LedgerResult], list[int]]:
        """One batched script call: the results, and the entries it made a hold on."""
        store = self._store
        now_arg, at = store._now_arg()
        limits = [entry.limit if command == "reserve_many" else None for entry in entries]
        for _ in range(3):
            keys, tail = self.request(entries, ops, at)
            args = [now_arg, command, rid, repr(hold), *tail]
            reply = await store._eval("ledger", command, keys, args)
            missed = len(reply) == 2 and reply[0] == -1
            server_now = float(reply[1] if missed else reply[0])
            if not now_arg:
                from .redis import wall_clock  # looked up now: tests move it

                store._skew = server_now - wall_clock()
            if not missed:
                return self.results(reply, limits)
            at = server_now  # our guess of the server's time was off: use its own
        raise store._outage.failed(
            RuntimeError(f"window bounds kept missing the server's time {at!r}"),
            "the server's clock moved while the window was computed",
        )

    async def _reserve_each(
        self, rid: str, entries: Sequence[LedgerEntry], hold: float
    ) -> list[LedgerResult]:
        """``reserve_many`` one key at a time (keys in several cluster slots): a refusal
        or a failure drops the holds made before it, as the one-call batch does."""
        results: list[LedgerResult] = []
        made: list[LedgerEntry] = []
        try:
            for entry in entries:
                answer, held = await self.many("reserve_many", rid, [entry], ["reserve"], hold)
                results += answer
                if held:
                    made.append(entry)
                if not answer[0].ok:
                    await self._drop(rid, made)
                    break
        except BaseException:
            with anyio.CancelScope(shield=True), contextlib.suppress(StoreUnavailable):
                await self._drop(rid, made)  # each call bounded by the store's timeout
            raise
        return results

    async def _drop(self, rid: str, made: list[LedgerEntry]) -> None:
        """Forget the holds ``made`` by a reserve (without closing the id)."""
        while made:
            await self.many("drop_many", rid, made[-1:], ["drop"], 0.0)
            made.pop()

    def request(
        self, entries: Sequence[LedgerEntry], ops: Sequence[str], at: float
    ) -> tuple[list[str], list[str]]:
        """KEYS and the per-entry ARGV (after ``[now, op, rid, hold]``) of a batch."""
        layout, windows = self._store._keys, self._store._windows
        keys: list[str] = []
        args: list[str] = []
        for entry, op in zip(entries, ops, strict=True):
            names = layout.ledger(entry.key, entry.window)
            keys.extend(names)
            amount = "0" if entry.amount is None else str(int(entry.amount))
            limit = "" if entry.limit is None else str(int(entry.limit))
            args += [str(len(names)), op, amount, limit]
            args += windows.args(entry.window, at)
        return keys, args

    @staticmethod
    def results(
        reply: Sequence[Any], limits: Sequence[int | None]
    ) -> tuple[list[LedgerResult], list[int]]:
        """The results of a batch's reply and the indexes of the holds it made."""
        results: list[LedgerResult] = []
        made: list[int] = []
        for index in range(0, (len(reply) - 1) // 4):
            status, used, reserved, reset_at = reply[1 + 4 * index : 5 + 4 * index]
            status = int(status)
            if status == 2:
                made.append(index)
            results.append(
                LedgerResult(
                    ok=status != 0,
                    used=int(used),
                    reserved=int(reserved),
                    limit=limits[index],
                    reset_at=float(reset_at),
                )
            )
        return results, made

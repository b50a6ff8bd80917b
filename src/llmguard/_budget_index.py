"""Which budgets and scopes a store holds, so usage can be read without the app's code.

The ledger role has no way to list keys, so each budget also writes a small index
through the store's ``SharedState`` role (compare-and-set, so concurrent workers never
lose each other's entries):

- ``budget-index``: every budget line's name, unit, limit and window;
- ``budget-scopes:<name>:<unit>``: the scopes seen, the latest
  ``MAX_SCOPES`` of them.

A process writes an entry the first time it settles a line for a scope (after the
call, off the refusal path), so a store whose budgets were used lists them.
``budget_report(store)`` (and ``python -m llmguard usage``) reads it back.
"""

from __future__ import annotations

import json
import math
import random
import threading
from collections.abc import Callable
from typing import Any

import anyio
from cachetools import LRUCache

from ._budget_limits import BudgetStatus, Line, Unit, ledger_key, reset_time
from ._errors import StoreUnavailable
from ._stores._roles import BudgetLedger, LedgerResult, SharedState, Window

__all__ = ["INDEX_KEY", "MAX_SCOPES", "IndexKeeper", "budget_report", "status_of"]

INDEX_KEY = "budget-index"
#: At most this many scopes are listed per budget line (the latest seen).
MAX_SCOPES = 1000
_CAS_TRIES = 8
_CAS_BACKOFF_S = 0.002  # the most a lost race waits, times the tries so far


def _scopes_key(name: str, unit: str) -> str:
    return f"budget-scopes:{name}:{unit}"


def _window_json(window: Window) -> dict[str, Any]:
    seconds = None if math.isinf(window.seconds) else window.seconds
    return {"kind": window.kind, "seconds": seconds, "tz": window.tz}


def _window_from(data: dict[str, Any]) -> Window:
    seconds = data.get("seconds")
    return Window(
        kind=str(data["kind"]),
        seconds=math.inf if seconds is None else float(seconds),
        tz=str(data.get("tz", "UTC")),
    )


async def _update(store: SharedState, key: str, change: Callable[[Any], Any], empty: Any) -> bool:
    """Read-change-write ``key`` (JSON) with compare-and-set, retrying on a race; false
    when every try lost a race (a later call tries again).

    A lost race waits a short random while before the next try: writers that read in
    the same order each round would otherwise lose in the same order too (seen: one
    worker losing all its tries while two others kept writing)."""
    for attempt in range(_CAS_TRIES):
        if attempt:
            await anyio.sleep(random.uniform(0, _CAS_BACKOFF_S * attempt))
        current = await store.read(key)
        data = json.loads(current.value) if current is not None else empty
        changed = change(json.loads(json.dumps(data)))
        if changed == data and current is not None:
            return True
        encoded = json.dumps(changed, sort_keys=True).encode()
        version = current.version if current is not None else 0
        if await store.compare_and_set(key, version, encoded, ttl=None):
            return True
    return False


class IndexKeeper:
    """Writes a budget's index entries, once per process and (line, scope).

    New entries are batched: while one call writes, the entries other calls bring are
    queued, and the writer takes them along before it returns, so a burst of new scopes
    costs a few compare-and-sets, not one race per call.
    """

    def __init__(self, store: BudgetLedger) -> None:
        self._shared = store if isinstance(store, SharedState) else None
        self._seen: LRUCache[tuple[str, str, str], bool] = LRUCache(10_000)
        self._pending: dict[tuple[str, str, str], Line] = {}
        self._defined: set[tuple[str, str, int, Window]] = set()
        self._writing = False
        self._lock = threading.Lock()

    def knows(self, line: Line, scope: str) -> bool:
        """Whether ``remember`` has nothing to do for ``line`` and ``scope`` (written
        already, or no index to write)."""
        return self._shared is None or (line.name, line.unit, scope) in self._seen

    async def remember(self, line: Line, scope: str) -> None:
        """Note that ``line`` counted for ``scope`` (written to the store once)."""
        shared = self._shared
        if shared is None:
            return
        entry = (line.name, line.unit, scope)
        with self._lock:
            if entry in self._seen:
                return
            self._seen[entry] = True
            self._pending[entry] = line
            if self._writing:
                return  # the writer takes it along
            self._writing = True
        batch: dict[tuple[str, str, str], Line] = {}
        try:
            while True:
                with self._lock:
                    batch, self._pending = self._pending, {}
                    for key in batch:  # some left by a cancelled writer were unmarked
                        self._seen[key] = True
                    if not batch:
                        # in the same hold of the lock that finds nothing left: an entry
                        # queued after this is never left to a writer that has returned
                        self._writing = False
                        return
                try:
                    written = await self._write(shared, batch)
                except StoreUnavailable:
                    written = False
                if not written:
                    with self._lock:
                        for key in batch:
                            self._seen.pop(key, None)  # a later call tries again
        except BaseException:  # cancelled (or worse) mid-write: the next writer takes them
            with self._lock:
                self._writing = False
                self._pending = {**batch, **self._pending}
                for key in self._pending:
                    self._seen.pop(key, None)  # and their own next call starts one
            raise

    async def _write(self, shared: SharedState, batch: dict[tuple[str, str, str], Line]) -> bool:
        lines = {(line.name, line.unit): line for line in batch.values()}
        new = {
            key: line
            for key, line in lines.items()
            if (line.name, line.unit, line.amount, line.window) not in self._defined
        }
        if new:

            def define(index: dict[str, Any]) -> dict[str, Any]:
                for line in new.values():
                    index[f"{line.name}:{line.unit}"] = {
                        "name": line.name,
                        "unit": line.unit,
                        "limit": line.amount,
                        "window": _window_json(line.window),
                    }
                return index

            if not await _update(shared, INDEX_KEY, define, {}):
                return False
            self._defined.update((x.name, x.unit, x.amount, x.window) for x in new.values())
        for name, unit in lines:
            scopes = [scope for (n, u, scope) in batch if (n, u) == (name, unit)]

            def add(listed: list[str], scopes: list[str] = scopes) -> list[str]:
                listed = [scope for scope in listed if scope not in scopes] + scopes
                return listed[-MAX_SCOPES:]

            if not await _update(shared, _scopes_key(name, unit), add, []):
                return False
        return True


def status_of(
    name: str, unit: Unit, scope: str, limit: int, window: Window, result: LedgerResult
) -> BudgetStatus:
    """A ``BudgetStatus`` from a ledger answer."""
    return BudgetStatus(
        name=name,
        scope=scope,
        unit=unit,
        limit=limit,
        used=result.used,
        reserved=result.reserved,
        remaining=max(0, limit - result.used - result.reserved),
        reset_at=reset_time(result),
        window=window,
    )


async def budget_report(store: BudgetLedger, *, name: str | None = None) -> list[BudgetStatus]:
    """Used, reserved, remaining and reset time of every budget scope the store lists.

    Reads the index budgets write through the store's ``SharedState`` role (at most
    ``MAX_SCOPES`` latest scopes per budget line), then each scope's current usage.
    ``name`` keeps one budget. Sorted by name, unit and scope. Raises
    ``StoreUnavailable`` when the store does not answer.
    """
    if not isinstance(store, SharedState):
        return []
    current = await store.read(INDEX_KEY)
    index: dict[str, Any] = json.loads(current.value) if current is not None else {}
    statuses: list[BudgetStatus] = []
    for entry in sorted(index.values(), key=lambda e: (e["name"], e["unit"])):
        if name is not None and entry["name"] != name:
            continue
        window = _window_from(entry["window"])
        unit: Unit = "usd_micros" if entry["unit"] == "usd_micros" else "tokens"
        limit = int(entry["limit"])
        listed = await store.read(_scopes_key(entry["name"], unit))
        scopes: list[str] = json.loads(listed.value) if listed is not None else []
        for scope in sorted(scopes):
            key = ledger_key(entry["name"], unit, scope)
            result = await store.usage(key, window=window, limit=limit)
            statuses.append(status_of(entry["name"], unit, scope, limit, window, result))
    return statuses

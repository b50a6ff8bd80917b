"""Budget alerts: a warning and an async hook, once per window, line and threshold.

After a settle, a line whose settled usage reached a threshold (``0.8`` of its limit)
alerts; so does a refused call, which counts as reaching 100 %. Each (ledger key,
threshold, window) alerts once: this process remembers what it fired, and a store
that plays ``SharedState`` (all of llmguard's do) makes it once across every worker
(a counter per key, threshold and window: the first to count 1 alerts).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Awaitable, Callable

import anyio
from cachetools import LRUCache

from ._budget_limits import BudgetAlert, Line, reset_time
from ._errors import StoreUnavailable
from ._stores._roles import BudgetLedger, LedgerResult, SharedState, Window

__all__ = ["ALERT_TIMEOUT_S", "AlertKeeper"]

_log = logging.getLogger("llmguard.budget")

#: How long an alert hook may take before the call goes on without it.
ALERT_TIMEOUT_S = 5.0
_MONTH_S = 32 * 86400.0


def _marker(window: Window, result: LedgerResult) -> float:
    """Names the window ``result`` belongs to (the same for every call in it)."""
    if window.kind == "sliding":
        return float(math.floor(result.reset_at / window.seconds))
    return 0.0 if math.isinf(result.reset_at) else result.reset_at


def _ttl(window: Window) -> float | None:
    if window.kind == "month":
        return _MONTH_S
    return None if math.isinf(window.seconds) else window.seconds


class AlertKeeper:
    """Fires a budget's alerts; remembers (boundedly) which ones this process fired."""

    def __init__(
        self, store: BudgetLedger, hook: Callable[[BudgetAlert], Awaitable[None]] | None
    ) -> None:
        self._shared = store if isinstance(store, SharedState) else None
        self._hook = hook
        self._fired: LRUCache[tuple[str, float, float], bool] = LRUCache(4096)
        self._lock = threading.Lock()

    @staticmethod
    def due(line: Line, used: int) -> bool:
        """Whether ``settled`` has anything to do: the settled usage ``used`` reached the
        lowest threshold (a check to skip the call, not the decision)."""
        thresholds = line.limit.alerts
        if not thresholds:
            return False
        return (used / line.amount if line.amount else math.inf) >= thresholds[0]

    async def settled(self, line: Line, ledger: str, scope: str, result: LedgerResult) -> None:
        """Alert for every threshold the settled usage has reached."""
        thresholds = line.limit.alerts
        if not thresholds:
            return
        fraction = result.used / line.amount if line.amount else math.inf
        for threshold in thresholds:
            if fraction >= threshold:
                await self._fire(line, ledger, scope, result, threshold, refused=False)

    async def refused(self, line: Line, ledger: str, scope: str, result: LedgerResult) -> None:
        """A refusal counts as reaching 100 %: alert every threshold up to 1."""
        fraction = max(1.0, result.used / line.amount if line.amount else math.inf)
        for threshold in line.limit.alerts:
            if fraction >= threshold:
                await self._fire(line, ledger, scope, result, threshold, refused=True)

    async def _fire(
        self,
        line: Line,
        ledger: str,
        scope: str,
        result: LedgerResult,
        threshold: float,
        *,
        refused: bool,
    ) -> None:
        marker = _marker(line.window, result)
        memo = (ledger, threshold, marker)
        with self._lock:
            if memo in self._fired:
                return
            self._fired[memo] = True
        if self._shared is not None:
            key = f"budget-alert:{ledger}:{threshold:g}:{marker:.0f}"
            try:
                if await self._shared.increment(key, 1, ttl=_ttl(line.window)) != 1:
                    return  # another worker alerted for this window
            except StoreUnavailable:
                pass  # alert from here: twice is better than never
        alert = BudgetAlert(
            name=line.name,
            scope=scope,
            unit=line.unit,
            limit=line.amount,
            used=result.used,
            threshold=threshold,
            reset_at=reset_time(result),
            refused=refused,
        )
        _log.warning(
            "llmguard: budget %r for %s reached %g%% of its limit (%d of %d %s%s)",
            line.name,
            scope,
            threshold * 100,
            result.used,
            line.amount,
            line.unit,
            "; a call was refused" if refused else "",
            extra={"llmguard_alert": alert},
        )
        if self._hook is None:
            return
        try:
            with anyio.move_on_after(ALERT_TIMEOUT_S) as scope_:
                await self._hook(alert)
            if scope_.cancelled_caught:
                _log.warning("llmguard: a budget alert hook took over %gs", ALERT_TIMEOUT_S)
        except Exception:
            _log.exception("llmguard: a budget alert hook raised; the call goes on")

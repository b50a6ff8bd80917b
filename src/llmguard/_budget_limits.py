"""What a budget limits: ``Limit`` (amount, window, scope), and what it reports.

A ``Limit`` caps tokens, dollars or both per window, per scope. Each (limit, unit)
pair is one *line*, with one ledger key per scope value; a ``Budget`` reserves all
its lines together or none.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal, get_args

from ._context import CallContext
from ._cost import Money, _money, to_micros
from ._errors import ConfigurationError
from ._stores._roles import LedgerResult, Window

__all__ = [
    "BudgetAlert",
    "BudgetStatus",
    "Limit",
    "Line",
    "Per",
    "Scope",
    "ScopeName",
    "Unit",
    "is_pure",
    "ledger_key",
    "reset_time",
]

ScopeName = Literal["global", "user", "tenant", "endpoint"]
Scope = ScopeName | tuple[ScopeName, ...] | Callable[[CallContext], str | None]
Per = Literal["minute", "hour", "day", "month"] | timedelta | int | float | Window
Unit = Literal["tokens", "usd_micros"]

_NAMED = {"minute": 60.0, "hour": 3600.0, "day": 86400.0}
_SCOPE_NAMES = frozenset(get_args(ScopeName))
#: How a missing context field (no user set, say) shows in a scope value.
NONE_VALUE = "(none)"


def _escape(value: str) -> str:
    return value.replace("%", "%25").replace(",", "%2C").replace("=", "%3D")


def _window(per: Per, tz: str, sliding: bool) -> tuple[Window, str]:
    """The ``Window`` for ``per`` and a short label for default names."""
    if isinstance(per, Window):
        if sliding or tz != "UTC":
            raise ConfigurationError("pass sliding= and tz= to Window itself, not with a Window")
        return per, per.kind if per.kind in ("month", "forever") else f"{per.seconds:g}s"
    if per == "month":
        if sliding:
            raise ConfigurationError("a month window is calendar-aligned; it cannot slide")
        return Window.month(tz=tz), "month"
    if isinstance(per, str):
        if per not in _NAMED:
            raise ConfigurationError(
                f"per must be 'minute', 'hour', 'day', 'month', a timedelta, seconds or a "
                f"Window, not {per!r}"
            )
        seconds, label = _NAMED[per], str(per)
    elif isinstance(per, timedelta | int | float) and not isinstance(per, bool):
        seconds = per.total_seconds() if isinstance(per, timedelta) else float(per)
        label = f"{seconds:g}s"
    else:
        raise ConfigurationError(f"per must be a period name, a timedelta or seconds: {per!r}")
    if not 0 < seconds < math.inf:
        raise ConfigurationError(f"a window needs a positive, finite length, not {per!r}")
    if sliding:
        return Window.sliding(seconds), f"sliding-{label}"
    return Window.fixed(seconds, tz=tz), label


def _scope(scope: Scope) -> tuple[Callable[[CallContext], str | None], str]:
    """The key function of ``scope`` and its label."""
    if callable(scope):
        return scope, getattr(scope, "__name__", "custom")
    names = (scope,) if isinstance(scope, str) else tuple(scope)
    if not names or any(name not in _SCOPE_NAMES for name in names):
        raise ConfigurationError(
            f"scope must be 'global', 'user', 'tenant', 'endpoint', a tuple of these, or a "
            f"function of the CallContext, not {scope!r}"
        )
    fields = tuple(sorted({name for name in names if name != "global"}))
    if not fields:
        return _pure(lambda context: "global"), "global"

    def key(context: CallContext) -> str:
        parts = []
        for field in fields:
            value = getattr(context, field)
            parts.append(f"{field}={NONE_VALUE if value is None else _escape(value)}")
        return ",".join(parts)

    return _pure(key), "+".join(fields)


def _pure(key: Callable[[CallContext], str | None]) -> Callable[[CallContext], str | None]:
    """Mark a scope function of llmguard's own: a function of the context alone, so its
    answer for a context may be remembered (a user's function may read anything)."""
    _PURE.add(key)
    return key


def is_pure(key: Callable[[CallContext], str | None]) -> bool:
    """Whether ``key`` is one of llmguard's own scope functions (see ``_pure``)."""
    return key in _PURE


_PURE: weakref.WeakSet[Callable[[CallContext], str | None]] = weakref.WeakSet()


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Limit:
    """A cap on tokens, dollars or both, per window, per scope.

    >>> per_user_hourly = Limit(tokens=50_000, per="hour", scope="user")
    >>> global_daily = Limit(usd="25.00", per="day")

    Args:
        tokens: the most input plus output tokens per window and scope.
        usd: the most US dollars per window and scope (``Decimal``, ``int``, ``str``
            or ``float``; held as integer micro-dollars).
        per: ``"minute"``, ``"hour"``, ``"day"``, ``"month"``, a ``timedelta``, a
            number of seconds, or a ``Window``. Fixed windows are aligned to the clock
            in ``tz`` (an hour runs from :00 to :00; a day from midnight).
        scope: who shares the limit: ``"global"`` (everyone), ``"user"``,
            ``"tenant"``, ``"endpoint"`` (from ``llmguard.context``), a tuple of
            these (``("tenant", "user")``: per user within each tenant), or a function
            of the ``CallContext`` returning a string (``None``: the limit does not
            apply to this call). A missing field counts as ``"(none)"``: calls made
            without a user share one ``user=(none)`` budget, they are never unlimited.
        tz: the time zone fixed and month windows are aligned in.
        sliding: count the last ``per`` before now instead of fixed windows.
        name: how the limit is named in errors, alerts and reports (default from the
            scope and window, e.g. ``"user/hour"``). Names are part of the store keys:
            renaming a limit starts it from zero.
        alerts: fractions of the limit (``0.8`` is 80 %) at which to alert, once per
            window.
    """

    tokens: int | None
    usd_micros: int | None
    window: Window
    scope: str
    name: str
    alerts: tuple[float, ...]
    key: Callable[[CallContext], str | None]

    def __init__(
        self,
        *,
        tokens: int | None = None,
        usd: Money | None = None,
        per: Per = "day",
        scope: Scope = "global",
        tz: str = "UTC",
        sliding: bool = False,
        name: str | None = None,
        alerts: Sequence[float] = (0.8, 1.0),
    ) -> None:
        if tokens is None and usd is None:
            raise ConfigurationError("a Limit needs tokens=, usd= or both")
        if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int)):
            raise ConfigurationError(f"tokens must be an int, not {tokens!r}")
        if tokens is not None and tokens < 0:
            raise ConfigurationError(f"tokens must not be negative, not {tokens!r}")
        micros = None if usd is None else to_micros(_money(usd, "usd"))
        try:
            window, per_label = _window(per, tz, sliding)
        except ConfigurationError:
            raise
        except (ValueError, KeyError) as exc:  # an unknown time zone
            raise ConfigurationError(f"unknown time zone {tz!r}") from exc
        key, scope_label = _scope(scope)
        thresholds = tuple(sorted(set(float(a) for a in alerts)))
        if any(not 0 < a <= 10 for a in thresholds):
            raise ConfigurationError(f"alerts are fractions of the limit, like 0.8: {alerts!r}")
        label = name if name is not None else f"{scope_label}/{per_label}"
        if not label or any(c in label for c in "\n\r"):
            raise ConfigurationError(f"a limit name must be a non-empty line, not {name!r}")
        set_ = object.__setattr__
        set_(self, "tokens", tokens)
        set_(self, "usd_micros", micros)
        set_(self, "window", window)
        set_(self, "scope", scope_label)
        set_(self, "name", label)
        set_(self, "alerts", thresholds)
        set_(self, "key", key)

    def __repr__(self) -> str:
        amounts = []
        if self.tokens is not None:
            amounts.append(f"tokens={self.tokens}")
        if self.usd_micros is not None:
            amounts.append(f"usd={Decimal(self.usd_micros) / 1_000_000}")
        return f"Limit({', '.join(amounts)}, name={self.name!r}, window={self.window!r})"

    def lines(self) -> list[Line]:
        """One line per unit this limit caps."""
        out = []
        if self.tokens is not None:
            out.append(Line(limit=self, unit="tokens", amount=self.tokens))
        if self.usd_micros is not None:
            out.append(Line(limit=self, unit="usd_micros", amount=self.usd_micros))
        return out


@dataclass(frozen=True, slots=True)
class Line:
    """One unit of one limit: what a ledger key counts."""

    limit: Limit
    unit: Unit
    amount: int

    @property
    def name(self) -> str:
        return self.limit.name

    @property
    def window(self) -> Window:
        return self.limit.window


def reset_time(result: LedgerResult) -> datetime | None:
    """``LedgerResult.reset_at`` (epoch seconds, ``inf``: never) as an aware datetime."""
    return None if math.isinf(result.reset_at) else datetime.fromtimestamp(result.reset_at, UTC)


def ledger_key(name: str, unit: str, scope: str) -> str:
    """The store key of one line for one scope value."""
    return f"budget:{name}:{unit}:{scope}"


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetStatus:
    """Where one budget line stands for one scope (for dashboards and rate-limit headers).

    ``used`` is what was settled in the current window, ``reserved`` what calls in
    flight hold, ``remaining`` what a new call may still reserve (never negative),
    ``reset_at`` when the window ends (``None``: never; for a sliding window, when the
    oldest counted spend slides out). Amounts are in ``unit``: ``"tokens"`` or
    ``"usd_micros"`` (micro-dollars).
    """

    name: str
    scope: str
    unit: Unit
    limit: int
    used: int
    reserved: int
    remaining: int
    reset_at: datetime | None
    window: Window


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetAlert:
    """A budget line crossed one of its alert thresholds (once per window and threshold).

    ``threshold`` is the fraction crossed (``0.8``), ``used`` the settled amount then.
    ``refused`` is true when the crossing was a refused call: a refusal counts as
    reaching 100 %, so a budget whose calls are being turned away always alerts.
    """

    name: str
    scope: str
    unit: Unit
    limit: int
    used: int
    threshold: float
    reset_at: datetime | None
    refused: bool

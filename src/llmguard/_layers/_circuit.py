"""The circuit breaker's state machine: pure functions over a small record.

The same functions run on a record kept in memory (under a lock) and on one read
from a ``SharedState`` store and written back with compare-and-set, so a breaker
shared by many workers behaves exactly like one in a single process.

    closed ──(N consecutive failures, or failure rate over the window)──► open
    open ──(reset_after seconds passed; the next call is the probe)──► half_open
    half_open ──(every probe succeeded)──► closed
    half_open ──(a probe failed)──► open
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from .._errors import ConfigurationError

__all__ = ["Circuit", "CircuitPolicy", "CircuitState", "Outcome", "Verdict"]

CircuitState = Literal["closed", "open", "half_open"]
"""A breaker's state: ``"closed"`` (calls pass), ``"open"`` (calls refused with
``CircuitOpen``), ``"half_open"`` (a few probe calls decide which comes next)."""
Verdict = Literal["pass", "probe", "reject"]
Outcome = Literal["success", "failure", "neutral"]
Transition = tuple[CircuitState, CircuitState] | None


@dataclass(slots=True)
class Circuit:
    """One circuit's state. ``bits`` holds the last ``count`` outcomes (1: failure)."""

    state: CircuitState = "closed"
    failures: int = 0  # consecutive failures while closed
    bits: int = 0
    count: int = 0
    since: float = 0.0  # when it opened, or went half-open
    probes: int = 0  # probes let through in this half-open period
    passed: int = 0  # of which succeeded

    def encode(self) -> bytes:
        """Compact JSON, readable in ``redis-cli``."""
        return json.dumps(
            [
                self.state,
                self.failures,
                self.bits,
                self.count,
                self.since,
                self.probes,
                self.passed,
            ],
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Circuit:
        """The record ``encode`` wrote (a damaged value reads as a fresh, closed circuit)."""
        try:
            state, failures, bits, count, since, probes, passed = json.loads(raw)
        except (ValueError, TypeError):
            return cls()
        if state not in ("closed", "open", "half_open"):
            return cls()
        return cls(state, int(failures), int(bits), int(count), float(since), probes, passed)

    def _reset(self, state: CircuitState, now: float) -> None:
        self.state = state
        self.failures = self.bits = self.count = self.probes = self.passed = 0
        self.since = now


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitPolicy:
    """When a circuit opens, how long it stays open, how many probes it lets through."""

    consecutive_failures: int | None
    failure_rate: float | None
    window: int
    min_calls: int
    reset_after: float
    probes: int

    @classmethod
    def build(
        cls,
        *,
        consecutive_failures: int | None,
        failure_rate: float | None,
        window: int,
        min_calls: int | None,
        reset_after: float,
        probes: int,
    ) -> CircuitPolicy:
        """Check the settings (``ConfigurationError``); neither trip condition given
        means five consecutive failures."""
        if consecutive_failures is None and failure_rate is None:
            consecutive_failures = 5
        if consecutive_failures is not None and not _positive_int(consecutive_failures):
            raise ConfigurationError(
                f"consecutive_failures must be an int >= 1 or None, not {consecutive_failures!r}"
            )
        if failure_rate is not None and not 0 < failure_rate <= 1:
            raise ConfigurationError(f"failure_rate must be in (0, 1], not {failure_rate!r}")
        if not _positive_int(window) or window > 1024:
            raise ConfigurationError(f"window must be an int in [1, 1024], not {window!r}")
        calls = window if min_calls is None else min_calls
        if not _positive_int(calls) or calls > window:
            raise ConfigurationError(f"min_calls must be an int in [1, window], not {min_calls!r}")
        if not 0 < reset_after < float("inf"):
            raise ConfigurationError(f"reset_after must be positive seconds, not {reset_after!r}")
        if not _positive_int(probes):
            raise ConfigurationError(f"probes must be an int >= 1, not {probes!r}")
        return cls(
            consecutive_failures=consecutive_failures,
            failure_rate=failure_rate,
            window=window,
            min_calls=calls,
            reset_after=float(reset_after),
            probes=probes,
        )

    def admit(self, circuit: Circuit, now: float) -> tuple[Verdict, bool, Transition]:
        """May a call go through now? ``(verdict, changed, transition)``."""
        state = circuit.state
        if state == "closed":
            return ("pass", False, None)
        if state == "open":
            if now < circuit.since + self.reset_after:
                return ("reject", False, None)
            circuit._reset("half_open", now)
            circuit.probes = 1
            return ("probe", True, ("open", "half_open"))
        if circuit.probes < self.probes:
            circuit.probes += 1
            return ("probe", True, None)
        if now >= circuit.since + self.reset_after:
            # The probes let through never reported back (a worker died): try anew.
            circuit._reset("half_open", now)
            circuit.probes = 1
            return ("probe", True, None)
        return ("reject", False, None)

    def retry_at(self, circuit: Circuit) -> float:
        """When a rejected call may be let through as a probe."""
        return circuit.since + self.reset_after

    def settle(
        self, circuit: Circuit, verdict: Verdict, outcome: Outcome, now: float
    ) -> tuple[bool, Transition]:
        """Count one call's outcome. ``(changed, transition)``."""
        if verdict == "probe" and circuit.state == "half_open":
            if outcome == "failure":
                circuit._reset("open", now)
                return (True, ("half_open", "open"))
            if outcome == "success":
                circuit.passed += 1
                if circuit.passed >= self.probes:
                    circuit._reset("closed", now)
                    return (True, ("half_open", "closed"))
                return (True, None)
            circuit.probes = max(0, circuit.probes - 1)  # free the slot for another probe
            return (True, None)
        if circuit.state != "closed" or outcome == "neutral":
            return (False, None)  # a late result from before the circuit changed
        rate = self.failure_rate
        if outcome == "success":
            if circuit.failures == 0 and rate is None:
                return (False, None)
            circuit.failures = 0
            if rate is not None:
                circuit.bits = (circuit.bits << 1) & ((1 << self.window) - 1)
                circuit.count = min(circuit.count + 1, self.window)
            return (True, None)
        circuit.failures += 1
        if rate is not None:
            circuit.bits = ((circuit.bits << 1) | 1) & ((1 << self.window) - 1)
            circuit.count = min(circuit.count + 1, self.window)
        if self._trips(circuit):
            circuit._reset("open", now)
            return (True, ("closed", "open"))
        return (True, None)

    def _trips(self, circuit: Circuit) -> bool:
        limit = self.consecutive_failures
        if limit is not None and circuit.failures >= limit:
            return True
        rate = self.failure_rate
        if rate is None or circuit.count < self.min_calls:
            return False
        return circuit.bits.bit_count() / circuit.count >= rate

    def effective_state(self, circuit: Circuit, now: float) -> CircuitState:
        """The state a call arriving now would meet (an open circuit whose wait is over
        reads as half-open: the next call is a probe)."""
        if circuit.state == "open" and now >= circuit.since + self.reset_after:
            return "half_open"
        return circuit.state


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1

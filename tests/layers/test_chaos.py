"""Chaos: a seeded provider failing 30 % of its calls, 1,000 calls through
fallback → circuit breaker → retry, and a last resort that needs no LLM.

Every call must get an answer, no exception may escape, and the number of calls each
path answered (primary, backup model, last resort), the provider attempts, the calls
failed fast by an open circuit and the virtual time spent must equal what an
independent model of the documented rules computes for the same seed. A stack that
sent everything to the last resort, retried too often or never opened its circuit
would get different figures.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest
from tenacity import wait_fixed

from llmguard import (
    CallRecord,
    CircuitBreaker,
    Fallback,
    Guard,
    Observe,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    Request,
    Response,
    Retry,
    TextDelta,
)
from llmguard.testing import FakeProvider, FakeReply, ManualClock

pytestmark = pytest.mark.anyio

SEED = 20_240_601
CALLS = 1_000
FAILURE_RATE = 0.3
LATENCY = 0.05  # every provider attempt takes this long (virtual seconds)
RETRY_AFTER = 0.5  # what the 429s ask for
BACKOFF = 0.2  # our fixed wait for the other failures
ATTEMPTS = 2  # per target
OPEN_AFTER = 2  # consecutive failed calls
RESET_AFTER = 2.0
KINDS = ("429", "500", "timeout", "cut")


def schedule(seed: int, size: int) -> list[str]:
    """What the provider does on each attempt, in order: "ok" or a failure kind."""
    draw = random.Random(seed)
    return ["ok" if draw.random() >= FAILURE_RATE else draw.choice(KINDS) for _ in range(size)]


def reply_for(kind: str, index: int) -> FakeReply:
    if kind == "ok":
        return FakeReply.of_text(f"answer {index}")
    error: Exception = {
        "429": RateLimited(retry_after=RETRY_AFTER),
        "500": ProviderError("internal error", status_code=500),
        "timeout": ProviderTimeout(),
        "cut": ProviderConnectionError("the connection was cut"),
    }[kind]
    # error_after=0: a stream fails before its first event (after the first-token delay),
    # a one-piece call after its latency: both take LATENCY.
    return FakeReply(error=error, error_after=0)


@dataclass
class _Circuit:
    failures: int = 0
    opened_at: float | None = None
    half_open: bool = False


def expected_figures(kinds: list[str]) -> dict[str, float]:
    """The documented rules, written out independently of llmguard's code."""
    now, attempts, failed_fast = 0.0, 0, 0
    answered: Counter[str] = Counter()
    circuits = {"primary": _Circuit(), "backup": _Circuit()}
    script = iter(kinds)
    for _ in range(CALLS):
        for model in ("primary", "backup"):
            circuit = circuits[model]
            if circuit.opened_at is not None:
                if now < circuit.opened_at + RESET_AFTER:
                    failed_fast += 1
                    continue  # CircuitOpen: the next target
                circuit.opened_at, circuit.half_open = None, True  # this call is the probe
            ok = False
            for attempt in range(1, ATTEMPTS + 1):
                kind = next(script)
                attempts += 1
                now += LATENCY
                if kind == "ok":
                    ok = True
                    break
                if attempt < ATTEMPTS:
                    now += RETRY_AFTER if kind == "429" else BACKOFF
            if ok:
                circuit.failures, circuit.half_open = 0, False
                answered[model] += 1
                break
            if circuit.half_open:
                circuit.half_open, circuit.opened_at = False, now
            else:
                circuit.failures += 1
                if circuit.failures >= OPEN_AFTER:
                    circuit.failures, circuit.opened_at = 0, now
        else:
            answered["last_resort"] += 1
    return {
        "primary": answered["primary"],
        "backup": answered["backup"],
        "last_resort": answered["last_resort"],
        "attempts": attempts,
        "failed_fast": failed_fast,
        "virtual_seconds": round(now, 6),
    }


async def last_resort(request: Request) -> Response:
    return Response(text="from the last resort")


async def test_a_thousand_calls_through_a_failing_provider() -> None:
    kinds = schedule(SEED, 5 * CALLS)
    expected = expected_figures(kinds)
    # The seed exercises every path; the figures below are not a tautology.
    assert expected["failed_fast"] > 0 and expected["last_resort"] > 0
    assert expected["primary"] > expected["backup"] > expected["last_resort"]

    clock = ManualClock(autojump=True)
    fake = FakeProvider(
        [reply_for(kind, i) for i, kind in enumerate(kinds)],
        latency=LATENCY,
        first_token_delay=LATENCY,
        sleep=clock.sleep,
    )
    records: list[CallRecord] = []
    layers = [
        Observe(callback=records.append, level=0),
        Fallback(to=["backup", last_resort], clock=clock),
        CircuitBreaker(consecutive_failures=OPEN_AFTER, reset_after=RESET_AFTER, clock=clock),
        Retry(attempts=ATTEMPTS, total=None, wait=wait_fixed(BACKOFF), clock=clock),
    ]
    guard = Guard(fake, layers, model="primary", timeout=None, clock=clock)
    answers: list[str] = []
    escaped: list[BaseException] = []
    for index in range(CALLS):
        try:
            if index % 5 == 4:  # every fifth call streams
                async with guard.stream(user=f"question {index}") as events:
                    text = "".join([e.text async for e in events if isinstance(e, TextDelta)])
            else:
                text = (await guard.complete(user=f"question {index}")).text
        except Exception as exc:
            escaped.append(exc)
        else:
            answers.append(text)

    assert escaped == []
    assert len(answers) == CALLS and all(answers)
    paths = Counter(
        {None: "primary", "fake/backup": "backup", "last_resort": "last_resort"}[r.fallback]
        for r in records
    )
    failed_fast = sum(
        1 for r in records for reason in r.fallback_reasons if ": CircuitOpen:" in reason
    )
    measured = {
        "primary": paths["primary"],
        "backup": paths["backup"],
        "last_resort": paths["last_resort"],
        "attempts": len(fake.requests),
        "failed_fast": failed_fast,
        "virtual_seconds": round(clock.now(), 6),
    }
    assert measured == expected
    assert answers.count("from the last resort") == expected["last_resort"]
    assert sum(r.stream for r in records) == CALLS // 5

"""Callers that give up at any moment, through the whole stack at once.

200 calls (completions and streams, some streams left early) through Observe → Cache
(single flight, store lock) → Budget → CircuitBreaker → Retry → Deadlines on a slow
fake provider, each caller cancelled after a random (seeded) wait, many in the middle
of a store command, a provider call or a stream. Whatever the moment, nothing stays
held: every budget reservation is released or settled, the circuit stays closed
(a cancellation is not a failure), no single flight is stranded (each question
answers again at once), and every call that finished got the right answer.
"""

from __future__ import annotations

import math
import random

import anyio
import pytest

import llmguard
from llmguard import (
    Budget,
    Cache,
    CircuitBreaker,
    Deadlines,
    Guard,
    Limit,
    MemoryStore,
    Observe,
    Request,
    Retry,
    StreamTimeouts,
    TextDelta,
)
from llmguard.testing import FakeProvider

pytestmark = pytest.mark.anyio

CALLS = 200
USERS = ("ann", "bob", "cyd")
QUESTIONS = tuple(f"question {n}" for n in range(40))


@pytest.mark.parametrize("seed", [7, 8])
async def test_callers_cancelled_anywhere_leave_nothing_held(seed: int) -> None:
    rng = random.Random(seed)
    store = MemoryStore()
    fake = FakeProvider(default="the answer", latency=0.004, first_token_delay=0.002)
    fake.chunk_delay = 0.001
    budget = Budget(Limit(tokens=1_000_000, per="hour", scope="user"), store=store)
    breaker = CircuitBreaker(consecutive_failures=3)
    guard = Guard(
        fake,
        [
            Observe(),
            Cache(store, lock=True, lock_poll=0.001),
            budget,
            breaker,
            Retry(),
            Deadlines(StreamTimeouts(first_token=5, idle=5, total=10)),
        ],
        model="m",
    )
    answers: dict[int, str] = {}  # the calls that finished, by their number
    left: list[bool] = []

    async def one(number: int, user: str, question: str, kind: str, give_up: float) -> None:
        with llmguard.context(user=user), anyio.move_on_after(give_up):
            request = Request.create(model="m", user=question)
            if kind == "complete":
                answers[number] = (await guard.complete(request)).text
                return
            async with guard.stream(request) as events:
                text = ""
                async for event in events:
                    if isinstance(event, TextDelta):
                        text += event.text
                    if kind == "leave" and text:
                        left.append(True)
                        return
            answers[number] = text

    plan = [
        (
            rng.choice(USERS),
            rng.choice(QUESTIONS),
            rng.choice(("complete", "stream", "leave")),
            math.inf if rng.random() < 1 / 3 else rng.uniform(0.0, 0.008),  # patient or not
        )
        for _ in range(CALLS)
    ]
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for number, call in enumerate(plan):
                tg.start_soon(one, number, *call)
                if rng.random() < 0.3:
                    await anyio.sleep(rng.uniform(0, 0.002))

    assert set(answers.values()) <= {"the answer"}
    cancelled = CALLS - len(answers) - len(left)
    patient = {n for n, (_, _, kind, wait) in enumerate(plan) if wait == math.inf}
    assert {n for n in patient if plan[n][2] != "leave"} <= answers.keys()  # all answered
    assert cancelled >= 20, cancelled  # and many were cut short somewhere
    assert len(fake.requests) + len(fake.streams) >= 40  # many reached the provider
    for user in USERS:
        for status in await budget.status(llmguard.CallContext(user=user)):
            assert status.reserved == 0, status  # nothing held by a cancelled call
    key = f"{fake.name}/m"
    assert await breaker.state(key) == "closed"
    with anyio.fail_after(5):  # no flight or store lock left stranded
        for question in QUESTIONS:
            with llmguard.context(user="ann"):
                response = await guard.complete(Request.create(model="m", user=question))
            assert response.text == "the answer"

"""The lean HTTP client under concurrency and failure, over a real loopback socket.

Many calls at once through a small pool (6 connections, 3 kept alive), the server
misbehaving at random (a seeded choice per call: answers, streams, slow answers, a
hang-up before or in the middle of an answer, a TCP reset, a 500, never answering) and
callers cancelling or leaving streams early. Every call ends with its own answer or
the typed error its misbehaviour calls for; afterwards no connection is counted as in
use, and the pool's connections answer the next calls correctly (none was put back
dirty). The full size runs in seconds; the seed makes a failure repeatable.
"""

from __future__ import annotations

import json
import random
from typing import Any

import anyio
import pytest

from llmguard import (
    OpenAIProvider,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
    Request,
    Response,
)
from llmguard._providers import _wire_setup
from llmguard._providers._lean_http import Timeouts

from ._lean_helpers import JSON, SSE, completion, lean_client, running, sse_events
from ._loopback import Exchange

pytestmark = pytest.mark.anyio

CALLS = 120
BEHAVIOURS = (
    "json",
    "stream",
    "slow",
    "leave",  # the caller reads the first event and leaves the stream
    "cancel",  # the caller gives up before the (slow) answer
    "hang_up",  # the server closes the connection without answering
    "cut",  # the server closes in the middle of a stream
    "reset",  # a TCP reset instead of an answer
    "error_500",
    "hang",  # the server never answers: the read timeout
)
STREAMED = {"stream", "leave", "cut"}
READ_TIMEOUT = 0.75  # a hang costs this; an answer on a loaded machine takes far less


async def chaotic(exchange: Exchange) -> None:
    """Answer as the request's tag (``"<i>:<behaviour>"``, its user message) says."""
    tag = json.loads(exchange.request.body)["messages"][-1]["content"]
    number, behaviour = tag.split(":")
    if behaviour in ("slow", "cancel"):
        await anyio.sleep(0.02 if behaviour == "slow" else 0.2)
    if behaviour in ("json", "slow", "cancel"):
        await exchange.respond(200, JSON, completion(f"answer-{number}"))
    elif behaviour in ("stream", "leave"):
        await exchange.head(200, SSE)
        for event in sse_events("answer-", number):
            await exchange.data(event)
        await exchange.end()
    elif behaviour == "cut":
        await exchange.head(200, SSE)
        await exchange.data(sse_events("answer-")[0])
        await exchange.abort()
    elif behaviour == "hang_up":
        await exchange.abort()
    elif behaviour == "reset":
        await exchange.reset()
    elif behaviour == "error_500":
        error = {"error": {"message": "boom", "type": "server_error", "param": None, "code": None}}
        await exchange.respond(500, JSON, json.dumps(error).encode())
    else:
        await anyio.sleep_forever()


async def one_call(provider: OpenAIProvider, number: int, behaviour: str) -> object:
    """What the call ended with: its text, ``None`` (cancelled or left), or the error."""
    request = Request.create(model="gpt-4o-mini", user=f"{number}:{behaviour}")
    try:
        if behaviour == "cancel":
            with anyio.move_on_after(0.05):
                await provider.complete(request)
            return None
        if behaviour not in STREAMED:
            response = await provider.complete(request)
            assert isinstance(response, Response)
            return response.text
        text = ""
        async with provider.stream(request) as events:
            async for event in events:
                text += getattr(event, "text", "")
                if behaviour == "leave" and text:
                    return None
        return text
    except ProviderError as error:
        return error


def expected(number: int, behaviour: str, outcome: object) -> bool:
    """Whether ``outcome`` is what ``behaviour`` calls for."""
    if behaviour in ("json", "stream", "slow"):
        return outcome == f"answer-{number}"
    if behaviour in ("leave", "cancel"):
        return outcome is None
    if behaviour in ("hang_up", "cut", "reset"):
        return isinstance(outcome, ProviderConnectionError)
    if behaviour == "error_500":
        return isinstance(outcome, ProviderError) and outcome.status_code == 500
    return isinstance(outcome, ProviderTimeout)  # hang


@pytest.mark.parametrize("seed", [1, 2])
async def test_many_calls_through_a_small_pool_with_a_misbehaving_server(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_wire_setup, "_MAX_CONNECTIONS", 6)
    monkeypatch.setattr(_wire_setup, "_MAX_KEEPALIVE", 3)
    rng = random.Random(seed)
    plan = [(number, rng.choice(BEHAVIOURS)) for number in range(CALLS)]
    outcomes: dict[int, object] = {}
    # The read timeout is short (a hang costs that long); waiting for a free connection is not.
    timeouts = Timeouts(connect=5.0, read=READ_TIMEOUT, write=5.0, pool=30.0)
    async with running(chaotic, timeout=timeouts) as (server, provider):

        async def run(number: int, behaviour: str) -> None:
            outcomes[number] = await one_call(provider, number, behaviour)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                for number, behaviour in plan:
                    group.start_soon(run, number, behaviour)
        wrong = {
            (number, behaviour, repr(outcomes[number]))
            for number, behaviour in plan
            if not expected(number, behaviour, outcomes[number])
        }
        assert not wrong, sorted(wrong)[:10]
        pool: Any = lean_client(provider)._pool
        assert pool._open == pool.idle <= 3  # none counted in use, idle ones bounded
        assert server.connections <= CALLS  # a connection per call at most

        # What the pool kept answers the next calls, each with its own answer.
        for number in range(CALLS, CALLS + 12):
            assert await one_call(provider, number, "json") == f"answer-{number}"
        assert pool._open == pool.idle <= 3

"""Running one call on both wires (``wire="sdk"`` and ``wire="lean"``, and the lean wire
on llmguard's own HTTP client over a loopback socket) and comparing
everything the caller can see: the response, every event, the assembled stream
response, the error's class, message, status, ``retryable``, ``retry_after`` and
request id, the call record, what reached the wire and what happened to the body."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from llmguard import (
    Guard,
    LLMGuardError,
    Observe,
    OpenAIProvider,
    Request,
    Response,
    StreamEvent,
)
from llmguard.testing import FakeOpenAIEndpoint, capture_records

from ._loopback import endpoint_app, serve
from .conftest import OPENAI_MAJOR

Wire = Literal["sdk", "lean", "h11"]
WIRES: tuple[Wire, ...] = ("sdk", "lean")
# The lean path on llmguard's own HTTP client (``api_key=``, no SDK client), against
# the endpoint served on a loopback socket; a timeout there is a real (short) one.
LOOPBACK_TIMEOUT = 0.5
REQUEST = Request.create(model="gpt-4o-mini", system="Be brief.", user="hi")


def error_facts(exc: BaseException) -> tuple[Any, ...]:
    """Everything a caller can read off an error (its ``__cause__`` is the foreign
    exception: the SDK's on one path, the HTTP library's or none on the other)."""
    return (
        type(exc).__name__,
        str(exc),
        getattr(exc, "status_code", None),
        getattr(exc, "retryable", None),
        getattr(exc, "retry_after", None),
        getattr(exc, "request_id", None),
        getattr(exc, "provider", None),
    )


@dataclass
class Outcome:
    """What one call looked like from outside."""

    response: Response | None = None
    response_repr: str = ""
    events: list[StreamEvent] = field(default_factory=list)
    error: tuple[Any, ...] | None = None
    record: tuple[Any, ...] | None = None
    wire: list[tuple[Any, ...]] = field(default_factory=list)

    def comparable(self) -> tuple[Any, ...]:
        # ``wire`` says whether the body was closed, read to the end, how far.
        return (self.response, self.response_repr, self.events, self.error, self.record)


def _record(records: Sequence[Any]) -> tuple[Any, ...] | None:
    if not records:
        return None
    record = records[0]
    return (record.usage, record.error, record.finish_reason, record.stream, record.model)


async def complete_outcome(provider: OpenAIProvider, request: Request = REQUEST) -> Outcome:
    """``provider.complete`` through a Guard with ``Observe``."""
    outcome = Outcome()
    guard = Guard(provider, [Observe()], timeout=None)
    with capture_records() as records:
        try:
            response = await guard.complete(request)
        except LLMGuardError as exc:
            outcome.error = error_facts(exc)
        else:
            outcome.response = response
            outcome.response_repr = repr(response)
    outcome.record = _record(records)
    return outcome


async def stream_outcome(
    provider: OpenAIProvider, request: Request = REQUEST, *, layers: Sequence[Any] = ()
) -> Outcome:
    """``guard.stream`` read to the end (or to its error), with ``Observe``."""
    outcome = Outcome()
    guard = Guard(provider, [Observe(), *layers], timeout=None)
    opened = None
    with capture_records() as records:
        try:
            async with guard.stream(request) as opened:
                async for event in opened:
                    outcome.events.append(event)
        except LLMGuardError as exc:
            outcome.error = error_facts(exc)
    if opened is not None:
        outcome.response = opened.response
        outcome.response_repr = repr(opened.response)
    outcome.record = _record(records)
    return outcome


def served(endpoint: FakeOpenAIEndpoint) -> list[tuple[Any, ...]]:
    """What the endpoint saw: each request's body, and whether its response was closed."""
    out: list[tuple[Any, ...]] = []
    for wire in endpoint.requests:
        response = wire.response
        out.append(
            (
                wire.method,
                wire.path,
                json.dumps(wire.json, sort_keys=True),
                wire.error,
                None
                if response is None
                else (response.status, response.closed, response.completed, response.chunks_sent),
            )
        )
    return out


Action = Callable[[OpenAIProvider], Awaitable[Outcome]]


async def on_both(
    make_endpoint: Callable[[], FakeOpenAIEndpoint],
    action: Action,
    **provider_kw: Any,
) -> dict[Wire, Outcome]:
    """Run ``action`` on a fresh endpoint per wire; assert both outcomes are equal."""
    outcomes: dict[Wire, Outcome] = {}
    for wire in WIRES:
        endpoint = make_endpoint()
        provider = OpenAIProvider(endpoint.async_client(), wire=wire, **provider_kw)
        outcome = await action(provider)
        outcome.wire = served(endpoint)
        outcomes[wire] = outcome
    sdk, lean = outcomes["sdk"], outcomes["lean"]
    for part, ours, theirs in zip(
        ("response", "repr", "events", "error", "record"),
        lean.comparable(),
        sdk.comparable(),
        strict=True,
    ):
        assert ours == theirs, f"{part} differs:\n lean: {ours!r}\n sdk:  {theirs!r}"
    outcomes["h11"] = h11 = await on_loopback(make_endpoint, action, **provider_kw)
    for part, ours, theirs in zip(
        ("response", "repr", "events", "error", "record"),
        h11.comparable(),
        sdk.comparable(),
        strict=True,
    ):
        assert ours == theirs, f"{part} differs:\n h11: {ours!r}\n sdk: {theirs!r}"
    assert [w[:4] for w in h11.wire] == [w[:4] for w in sdk.wire]
    message = f"wire differs:\n lean: {lean.wire}\n sdk:  {sdk.wire}"
    if OPENAI_MAJOR >= 3:
        assert lean.wire == sdk.wire, message
    else:  # openai 2.x stops reading at [DONE]; 3.x and the lean path read what follows
        assert [w[:4] for w in lean.wire] == [w[:4] for w in sdk.wire], message
        for ours, theirs in zip(lean.wire, sdk.wire, strict=True):
            if ours[4] is not None and theirs[4] is not None:
                assert ours[4][:2] == theirs[4][:2], message
                assert ours[4][3] >= theirs[4][3], message
    return outcomes


async def on_loopback(
    make_endpoint: Callable[[], FakeOpenAIEndpoint], action: Action, **provider_kw: Any
) -> Outcome:
    """``action`` on ``OpenAIProvider(api_key=..., wire="lean")``: llmguard's own HTTP
    client, the endpoint served on 127.0.0.1. A scripted refused connection closes the
    accepted socket unanswered, which no client can tell from a server that hung up:
    its message names ``RemoteProtocolError`` where httpx names ``ConnectError``."""
    endpoint = make_endpoint()
    async with serve(endpoint_app(endpoint)) as server:
        provider = OpenAIProvider(
            api_key="sk-test-fake-openai-endpoint",
            base_url=f"{server.url}/v1",
            wire="lean",
            timeout=LOOPBACK_TIMEOUT,
            **provider_kw,
        )
        try:
            outcome = await action(provider)
        finally:
            await provider.aclose()
    outcome.wire = served(endpoint)
    if outcome.error is not None and any(w[3] == "ConnectError" for w in outcome.wire):
        message = str(outcome.error[1]).replace("RemoteProtocolError", "ConnectError")
        outcome.error = (outcome.error[0], message, *outcome.error[2:])
    return outcome

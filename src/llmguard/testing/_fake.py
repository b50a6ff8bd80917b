"""``FakeProvider``: a scripted provider for tests and the offline demo."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any

import anyio

from .._assemble import estimate_tokens
from .._errors import (
    ConfigurationError,
)
from .._output.types import OutputMode
from .._types import (
    Finish,
    RefusalDelta,
    Request,
    Response,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageUpdate,
)
from ._fake_reply import FakeReply, FakeScriptExhausted, as_reply

__all__ = ["FakeProvider", "FakeReply", "FakeRule", "FakeScriptExhausted", "FakeStreamLog"]
# FakeReply and FakeScriptExhausted live in _fake_reply; they are named here too, where
# the fake provider's users have always imported them from.

Sleep = Callable[[float], Any]


@dataclass(slots=True, kw_only=True)
class FakeStreamLog:
    """What happened to one stream: how many events went out, whether it was closed."""

    request: Request
    events_sent: int = 0
    completed: bool = False
    closed: bool = False


@dataclass(slots=True)
class FakeRule:
    """``fake.when(predicate).reply(...)``: answer matching requests with a reply."""

    predicate: Callable[[Request], bool]
    replies: deque[FakeReply] = field(default_factory=deque)
    always: FakeReply | None = None

    def reply(self, reply: FakeReply | str, *, times: int | None = None) -> FakeRule:
        """Answer ``times`` matching requests with ``reply`` (``None``: every one)."""
        item = as_reply(reply)
        if times is None:
            self.always = item
        else:
            self.replies.extend([item] * times)
        return self

    def take(self, request: Request) -> FakeReply | None:
        if not self.predicate(request):
            return None
        if self.replies:
            return self.replies.popleft()
        return self.always


class FakeProvider:
    """A provider that answers from a script, for tests and offline demos.

    >>> fake = FakeProvider(["Hello!", FakeReply.rate_limited(retry_after=2)])
    >>> _ = fake.when(lambda r: "weather" in r.last_user_text).reply("Sunny.")

    Rules (``when``) are checked first, in the order added, then the queue of
    replies, then ``default``. Every request is logged in ``requests``, every stream
    in ``streams`` (events sent, closed or not). Usage, unless scripted, is a
    realistic estimate (4 characters a token, 3 tokens of framing per message).
    Delays go through ``sleep`` (default ``anyio.sleep``), so a manual clock or
    trio's ``MockClock`` controls them.

    Args:
        replies: the scripted answers, in order; a ``str`` is a text answer.
        name: the provider name in records.
        model: the model reported when the request's model is empty.
        chunk_size: characters per text (and tool-argument) delta when streaming.
        latency: seconds before a non-streaming answer.
        first_token_delay: seconds before a stream's first event.
        chunk_delay: seconds between stream events.
        default: the answer when the script is used up (else ``FakeScriptExhausted``).
        sleep: an async ``sleep(seconds)``.
        structured_output: the structured-output mode the fake says it offers
            (``structured_output_mode``): ``"strict"``, ``"json"`` or ``"prompt"``.
    """

    def __init__(
        self,
        replies: Iterable[FakeReply | str] = (),
        *,
        name: str = "fake",
        model: str = "fake-model",
        chunk_size: int = 4,
        latency: float = 0.0,
        first_token_delay: float = 0.0,
        chunk_delay: float = 0.0,
        default: FakeReply | str | None = None,
        sleep: Sleep | None = None,
        structured_output: OutputMode = "strict",
    ) -> None:
        if chunk_size < 1:
            raise ConfigurationError("chunk_size must be at least 1")
        self._name = name
        self.model = model
        self.chunk_size = chunk_size
        self.latency = latency
        self.first_token_delay = first_token_delay
        self.chunk_delay = chunk_delay
        self.default = None if default is None else as_reply(default)
        self._sleep: Sleep = sleep or anyio.sleep
        self.structured_output: OutputMode = structured_output
        self._queue: deque[FakeReply] = deque(as_reply(r) for r in replies)
        self._rules: list[FakeRule] = []
        self.requests: list[Request] = []
        self.streams: list[FakeStreamLog] = []

    @property
    def name(self) -> str:
        """The provider name in records."""
        return self._name

    def structured_output_mode(self, model: str) -> OutputMode:
        """The structured-output mode the fake offers (``structured_output=``)."""
        return self.structured_output

    def add(self, *replies: FakeReply | str) -> FakeProvider:
        """Append replies to the script."""
        self._queue.extend(as_reply(r) for r in replies)
        return self

    def when(self, predicate: Callable[[Request], bool] | str) -> FakeRule:
        """A rule for matching requests; a ``str`` matches the last user text containing it."""
        if isinstance(predicate, str):
            needle = predicate
            rule = FakeRule(lambda request: needle in request.last_user_text)
        else:
            rule = FakeRule(predicate)
        self._rules.append(rule)
        return rule

    @property
    def pending(self) -> int:
        """How many queued replies are left."""
        return len(self._queue)

    def _next(self, request: Request) -> FakeReply:
        self.requests.append(request)
        for rule in self._rules:
            reply = rule.take(request)
            if reply is not None:
                return reply
        if self._queue:
            return self._queue.popleft()
        if self.default is not None:
            return self.default
        raise FakeScriptExhausted(
            f"FakeProvider got request #{len(self.requests)} but its script is used up; "
            "add replies, a rule, or default="
        )

    def _response(self, request: Request, reply: FakeReply) -> Response:
        usage = reply.usage or self.usage_for(request, reply)
        finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
        return Response(
            text=reply.text,
            tool_calls=reply.tool_calls,
            finish_reason=finish,
            usage=usage,
            model=reply.model or request.model or self.model,
            provider=self._name,
            id=f"fake-{len(self.requests)}",
            refusal=reply.refusal,
        )

    @staticmethod
    def usage_for(request: Request, reply: FakeReply) -> Usage:
        """The realistic usage the fake reports when the script gives none."""
        input_tokens = sum(3 + estimate_tokens(m.content or "") for m in request.messages)
        produced = reply.text + "".join(c.name + c.arguments for c in reply.tool_calls)
        return Usage(input_tokens=input_tokens, output_tokens=max(1, estimate_tokens(produced)))

    async def complete(self, request: Request) -> Response:
        """Answer from the script, after ``latency`` seconds."""
        reply = self._next(request)
        if reply.hang:
            await anyio.sleep_forever()
        if self.latency:
            await self._sleep(self.latency)
        if reply.error is not None:
            raise reply.error
        return self._response(request, reply)

    def stream(self, request: Request) -> FakeStream:
        """Stream the next scripted answer in chunks."""
        reply = self._next(request)
        log = FakeStreamLog(request=request)
        self.streams.append(log)
        return FakeStream(self, request, reply, log)

    def events_for(self, request: Request, reply: FakeReply) -> list[StreamEvent]:
        """The events a reply streams as: text chunks, refusal chunks, tool-call chunks,
        usage, finish."""
        size = self.chunk_size
        events: list[StreamEvent] = [
            TextDelta(text=reply.text[i : i + size]) for i in range(0, len(reply.text), size)
        ]
        if reply.refusal is not None:
            events.extend(
                RefusalDelta(text=reply.refusal[i : i + size])
                for i in range(0, len(reply.refusal), size)
            )
        for index, call in enumerate(reply.tool_calls):
            events.append(ToolCallDelta(index=index, id=call.id, name=call.name))
            events.extend(
                ToolCallDelta(index=index, arguments=call.arguments[i : i + size])
                for i in range(0, len(call.arguments), size)
            )
        response = self._response(request, reply)
        events.append(UsageUpdate(usage=response.usage))
        events.append(Finish(reason=response.finish_reason))
        return events

    def __repr__(self) -> str:
        return f"FakeProvider(name={self._name!r}, pending={len(self._queue)})"


class FakeStream:
    """One fake stream: an async context manager and an async iterator of events."""

    def __init__(
        self, provider: FakeProvider, request: Request, reply: FakeReply, log: FakeStreamLog
    ):
        self._provider = provider
        self._reply = reply
        self._log = log
        self._events = provider.events_for(request, replace(reply, error=None))
        self._position = 0

    async def __aenter__(self) -> FakeStream:
        reply = self._reply
        if reply.error is not None and reply.error_after is None:
            self._log.closed = True
            raise reply.error
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the stream (the log records it)."""
        self._log.closed = True

    def __aiter__(self) -> FakeStream:
        return self

    async def __anext__(self) -> StreamEvent:
        log, reply, provider = self._log, self._reply, self._provider
        if log.closed or self._position >= len(self._events):
            log.completed = log.completed or self._position >= len(self._events)
            raise StopAsyncIteration
        if self._position == 0:
            if reply.hang:
                await anyio.sleep_forever()
            delay = (
                provider.first_token_delay
                if reply.first_token_delay is None
                else reply.first_token_delay
            )
        else:
            delay = provider.chunk_delay if reply.chunk_delay is None else reply.chunk_delay
        if delay and not math.isinf(delay):
            await provider._sleep(delay)
        elif delay:
            await anyio.sleep_forever()
        if (
            reply.error is not None
            and reply.error_after is not None
            and self._position >= reply.error_after
        ):
            raise reply.error
        event = self._events[self._position]
        self._position += 1
        log.events_sent = self._position
        return event

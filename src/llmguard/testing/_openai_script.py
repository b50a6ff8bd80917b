"""What a ``FakeOpenAIEndpoint`` script holds besides ``FakeReply``: ``WireReply``
(failures at the HTTP level, raw and recorded answers) and ``WireRule``."""

from __future__ import annotations

import base64
import json
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Literal

from .._errors import LLMGuardError
from ._fake import FakeReply
from ._openai_errors_wire import HTML_ERROR_PAGE, error_json
from ._openai_log import WireRequest, api_path

__all__ = ["Failure", "UnexpectedRequest", "WireReply", "WireRule", "as_item", "path_of"]

Failure = Literal["disconnect", "timeout"]
"""How a cut body ends: the connection drops, or the read times out."""

JSON = "application/json"
_HTML_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
_HTML_REASONS |= {504: "Gateway Timeout", 520: "Unknown Error", 524: "A Timeout Occurred"}


class UnexpectedRequest(LLMGuardError, AssertionError):
    """The fake endpoint got a request that its script (or cassette) did not expect."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WireReply:
    """One scripted answer at the HTTP level, for failures a ``FakeReply`` cannot describe.

    Build it with the class methods. A ``WireReply`` either encodes ``reply`` the way
    the request asks (chat or Responses, JSON or SSE) and then bends it (a slow first
    byte, a cut, a malformed line), or sends a raw ``status``/``headers``/``body``.
    """

    reply: FakeReply | None = None
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    vectors: tuple[tuple[float, ...], ...] | None = None
    first_byte_delay: float | None = None
    cut_after: int | None = None
    malformed_after: int | None = None
    failure: Failure | None = None
    expect: tuple[str, str] | None = None

    @classmethod
    def slow_first_byte(cls, seconds: float, reply: FakeReply | str = "OK") -> WireReply:
        """Headers at once, then ``seconds`` (through the endpoint's ``sleep``) before
        the first byte of the body: a slow time to first token."""
        return cls(reply=as_reply(reply), first_byte_delay=seconds)

    @classmethod
    def cut_stream(
        cls,
        reply: FakeReply | str = "Hello there, this is cut short.",
        *,
        after: int = 2,
        failure: Failure | None = None,
    ) -> WireReply:
        """After ``after`` complete events the body ends in the middle of a ``data:`` line:
        no finish, no usage, no ``[DONE]``. ``failure=None`` ends the body cleanly there
        (the server closed the connection); ``"disconnect"`` then raises the HTTP
        library's ``RemoteProtocolError``, ``"timeout"`` its ``ReadTimeout``."""
        return cls(reply=as_reply(reply), cut_after=after, failure=failure)

    @classmethod
    def malformed_sse(cls, reply: FakeReply | str = "Hello there.", *, after: int = 1) -> WireReply:
        """After ``after`` good events, a ``data:`` line that is not JSON; the body ends."""
        return cls(reply=as_reply(reply), malformed_after=after)

    @classmethod
    def malformed_json(cls) -> WireReply:
        """200, ``application/json``, and a body that stops in the middle of the JSON."""
        body = (
            b'{"id": "chatcmpl-fake", "object": "chat.completion", "choices": '
            b'[{"index": 0, "message": {"role": "assistant", "content": "Hel'
        )
        return cls.raw(200, headers={"content-type": JSON}, body=body)

    @classmethod
    def html_error(cls, status: int = 502) -> WireReply:
        """An HTML error page from a proxy in front of the API (``text/html``)."""
        reason = _HTML_REASONS.get(status, "Error")
        page = HTML_ERROR_PAGE.format(status=status, reason=reason)
        return cls.raw(status, headers={"content-type": "text/html"}, body=page)

    @classmethod
    def api_error(
        cls,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> WireReply:
        """An OpenAI error: ``status`` with ``{"error": {"message", "type", "param", "code"}}``."""
        body = json.dumps(error_json(message, type=type, code=code, param=param), indent=2)
        return cls.raw(status, headers={"content-type": JSON, **(headers or {})}, body=body)

    @classmethod
    def raw(
        cls, status: int, *, headers: Mapping[str, str] | None = None, body: bytes | str = b""
    ) -> WireReply:
        """Exactly this status, these headers and this body (an SSE body is sent event by
        event, anything else in one piece)."""
        data = body.encode() if isinstance(body, str) else bytes(body)
        return cls(status=status, headers=dict(headers or {}), body=data)

    @classmethod
    def recorded(cls, exchange: Mapping[str, Any], *, check_request: bool = False) -> WireReply:
        """The response of a recorded exchange (the layout of ``shared/fixtures/openai``
        and of cassettes): its status, headers and body, byte for byte. With
        ``check_request``, a request with another method, or to another API (the path
        from ``/chat/completions``, ``/responses`` or ``/embeddings`` on, whatever the
        base URL), raises ``UnexpectedRequest`` instead."""
        response = exchange["response"]
        body = response.get("body")
        if body is None and "body_base64" in response:  # a binary body in a cassette
            body = base64.b64decode(response["body_base64"])
        reply = cls.raw(response["status"], headers=response["headers"], body=body or b"")
        if not check_request:
            return reply
        request = exchange["request"]
        path = api_path(path_of(str(request["url"])))
        return cls(
            status=reply.status,
            headers=reply.headers,
            body=reply.body,
            expect=(str(request["method"]).upper(), path),
        )

    @classmethod
    def fixture(cls, path: str | PathLike[str]) -> WireReply:
        """Replay the response of a recorded fixture file exactly."""
        return cls.recorded(json.loads(Path(path).read_text(encoding="utf-8")))

    @classmethod
    def embeddings(cls, vectors: Sequence[Sequence[float]]) -> WireReply:
        """These vectors for the next ``/embeddings`` request (float or base64, as asked)."""
        return cls(vectors=tuple(tuple(float(v) for v in vector) for vector in vectors))


def as_reply(reply: FakeReply | str) -> FakeReply:
    """A ``str`` is a text reply."""
    return FakeReply(text=reply) if isinstance(reply, str) else reply


def path_of(url: str) -> str:
    """The path of an absolute URL, without its query."""
    rest = url.split("://", 1)[-1]
    path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    return path.split("?", 1)[0]


@dataclass(slots=True)
class WireRule:
    """``endpoint.when(predicate).reply(...)``: answer matching requests with a reply."""

    predicate: Callable[[WireRequest], bool]
    replies: deque[FakeReply | WireReply] = field(default_factory=deque)
    always: FakeReply | WireReply | None = None

    def reply(self, reply: FakeReply | str | WireReply, *, times: int | None = None) -> WireRule:
        """Answer ``times`` matching requests with ``reply`` (``None``: every one)."""
        item = as_reply(reply) if isinstance(reply, str) else reply
        if times is None:
            self.always = item
        else:
            self.replies.extend([item] * times)
        return self

    def take(self, request: WireRequest) -> FakeReply | WireReply | None:
        """The rule's next reply for ``request``, or ``None`` if it does not match."""
        if not self.predicate(request):
            return None
        if self.replies:
            return self.replies.popleft()
        return self.always


def as_item(reply: FakeReply | str | WireReply) -> FakeReply | WireReply:
    """A script item: a ``str`` is a text reply."""
    return FakeReply(text=reply) if isinstance(reply, str) else reply

"""How ``FakeOpenAIEndpoint`` puts the answer it chose on the wire, as a ``Plan``.

A ``FakeReply`` becomes a chat-completions or Responses body (JSON, or SSE for
``"stream": true``) or OpenAI's error for its failure; a ``WireReply`` is sent as
recorded, or cut or malformed as it says; embeddings get their vectors. A failure
before any response (a timeout, a refused connection) raises ``TransportFailure``,
which the endpoint's handler turns into the HTTP library's own exception. The
endpoint's settings (delays, quirks, chunk size, model...) are read at each request.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from .._assemble import estimate_tokens
from .._errors import (
    MalformedResponse,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
    RateLimited,
)
from ._fake import FakeProvider, FakeReply
from ._openai_body import Plan, cut, malform, split_sse
from ._openai_embeddings_wire import embeddings_json, fake_vector
from ._openai_errors_wire import rate_limit_json, status_error_json
from ._openai_log import WireRequest, api_path, request_from_wire
from ._openai_responses_wire import responses_json, responses_stream
from ._openai_script import JSON, UnexpectedRequest, WireReply
from ._openai_wire import Answer, SSEBody, chat_json, chat_stream

if TYPE_CHECKING:
    from ._openai_endpoint import FakeOpenAIEndpoint

__all__ = ["TransportFailure", "embeddings_plan", "reply_plan", "wire_plan"]

_SSE = "text/event-stream; charset=utf-8"


class TransportFailure(Exception):
    """The transport fails before any response: a timeout or a refused connection."""

    def __init__(self, kind: Literal["timeout", "connect"]) -> None:
        super().__init__(kind)
        self.kind = kind


def wire_plan(endpoint: FakeOpenAIEndpoint, wire: WireRequest, item: WireReply) -> Plan:
    """A ``WireReply``: its vectors, its raw or recorded bytes as they are, or its
    reply, delayed, cut or malformed as it says."""
    if item.expect is not None and (wire.method, api_path(wire.path)) != item.expect:
        method, path = item.expect
        raise UnexpectedRequest(
            f"the cassette expected {method} {path} next but got {wire.method} "
            f"{api_path(wire.path)}; "
            "re-record it, or replay with match='request'"
        )
    if item.vectors is not None:
        return embeddings_plan(endpoint, wire, item.vectors)
    if item.body is not None:
        headers = {k.lower(): v for k, v in item.headers.items()}
        sse = "text/event-stream" in headers.get("content-type", "")
        chunks = split_sse(item.body) if sse else [item.body]
        return Plan(
            status=item.status,
            headers=headers,
            chunks=chunks,
            sse=sse,
            first_delay=endpoint.first_byte_delay,
            chunk_delay=endpoint.chunk_delay,
        )
    plan = reply_plan(endpoint, wire, item.reply or FakeReply(text="OK"))
    if item.first_byte_delay is not None:
        plan.first_delay = item.first_byte_delay
    if item.cut_after is not None:
        cut(plan, item.cut_after, mid_line=True)
        plan.failure = item.failure
    if item.malformed_after is not None:
        malform(plan, item.malformed_after)
    return plan


def reply_plan(endpoint: FakeOpenAIEndpoint, wire: WireRequest, reply: FakeReply) -> Plan:
    """A ``FakeReply``: its answer in the wire format asked for, or its failure."""
    error = reply.error
    if error is not None and reply.error_after is None:
        return _error_plan(endpoint, wire, error)
    plan, first_content = _content_plan(endpoint, wire, reply)
    plan.first_delay = _pick(reply.first_token_delay, endpoint.first_byte_delay)
    plan.chunk_delay = _pick(reply.chunk_delay, endpoint.chunk_delay)
    plan.hang = reply.hang
    if reply.error_after is not None:  # FakeReply.cut: the connection drops
        cut(plan, first_content + reply.error_after, mid_line=not plan.sse)
        plan.failure = "disconnect"
    return plan


def _error_plan(endpoint: FakeOpenAIEndpoint, wire: WireRequest, error: BaseException) -> Plan:
    model = _model_of(endpoint, wire, None)
    if isinstance(error, RateLimited):
        return _rate_limit_plan(endpoint, model, error.retry_after)
    if isinstance(error, ProviderTimeout):
        raise TransportFailure("timeout")
    if isinstance(error, MalformedResponse):
        if wire.stream:
            plan, first_content = _content_plan(endpoint, wire, FakeReply(text="Hello there."))
            malform(plan, first_content)
            return plan
        return wire_plan(endpoint, wire, WireReply.malformed_json())
    if isinstance(error, ProviderConnectionError):
        raise TransportFailure("connect")
    if isinstance(error, ProviderError):
        if error.status_code is None:
            raise TransportFailure("connect")
        return _json_plan(
            endpoint, error.status_code, status_error_json(error.status_code, model=model)
        )
    raise error


def _rate_limit_plan(endpoint: FakeOpenAIEndpoint, model: str, retry_after: float | None) -> Plan:
    plan = _json_plan(endpoint, 429, rate_limit_json(model=model, retry_after=retry_after))
    plan.headers |= {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": f"{retry_after or 20:g}s",
    }
    if retry_after is not None:
        plan.headers["retry-after"] = str(max(0, math.ceil(retry_after)))
        if endpoint.retry_after_ms:
            plan.headers["retry-after-ms"] = str(round(retry_after * 1000))
    return plan


def _json_plan(endpoint: FakeOpenAIEndpoint, status: int, body: Any) -> Plan:
    headers = {"content-type": JSON, "x-request-id": f"req_fake{len(endpoint.requests)}"}
    text = json.dumps(body, indent=2, ensure_ascii=False)
    return Plan(
        status=status,
        headers=headers,
        chunks=[text.encode()],
        first_delay=endpoint.first_byte_delay,
    )


def _model_of(endpoint: FakeOpenAIEndpoint, wire: WireRequest, reply: FakeReply | None) -> str:
    asked = wire.json.get("model") if isinstance(wire.json, Mapping) else None
    return (reply.model if reply else None) or (str(asked) if asked else endpoint.model)


def _content_plan(
    endpoint: FakeOpenAIEndpoint, wire: WireRequest, reply: FakeReply
) -> tuple[Plan, int]:
    api = wire.api if wire.api in ("chat", "responses") else "chat"
    body = wire.json if isinstance(wire.json, Mapping) else {}
    request = request_from_wire(api, body, model=endpoint.model)
    usage = reply.usage or FakeProvider.usage_for(request, reply)
    answer = Answer(
        text=reply.text,
        tool_calls=reply.tool_calls,
        refusal=reply.refusal,
        finish_reason=reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop"),
        usage=usage,
        model=_model_of(endpoint, wire, reply),
        number=len(endpoint.requests),
        reasoning=endpoint.reasoning,
    )
    size = endpoint.provider.chunk_size if endpoint.provider is not None else endpoint.chunk_size
    if not wire.stream:
        value = chat_json(answer) if api == "chat" else responses_json(answer, body)
        return _json_plan(endpoint, 200, value), 0
    if api == "chat":
        options = body.get("stream_options")
        include_usage = isinstance(options, Mapping) and options.get("include_usage") is True
        sse = chat_stream(
            answer, include_usage=include_usage, quirks=endpoint.compat, chunk_size=size
        )
    else:
        sse = responses_stream(answer, body, chunk_size=size)
    return _sse_plan(endpoint, sse), sse.first_content


def _sse_plan(endpoint: FakeOpenAIEndpoint, sse: SSEBody) -> Plan:
    headers = {"content-type": _SSE, "x-request-id": f"req_fake{len(endpoint.requests)}"}
    return Plan(status=200, headers=headers, chunks=[b.encode() for b in sse.blocks], sse=True)


def embeddings_plan(
    endpoint: FakeOpenAIEndpoint, wire: WireRequest, vectors: Sequence[Sequence[float]] | None
) -> Plan:
    """An embeddings answer: ``vectors``, or (``None``) deterministic ones per input."""
    body = wire.json if isinstance(wire.json, Mapping) else {}
    inputs = body.get("input", "")
    texts = [inputs] if isinstance(inputs, str) or _is_tokens(inputs) else list(inputs)
    dimensions = int(body.get("dimensions") or endpoint.embedding_dimensions)
    if vectors is None:
        vectors = [fake_vector(_as_text(t), dimensions) for t in texts]
    tokens = sum(len(t) if isinstance(t, list) else estimate_tokens(str(t)) for t in texts)
    encoding = str(body.get("encoding_format") or "float")
    value = embeddings_json(
        [list(v) for v in vectors],
        model=_model_of(endpoint, wire, None),
        encoding=encoding,
        prompt_tokens=tokens,
    )
    return _json_plan(endpoint, 200, value)


def _is_tokens(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, int) for v in value)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _pick(own: float | None, default: float) -> float:
    return default if own is None else own

"""What the ``OpenTelemetry`` layer knows about a finished call, and how it is written down.

``CallFacts`` is read once from the ``CallState`` when the call ends and feeds both the
span and the metrics. Nothing here imports OpenTelemetry: attributes are plain dicts.
Privacy rules live here too: no user or tenant id, no provider error message, content
only when asked for and through the ``redact`` function.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Final

from .._errors import CircuitOpen, DeadlineExceeded, ProviderError, ToolLoopLimit
from .._state import Attempt, CallState
from .._types import Message, Request, Response, ToolCall, Usage

__all__ = [
    "OPERATION",
    "Attributes",
    "CallFacts",
    "error_description",
    "error_type",
    "finish_attributes",
    "input_messages",
    "masked_scope",
    "output_messages",
    "start_attributes",
    "tool_arguments",
    "tool_name",
]

Attributes = dict[str, Any]
"""Span or metric attributes: str, bool, int, float, or sequences of one of them."""

Redact = Callable[[str], str]

OPERATION: Final = "chat"
"""``gen_ai.operation.name`` of every guarded call (the chat API, tool loops included)."""

_TOOL_NAME_CHARS = 64  # a tool name comes from the model: cap what reaches span names
_SAFE_MESSAGES = (DeadlineExceeded, CircuitOpen, ToolLoopLimit)  # llmguard's own words only
_SCOPE = re.compile(r"global|(?:endpoint|tenant|user)=[^,=]*(?:,(?:endpoint|tenant|user)=[^,=]*)*")
_PRIVATE_VALUE = re.compile(r"\b(tenant|user)=[^,]*")


@dataclass(slots=True, kw_only=True)
class CallFacts:
    """One finished call as the layer reports it (spans and metrics read the same facts)."""

    provider: str
    request_model: str
    response_model: str | None
    usage: Usage | None  # None: no attempt reached a provider (a cache hit, a refusal)
    cost_micros: int | None
    duration_s: float
    time_to_first_chunk_s: float | None
    error_type: str | None
    retries: int

    @classmethod
    def of(
        cls,
        state: CallState,
        request_model: str,
        response: Response | None,
        error: BaseException | None,
    ) -> CallFacts:
        """Read the facts of a finished call."""
        attempts = state.attempts
        last = attempts[-1] if attempts else None
        response_model = None
        if response is not None and response.model:
            response_model = response.model
        elif last is not None and last.model:
            response_model = last.model
        cost = state.cost_micros
        if cost is None and response is not None:
            cost = response.cost_micros
        ended = state.ended_at if state.ended_at is not None else state.started_at
        ttfc = None
        if state.stream and last is not None and last.first_event_at is not None:
            ttfc = last.first_event_at - state.started_at
        return cls(
            provider=last.provider if last is not None else state.provider,
            request_model=request_model,
            response_model=response_model,
            usage=state.usage if attempts else None,
            cost_micros=cost,
            duration_s=ended - state.started_at,
            time_to_first_chunk_s=ttfc,
            error_type=error_type(error) if error is not None else None,
            retries=count_retries(attempts),
        )


def count_retries(attempts: Sequence[Attempt]) -> int:
    """Attempts that followed a failed attempt on the same provider and model (a
    fallback hop changes one of them; a tool step or re-ask follows a success)."""
    retries = 0
    for before, after in pairwise(attempts):
        if (
            before.error is not None
            and before.provider == after.provider
            and before.model == after.model
        ):
            retries += 1
    return retries


def error_type(error: BaseException) -> str:
    """``error.type``: the exception's class name (never its message)."""
    return type(error).__qualname__


def error_description(error: BaseException) -> str | None:
    """The span status text: the message of an llmguard error whose text is llmguard's
    own and holds no user data; ``None`` for everything else (provider messages can
    quote keys or prompts, a budget's scope names the user)."""
    return str(error) if isinstance(error, _SAFE_MESSAGES) else None


def masked_scope(label: str) -> str:
    """A budget scope label (``"name:user=alice"``) with user and tenant values masked
    (``"name:user=*"``); a custom scope's value is masked whole (``"name:*"``)."""
    start = 0
    while (colon := label.find(":", start)) >= 0:
        scope = label[colon + 1 :]
        if _SCOPE.fullmatch(scope):
            return label[: colon + 1] + _PRIVATE_VALUE.sub(r"\1=*", scope)
        start = colon + 1
    colon = label.find(":")
    return label if colon < 0 else label[:colon] + ":*"


def tool_name(call: ToolCall) -> str:
    """The tool's name as the model sent it, cut to a sane length."""
    name = call.name if isinstance(call.name, str) else repr(call.name)
    return name if len(name) <= _TOOL_NAME_CHARS else name[:_TOOL_NAME_CHARS] + "…"


def start_attributes(state: CallState, request: Request) -> Attributes:
    """What is known when the call starts (the sampling-relevant ones among them)."""
    attributes: Attributes = {
        "gen_ai.operation.name": OPERATION,
        "gen_ai.provider.name": state.provider,
        "gen_ai.request.model": request.model,
        "llmguard.call_id": state.call_id,
        "llmguard.stream": state.stream,
    }
    if state.stream:
        attributes["gen_ai.request.stream"] = True
    if request.temperature is not None:
        attributes["gen_ai.request.temperature"] = request.temperature
    if request.top_p is not None:
        attributes["gen_ai.request.top_p"] = request.top_p
    if request.max_output_tokens is not None:
        attributes["gen_ai.request.max_tokens"] = request.max_output_tokens
    if request.seed is not None:
        attributes["gen_ai.request.seed"] = request.seed
    if request.stop:
        attributes["gen_ai.request.stop_sequences"] = list(request.stop)
    if request.response_format is not None:
        attributes["gen_ai.output.type"] = "json"
    endpoint = state.context.endpoint
    if endpoint is not None:
        attributes["llmguard.endpoint"] = endpoint
    return attributes


def finish_attributes(
    state: CallState,
    facts: CallFacts,
    response: Response | None,
    error: BaseException | None,
    started_provider: str | None = None,
) -> Attributes:
    """What is known when the call ends. ``gen_ai.provider.name`` is left out when the
    span already started with that value (``started_provider``): the SDK cleans and
    locks for every attribute set, so an unchanged value is not set twice."""
    attributes: Attributes = {"llmguard.attempts": len(state.attempts)}
    if facts.provider != started_provider:
        attributes["gen_ai.provider.name"] = facts.provider  # a fallback hop changed it
    if facts.response_model is not None:
        attributes["gen_ai.response.model"] = facts.response_model
    usage = facts.usage
    if usage is not None:
        attributes["gen_ai.usage.input_tokens"] = usage.input_tokens
        attributes["gen_ai.usage.output_tokens"] = usage.output_tokens
        if usage.cached_input_tokens:
            attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cached_input_tokens
        if usage.reasoning_tokens:
            attributes["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning_tokens
        if usage.estimated:
            attributes["llmguard.usage.estimated"] = True
    if response is not None:
        if response.finish_reason:
            attributes["gen_ai.response.finish_reasons"] = [response.finish_reason]
        if response.id:
            attributes["gen_ai.response.id"] = response.id
    if facts.time_to_first_chunk_s is not None:
        attributes["gen_ai.response.time_to_first_chunk"] = facts.time_to_first_chunk_s
    if facts.cost_micros is not None:
        attributes["llmguard.cost_usd"] = facts.cost_micros / 1_000_000
    _call_facts(state, attributes)
    if error is not None:
        _error_facts(error, attributes)
    return attributes


def _call_facts(state: CallState, attributes: Attributes) -> None:
    if state.cache is not None:
        attributes["llmguard.cache"] = state.cache
    if state.fallback is not None:
        attributes["llmguard.fallback"] = state.fallback
    if state.budget_scopes:
        attributes["llmguard.budget.scopes"] = [masked_scope(s) for s in state.budget_scopes]
    if state.tool_calls:
        attributes["llmguard.tool_calls"] = state.tool_calls
        attributes["llmguard.tool_errors"] = state.tool_errors
    circuit = state.extra.get("circuit")
    if circuit:
        attributes["llmguard.breaker"] = [str(note) for note in circuit]


def _error_facts(error: BaseException, attributes: Attributes) -> None:
    attributes["error.type"] = error_type(error)
    if isinstance(error, ProviderError) and error.status_code is not None:
        attributes["http.response.status_code"] = error.status_code
    remaining = getattr(error, "remaining", None)  # BudgetExceeded
    if isinstance(remaining, int) and not isinstance(remaining, bool):
        attributes["llmguard.budget.remaining"] = remaining
        attributes["llmguard.budget.unit"] = str(getattr(error, "unit", ""))
        attributes["llmguard.budget.refused"] = masked_scope(str(getattr(error, "scope", "")))


# -- content (only with include_content=True) ------------------------------------------


def _keep(text: str) -> str:
    return text


def _json_or_text(raw: str) -> Any:
    """Tool-call arguments as an object when they parse, else the text as it came."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def tool_arguments(call: ToolCall, redact: Redact | None) -> str:
    """``gen_ai.tool.call.arguments``: the (redacted) arguments as JSON text."""
    raw = call.arguments if isinstance(call.arguments, str) else ""
    return json.dumps(_json_or_text((redact or _keep)(raw)), ensure_ascii=False)


def _message_parts(message: Message, redact: Redact) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [
            {
                "type": "tool_call_response",
                "id": message.tool_call_id,
                "response": redact(message.content or ""),
            }
        ]
    parts: list[dict[str, Any]] = []
    if message.content:
        parts.append({"type": "text", "content": redact(message.content)})
    for call in message.tool_calls:
        parts.append(
            {
                "type": "tool_call",
                "id": call.id,
                "name": call.name,
                "arguments": _json_or_text(redact(call.arguments)),
            }
        )
    return parts


def input_messages(messages: Sequence[Message], redact: Redact | None) -> str:
    """``gen_ai.input.messages`` (semconv JSON schema) as JSON text."""
    scrub = redact or _keep
    out: list[dict[str, Any]] = []
    for message in messages:
        item: dict[str, Any] = {"role": message.role, "parts": _message_parts(message, scrub)}
        if message.name:
            item["name"] = message.name
        out.append(item)
    return json.dumps(out, ensure_ascii=False)


def output_messages(response: Response, redact: Redact | None) -> str:
    """``gen_ai.output.messages`` (semconv JSON schema) as JSON text."""
    scrub = redact or _keep
    message = Message.assistant(response.text or None, tool_calls=response.tool_calls)
    parts = _message_parts(message, scrub)
    if response.refusal:
        parts.append({"type": "refusal", "content": scrub(response.refusal)})
    item: dict[str, Any] = {"role": "assistant", "parts": parts}
    if response.finish_reason:
        item["finish_reason"] = response.finish_reason
    return json.dumps([item], ensure_ascii=False)

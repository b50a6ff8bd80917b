"""``Observe``: one ``CallRecord`` per call, to logging, to a callback, to tests."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from .._layer import BaseLayer, Handler, StreamHandler, StreamOpener
from .._state import CallRecord, CallState, current_call
from .._types import Request, Response

__all__ = ["RECORD_LOGGER", "Observe"]

RECORD_LOGGER: Final = "llmguard.calls"
"""The logger ``Observe`` writes to by default; a custom logger should be a child of it."""

_internal_log = logging.getLogger("llmguard")


class Observe(BaseLayer):
    """Emits one ``CallRecord`` per call, when the call ends (success, error or cancel).

    Each record goes to the stdlib logger (``llmguard.calls`` unless given; ``level``
    on success, WARNING on an error or when a fallback answered: a degraded call) with
    the fields under ``extra["llmguard"]`` (docs/observability.md lists them) and the
    record itself under ``extra["llmguard_record"]``, and to ``callback`` if given.
    Prompt and completion text are left out unless ``include_content=True``, and then
    pass through ``redact`` first.

    Put it first (outermost) so it sees cache hits, refusals and fallbacks.

    Args:
        logger: where records are logged (default ``logging.getLogger("llmguard.calls")``).
        level: the level of a successful call's record.
        callback: called with each record; keep it fast (no I/O), it runs on the call's path.
        include_content: put the prompt and completion text into the record.
        redact: applied to the prompt and the completion text before they are put into
            the record (only with ``include_content=True``); if it raises, the text is
            left out.
    """

    __slots__ = ("_callback", "_include_content", "_level", "_logger", "_redact")

    def __init__(
        self,
        *,
        logger: logging.Logger | None = None,
        level: int = logging.INFO,
        callback: Callable[[CallRecord], None] | None = None,
        include_content: bool = False,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        self._logger = logger or logging.getLogger(RECORD_LOGGER)
        self._level = level
        self._callback = callback
        self._include_content = include_content
        self._redact = redact

    async def complete(self, request: Request, call_next: Handler) -> Response:
        """Arrange for the record to be emitted when the call ends, and call inward."""
        state = current_call()
        if state is not None:
            state.on_finish(self._emit)
        return await call_next(request)

    def stream(self, request: Request, call_next: StreamHandler) -> StreamOpener:
        """The same for streams: the record is emitted when the stream is left."""
        state = current_call()
        if state is not None:
            state.on_finish(self._emit)
        return call_next(request)

    def _emit(
        self, state: CallState, response: Response | None, error: BaseException | None
    ) -> None:
        degraded = error is not None or state.fallback is not None
        level = max(self._level, logging.WARNING) if degraded else self._level
        log = self._logger.isEnabledFor(level)
        if not log and self._callback is None:
            return
        record = build_record(
            state, response, error, include_content=self._include_content, redact=self._redact
        )
        if self._callback is not None:
            try:
                self._callback(record)
            except Exception:
                _internal_log.exception("llmguard: an Observe callback raised; the call goes on")
        if log:
            self._logger.log(
                level,
                "llm call %s %s/%s %s tokens in %.3fs%s%s",
                record.call_id,
                record.provider,
                record.model,
                record.usage.total_tokens,
                record.latency_s,
                f" fallback={record.fallback}" if record.fallback else "",
                f" error={record.error}" if record.error else "",
                extra={"llmguard": record.as_dict(), "llmguard_record": record},
            )

    def __repr__(self) -> str:
        return f"Observe(logger={self._logger.name!r}, include_content={self._include_content!r})"


def build_record(
    state: CallState,
    response: Response | None,
    error: BaseException | None,
    *,
    include_content: bool = False,
    redact: Callable[[str], str] | None = None,
) -> CallRecord:
    """Turn a finished ``CallState`` into its ``CallRecord``."""
    attempts = state.attempts
    last = attempts[-1] if attempts else None
    request = state.request
    model = (response.model if response else "") or (last.model if last else "")
    if not model and request is not None:
        model = request.model
    ended = state.ended_at if state.ended_at is not None else state.started_at
    ttft = None
    if state.stream and last is not None and last.first_event_at is not None:
        ttft = last.first_event_at - state.started_at
    cost = state.cost_micros
    if cost is None and response is not None:
        cost = response.cost_micros
    prompt = completion = None
    if include_content:
        if request is not None:
            prompt = "\n".join(f"{m.role}: {m.content or ''}" for m in request.messages)
        if response is not None:
            completion = response.text
        if redact is not None:
            prompt, completion = _redacted(redact, prompt), _redacted(redact, completion)
    return CallRecord(
        call_id=state.call_id,
        provider=last.provider if last else state.provider,
        model=model,
        user=state.context.user,
        tenant=state.context.tenant,
        endpoint=state.context.endpoint,
        tags=state.context.tags,
        stream=state.stream,
        usage=state.usage,
        cost_micros=cost,
        latency_s=ended - state.started_at,
        time_to_first_token_s=ttft,
        cache=state.cache,
        attempts=len(attempts),
        fallback=state.fallback,
        finish_reason=response.finish_reason if response is not None else None,
        error=type(error).__name__ if error is not None else None,
        prompt=prompt,
        completion=completion,
        tool_calls=state.tool_calls,
        tool_errors=state.tool_errors,
        fallback_reasons=tuple(state.fallback_reasons),
    )


def _redacted(redact: Callable[[str], str], text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return redact(text)
    except Exception:
        _internal_log.exception("llmguard: an Observe redact hook raised; the text is left out")
        return None

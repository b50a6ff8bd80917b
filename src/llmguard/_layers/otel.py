"""``OpenTelemetry``: each guarded call as a span and as metrics (GenAI semantic conventions).

``opentelemetry`` is imported when the layer is built, never by ``import llmguard``.
The span of a call starts when the call enters the layer (so it is a child of the
caller's current span) and ends when the call finishes; while the call runs inside
the layer the span is the current one, so spans of the HTTP client, and of the tools
a tool loop runs (``execute_tool`` child spans), nest under it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from .._errors import ConfigurationError
from .._layer import BaseLayer, EventStream, Handler, StreamHandler, StreamOpener
from .._state import _CURRENT_CALL, CallState, ToolFinish
from .._types import Request, Response, ToolCall
from ._otel_attrs import (
    OPERATION,
    Attributes,
    CallFacts,
    error_description,
    error_type,
    finish_attributes,
    input_messages,
    output_messages,
    start_attributes,
    tool_arguments,
    tool_name,
)
from ._otel_metrics import Instruments

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, TracerProvider

    from .._tools.results import ToolResult

__all__ = ["OpenTelemetry"]

_log = logging.getLogger("llmguard")
_INSTALL = 'OpenTelemetry needs the otel extra: pip install "llmguard[otel]"'


class OpenTelemetry(BaseLayer):
    """Turns each guarded call into an OpenTelemetry span and metrics.

    One span per call (a whole ``run_tools`` loop, a structured call with its re-asks,
    a call with its retries and fallbacks), named ``"chat {model}"``, kind ``CLIENT``,
    with the GenAI semantic-convention attributes (``gen_ai.provider.name``,
    ``gen_ai.request.model``, ``gen_ai.usage.input_tokens``…) and llmguard's own under
    ``llmguard.`` (``cost_usd``, ``cache``, ``attempts``, ``fallback``,
    ``budget.scopes``, ``stream``, ``call_id``, ``endpoint``); ``error.type`` and
    status ``ERROR`` on failure. Each tool a tool loop runs is an ``execute_tool
    {name}`` child span. Metrics: ``gen_ai.client.token.usage``,
    ``gen_ai.client.operation.duration``, ``gen_ai.client.operation.time_to_first_chunk``
    and llmguard's counters. See docs/telemetry.md for every name.

    No user or tenant id, no API key, header or provider error message is recorded.
    Prompt and completion text are recorded only with ``include_content=True``
    (``gen_ai.input.messages``, ``gen_ai.output.messages``, tool arguments and
    results), each text passed through ``redact`` first when given.

    Put it first (outermost), or pass it as ``Guard(..., telemetry=...)``.

    Args:
        tracer_provider: where spans go (default: the global tracer provider).
        meter_provider: where metrics go (default: the global meter provider).
        include_content: record prompts, completions, tool arguments and results.
        redact: ``redact(text) -> text``, applied to every recorded text.
    """

    __slots__ = (
        "_attach",
        "_client",
        "_content",
        "_current",
        "_detach",
        "_error",
        "_finish_callback",
        "_instruments",
        "_internal",
        "_key",
        "_redact",
        "_status",
        "_tool_observer",
        "_tracer",
        "_use_span",
    )

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        include_content: bool = False,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        if redact is not None and not callable(redact):
            raise ConfigurationError(f"redact must be a function (str) -> str, not {redact!r}")
        try:
            from opentelemetry import context, metrics, trace
        except ImportError as exc:  # pragma: no cover - the dev extra installs it
            raise ImportError(_INSTALL) from exc
        from .. import __version__

        self._tracer = trace.get_tracer("llmguard", __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter("llmguard", __version__, meter_provider=meter_provider)
        self._instruments = Instruments(meter)
        self._content = bool(include_content)
        self._redact = redact
        self._attach = context.attach
        self._detach = context.detach
        self._current = context.get_current
        self._use_span = trace.set_span_in_context
        self._client = trace.SpanKind.CLIENT
        self._internal = trace.SpanKind.INTERNAL
        self._status = trace.Status
        self._error = trace.StatusCode.ERROR
        self._key = f"llmguard.otel.{id(self):x}"  # this layer's _Entry in CallState.extra
        # Bound once: registering the same object again (a tool-loop step) is then an
        # identity check, and no bound method is created per call.
        self._finish_callback = self._finish
        self._tool_observer = self._tool_started

    # -- the two paths -------------------------------------------------------------

    async def complete(self, request: Request, call_next: Handler) -> Response:
        """Start the call's span (once per call), make it current, and call inward."""
        state = _CURRENT_CALL.get()
        if state is None:
            return await call_next(request)
        token = self._attach(self._in_span(state, request))
        try:
            return await call_next(request)
        finally:
            self._detach(token)

    def stream(self, request: Request, call_next: StreamHandler) -> StreamOpener:
        """The same for streams: the span is current while the stream is opened, and
        ends when the stream is left."""
        state = _CURRENT_CALL.get()
        if state is None:
            return call_next(request)
        return _OpenedInSpan(self, self._in_span(state, request), request, call_next)

    # -- the call's span -------------------------------------------------------------

    def _in_span(self, state: CallState, request: Request) -> Context:
        """The current context with the call's span in it (started on the first step)."""
        entry: _Entry | None = state.extra.get(self._key)
        if entry is not None:  # a later step of the same call (tool loop, re-ask)
            return self._use_span(entry.span)
        parent = self._current()  # read once: the span's parent, and what it is set in
        attributes = start_attributes(state, request)
        span = self._tracer.start_span(
            f"{OPERATION} {request.model}",
            context=parent,
            kind=self._client,
            attributes=attributes,
        )
        state.extra[self._key] = _Entry(span, request, attributes["gen_ai.provider.name"])
        state.on_finish(self._finish_callback)
        state.on_tool(self._tool_observer)
        return self._use_span(span, parent)

    def _finish(
        self, state: CallState, response: Response | None, error: BaseException | None
    ) -> None:
        entry: _Entry | None = state.extra.pop(self._key, None)
        if entry is None:  # pragma: no cover - on_finish is only added with the entry
            return
        span = entry.span
        request = entry.request
        try:
            facts = CallFacts.of(state, request.model, response, error)
            recording = span.is_recording()  # False: no SDK set up, or sampled out
            if recording:
                span.set_attributes(
                    finish_attributes(state, facts, response, error, entry.provider)
                )
                if error is not None:
                    span.set_status(self._status(self._error, error_description(error)))
            self._instruments.record(state, facts, error)
            if recording and self._content:
                self._record_content(span, state.request or request, response)
        except Exception:
            _log.exception("llmguard: recording a call in OpenTelemetry failed; the call goes on")
        finally:
            span.end()

    def _record_content(self, span: Span, request: Request, response: Response | None) -> None:
        content: Attributes = {
            "gen_ai.input.messages": input_messages(request.messages, self._redact)
        }
        if response is not None:
            content["gen_ai.output.messages"] = output_messages(response, self._redact)
        span.set_attributes(content)

    # -- tools -------------------------------------------------------------------------

    def _tool_started(self, state: CallState, call: ToolCall) -> ToolFinish | None:
        entry: _Entry | None = state.extra.get(self._key)
        if entry is None:  # pragma: no cover - the observer is only added with the entry
            return None
        name = tool_name(call)
        attributes: Attributes = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.type": "function",
            "gen_ai.tool.call.id": str(call.id),
        }
        if self._content:
            attributes["gen_ai.tool.call.arguments"] = tool_arguments(call, self._redact)
        span = self._tracer.start_span(
            f"execute_tool {name}",
            context=self._use_span(entry.span),
            kind=self._internal,
            attributes=attributes,
        )
        token = self._attach(self._use_span(span))  # the tool's own spans nest under it

        def finish(result: ToolResult | None, error: BaseException | None) -> None:
            self._detach(token)
            try:
                self._tool_outcome(span, result, error)
            finally:
                span.end()

        return finish

    def _tool_outcome(
        self, span: Span, result: ToolResult | None, error: BaseException | None
    ) -> None:
        if result is None:  # interrupted (cancelled, say): ``error`` says by what
            assert error is not None
            span.set_attribute("error.type", error_type(error))
            span.set_status(self._status(self._error, error_description(error)))
            return
        span.set_attribute("llmguard.tool.status", result.status)
        if result.truncated:
            span.set_attribute("llmguard.tool.truncated", True)
        if result.ok:
            if self._content:
                text = result.content if self._redact is None else self._redact(result.content)
                span.set_attribute("gen_ai.tool.call.result", text)
            return
        kind: str = result.status
        if kind == "error" and result.exception is not None:
            kind = error_type(result.exception)  # the tool's own exception class
        span.set_attribute("error.type", kind)
        span.set_status(self._status(self._error, result.status))

    def __repr__(self) -> str:
        return f"OpenTelemetry(include_content={self._content!r})"


class _Entry:
    """The call's span, kept in ``CallState.extra`` from its first step to its end."""

    __slots__ = ("provider", "request", "span")

    def __init__(self, span: Span, request: Request, provider: str) -> None:
        self.span = span
        self.request = request
        self.provider = provider  # gen_ai.provider.name as the span started with it


class _OpenedInSpan:
    """Opens the inner stream with the call's span current; passes everything else on."""

    __slots__ = ("_call_next", "_current", "_layer", "_opener", "_request")

    def __init__(
        self, layer: OpenTelemetry, current: Context, request: Request, call_next: StreamHandler
    ) -> None:
        self._layer = layer
        self._current = current
        self._request = request
        self._call_next = call_next
        self._opener: StreamOpener | None = None

    async def __aenter__(self) -> EventStream:
        layer = self._layer
        token = layer._attach(self._current)
        try:
            opener = self._opener = self._call_next(self._request)
            return await opener.__aenter__()
        finally:
            layer._detach(token)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        opener = self._opener
        if opener is None:  # pragma: no cover - never entered
            return False
        return await opener.__aexit__(exc_type, exc, tb)

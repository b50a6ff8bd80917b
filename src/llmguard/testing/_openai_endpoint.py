"""``FakeOpenAIEndpoint``: a scripted OpenAI HTTP API behind one transport handler.

The handler answers an ``httpx2.Request`` with an ``httpx2.Response`` and an
``httpx.Request`` with an ``httpx.Response``, so the same object serves
``httpx2.MockTransport`` (openai 3.x), ``httpx.MockTransport`` and respx (openai 2.x).
Neither library is imported until a request arrives. Which answer a request gets is
chosen here; ``_openai_plans`` puts it on the wire.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import anyio

from .._errors import ConfigurationError
from ._fake import FakeProvider, FakeReply, FakeScriptExhausted
from ._openai_body import (
    Plan,
    Sleep,
    body_stream_class,
    http_module_for_sdk,
    http_module_of,
    sdk_client,
)
from ._openai_log import WireRequest, WireResponse, request_from_wire, wire_request
from ._openai_plans import TransportFailure, embeddings_plan, reply_plan, wire_plan
from ._openai_script import UnexpectedRequest, WireReply, WireRule, as_item
from ._openai_wire import Quirk

if TYPE_CHECKING:
    import openai

__all__ = ["FakeOpenAIEndpoint"]


class FakeOpenAIEndpoint:
    """A fake OpenAI API: a scripted handler for ``httpx2.MockTransport``,
    ``httpx.MockTransport`` or a respx side effect, speaking the real wire formats.

    >>> endpoint = FakeOpenAIEndpoint(["Hello!", FakeReply.rate_limited(retry_after=2)])
    >>> client = endpoint.async_client()  # doctest: +SKIP

    ``POST .../chat/completions`` and ``POST .../responses`` answer with JSON, or SSE
    when the body says ``"stream": true``; ``POST .../embeddings`` with float or base64
    vectors. Answers come from, in order: rules added with ``when``, the queue of
    replies, ``provider`` (its rules, queue and default, seeing each request as an
    llmguard ``Request``), then ``default``; else ``FakeScriptExhausted``.
    ``/embeddings`` takes ``WireReply.embeddings(...)`` (or a raw one) when it is next in
    the queue; otherwise it answers with deterministic vectors without using up the
    script (script an embeddings failure with a rule: ``when(lambda r: r.api ==
    "embeddings")``).
    Any other path gets OpenAI's 404, unless a raw ``WireReply`` is next in the queue.

    Every request is logged in ``requests`` (``WireRequest``), every response in
    ``responses`` (``WireResponse``, which records whether the client read the body to
    the end or closed it early).

    Args:
        replies: the scripted answers: ``FakeReply``, ``str`` (text) or ``WireReply``.
        provider: a ``FakeProvider`` whose script answers once the queue is empty.
        default: the answer when everything else is used up.
        compat: the ``Quirk`` flags of an OpenAI-compatible server to reproduce.
        model: the model reported when neither the reply nor the request names one.
        chunk_size: characters per streamed piece (a provider's replies: its own).
        first_byte_delay: seconds before the first byte of every body.
        chunk_delay: seconds between the events of a stream.
        embedding_dimensions: the length of generated vectors (unless the request
            asks for ``dimensions``).
        retry_after_ms: also send ``retry-after-ms`` on a 429.
        reasoning: the reasoning text the reasoning quirks stream.
        strict: answer only from the script: no generated embeddings, no 404 for an
            unknown path; a request without an answer raises ``UnexpectedRequest``.
        sleep: an async ``sleep(seconds)`` for the delays (default ``anyio.sleep``).
    """

    def __init__(
        self,
        replies: Iterable[FakeReply | str | WireReply] = (),
        *,
        provider: FakeProvider | None = None,
        default: FakeReply | str | WireReply | None = None,
        compat: Quirk = Quirk.NONE,
        model: str = "gpt-4o-mini",
        chunk_size: int = 4,
        first_byte_delay: float = 0.0,
        chunk_delay: float = 0.0,
        embedding_dimensions: int = 8,
        retry_after_ms: bool = True,
        reasoning: str = "Let me think about that.",
        strict: bool = False,
        sleep: Sleep | None = None,
    ) -> None:
        if chunk_size < 1 or embedding_dimensions < 1:
            raise ConfigurationError("chunk_size and embedding_dimensions must be at least 1")
        self._queue: deque[FakeReply | WireReply] = deque(as_item(r) for r in replies)
        self._rules: list[WireRule] = []
        self.provider = provider
        self.default = None if default is None else as_item(default)
        self.compat = compat
        self.model = model
        self.chunk_size = chunk_size
        self.first_byte_delay = first_byte_delay
        self.chunk_delay = chunk_delay
        self.embedding_dimensions = embedding_dimensions
        self.retry_after_ms = retry_after_ms
        self.reasoning = reasoning
        self.strict = strict
        self._sleep: Sleep = sleep or anyio.sleep
        self.requests: list[WireRequest] = []
        self.responses: list[WireResponse] = []

    def add(self, *replies: FakeReply | str | WireReply) -> FakeOpenAIEndpoint:
        """Append replies to the script."""
        self._queue.extend(as_item(r) for r in replies)
        return self

    def when(self, predicate: Callable[[WireRequest], bool]) -> WireRule:
        """A rule: requests for which ``predicate`` is true get the rule's replies first."""
        rule = WireRule(predicate)
        self._rules.append(rule)
        return rule

    @property
    def pending(self) -> int:
        """How many queued replies are left."""
        return len(self._queue)

    # The transport side ----------------------------------------------------------

    def handler(self, request: Any) -> Any:
        """Answer one ``httpx2.Request`` or ``httpx.Request`` with that library's
        ``Response``; transport failures raise that library's exceptions."""
        http = http_module_of(request)
        wire = wire_request(request)
        self.requests.append(wire)
        try:
            plan = self._plan(wire)
        except TransportFailure as failure:
            wire.error = "ReadTimeout" if failure.kind == "timeout" else "ConnectError"
            if failure.kind == "timeout":
                raise http.ReadTimeout(
                    "fake endpoint: the read timed out", request=request
                ) from None
            raise http.ConnectError("fake endpoint: connection refused", request=request) from None
        except Exception as error:  # the script's own (FakeScriptExhausted, a scripted bug...)
            wire.error = type(error).__name__
            raise
        log = WireResponse(
            status=plan.status,
            headers=dict(plan.headers),
            body=b"".join(plan.chunks),
            sse=plan.sse,
            chunks_total=len(plan.chunks),
        )
        wire.response = log
        self.responses.append(log)
        stream = body_stream_class(http)(plan, log, self._sleep, http, request)
        return http.Response(plan.status, headers=plan.headers, stream=stream, request=request)

    def mock_transport(self) -> Any:
        """A ``MockTransport`` on this handler, from the HTTP library the installed
        openai SDK uses (``httpx2`` for openai 3.x, ``httpx`` for 2.x)."""
        return http_module_for_sdk().MockTransport(self.handler)

    def async_client(
        self,
        *,
        api_key: str = "sk-test-fake-openai-endpoint",
        base_url: str = "https://api.openai.test/v1",
        max_retries: int = 0,
    ) -> openai.AsyncOpenAI:
        """An ``openai.AsyncOpenAI`` whose every request this endpoint answers.

        ``max_retries=0``: the SDK's own retries would hide what a test wants to see.
        The ``.test`` domain never resolves, so nothing reaches the internet.
        """
        client, _ = sdk_client(
            self.mock_transport(), api_key=api_key, base_url=base_url, max_retries=max_retries
        )
        return client

    # Choosing and planning an answer --------------------------------------------------

    def _take(self, wire: WireRequest) -> FakeReply | WireReply | None:
        """The next scripted item for ``wire``; ``None``: generated embeddings."""
        for rule in self._rules:
            item = rule.take(wire)
            if item is not None:
                return item
        head = self._queue[0] if self._queue else None
        if not self.strict and wire.api in ("embeddings", ""):
            if head is not None and _answers_any_path(head, wire.api):
                return self._queue.popleft()
            if wire.api == "embeddings":
                return None
            message = f"Invalid URL ({wire.method} {wire.path})"
            return WireReply.api_error(404, message, type="invalid_request_error")
        if head is not None:
            return self._queue.popleft()
        if self.provider is not None and wire.api in ("chat", "responses"):
            return self.provider._next(request_from_wire(wire.api, wire.json, model=self.model))
        if self.default is not None:
            return self.default
        where = f"request #{len(self.requests)} ({wire.method} {wire.path})"
        if self.strict:
            raise UnexpectedRequest(f"FakeOpenAIEndpoint(strict=True) has no answer for {where}")
        raise FakeScriptExhausted(
            f"FakeOpenAIEndpoint got {where} but its script is used up; "
            "add replies, a rule, a provider or default="
        )

    def _plan(self, wire: WireRequest) -> Plan:
        item = self._take(wire)
        if item is None:
            return embeddings_plan(self, wire, None)
        if isinstance(item, WireReply):
            return wire_plan(self, wire, item)
        return reply_plan(self, wire, item)

    def __repr__(self) -> str:
        return (
            f"FakeOpenAIEndpoint(pending={len(self._queue)}, requests={len(self.requests)}, "
            f"compat={self.compat!r})"
        )


def _answers_any_path(item: FakeReply | WireReply, api: str) -> bool:
    """Whether a queued item answers a request to ``/embeddings`` (vectors, or a raw or
    recorded response) or to an unknown path (a raw or recorded response)."""
    if not isinstance(item, WireReply):
        return False
    return item.body is not None or (api == "embeddings" and item.vectors is not None)

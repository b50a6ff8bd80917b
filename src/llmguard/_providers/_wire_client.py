"""The lean wire client: Chat Completions over the HTTP client itself, no SDK objects.

``LeanChat`` POSTs the body the SDK would send (``_wire_chat.encode_body``) to
``.../chat/completions`` through an ``httpx2`` (or ``httpx``) ``AsyncClient``, with the
SDK's headers and timeout (``_wire_setup``), and reads the answer straight into
llmguard's types. Errors map as on the SDK path (``_openai_errors``): the same classes,
messages, status codes, ``retryable`` and ``retry_after``; keys are scrubbed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any

from .._errors import LLMGuardError, ProviderError
from .._types import Request, Response, StreamEvent
from ._openai_errors import (
    map_foreign_error,
    scrub_foreign,
    status_error,
    transport_error,
    transport_kind,
)
from ._wire_chat import completion_response, encode_body, loads
from ._wire_setup import Bound, WireSetup
from ._wire_stream import LeanEvents, close_response

__all__ = ["LeanChat"]


class LeanChat:
    """Chat Completions (``complete`` and ``stream``) on the lean wire path."""

    __slots__ = (
        "_bound",
        "_include_usage",
        "_max_tokens_field",
        "_params",
        "_provider",
        "_secrets",
        "setup",
    )

    def __init__(
        self,
        setup: WireSetup,
        *,
        provider: str,
        secrets: tuple[str, ...],
        include_usage: bool,
        max_tokens_field: str,
    ) -> None:
        self.setup = setup
        # With a client: bound now. Without: on the first request (httpx2 loads then).
        self._bound: Bound | None = setup.bind() if setup.client is not None else None
        self._params = setup.params
        self._provider = provider
        self._secrets = secrets
        self._include_usage = include_usage
        self._max_tokens_field = max_tokens_field

    async def complete(self, request: Request) -> Response:
        """One request, one response."""
        try:
            body = encode_body(
                request,
                stream=False,
                include_usage=False,
                max_tokens_field=self._max_tokens_field,
            )
            response = await self._post(body, stream=False)
            status = response.status_code
            if not 200 <= status < 300:
                raise self._status_error(response)
            return completion_response(self._json(response), provider=self._provider)
        except LLMGuardError:
            raise
        except Exception as exc:
            raise self._error(exc) from exc

    @asynccontextmanager
    async def stream(self, request: Request) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        """Open a stream; leaving the ``async with`` closes the HTTP response."""
        try:
            body = encode_body(
                request,
                stream=True,
                include_usage=self._include_usage,
                max_tokens_field=self._max_tokens_field,
            )
            response = await self._post(body, stream=True)
        except LLMGuardError:
            raise
        except Exception as exc:
            raise self._error(exc) from exc
        events: LeanEvents | None = None
        try:
            status = response.status_code
            if not 200 <= status < 300:
                try:
                    await response.aread()
                except Exception as exc:
                    raise self._error(exc, mid_stream=True) from exc
                raise self._status_error(response)
            events = LeanEvents(response, provider=self._provider, secrets=self._secrets)
            yield events
        finally:
            if events is not None:
                await events.aclose()
            else:
                await close_response(response, None, drain=False)

    @property
    def http_client(self) -> Any:
        """The HTTP client requests go through (built now if it was not yet)."""
        return self._bind().client

    async def aclose(self) -> None:
        """Close the HTTP client llmguard built, with its connections (a client given
        with the SDK client stays open: it is the caller's); the next request builds a
        new one."""
        bound = self._bound
        if bound is None or self.setup.client is not None:
            return
        self._bound = None
        await bound.client.aclose()

    def _bind(self) -> Bound:
        bound = self._bound
        if bound is None:
            bound = self._bound = self.setup.bind()
        return bound

    async def _post(self, body: bytes, *, stream: bool) -> Any:
        """Send the request; a failure before an answer arrived is a timeout or a
        connection error, as the SDK reports them."""
        bound = self._bound or self._bind()
        client = bound.client
        request = client.build_request(
            "POST",
            bound.url,
            headers=bound.headers,
            content=body,
            params=self._params,
            timeout=bound.timeout,
        )
        try:
            return await client.send(request, stream=stream)
        except LLMGuardError:
            raise
        except Exception as exc:
            kind = transport_kind(exc)
            if kind is None:
                raise
            scrub_foreign(exc, self._secrets)
            raise transport_error(
                kind, exc, mid_stream=False, provider=self._provider, secrets=self._secrets
            ) from exc

    def _json(self, response: Any) -> Any:
        """The body as the SDK reads it: JSON when the content type says so, else JSON
        if it parses, else the text."""
        content_type = response.headers.get("content-type", "*").split(";")[0]
        if content_type.endswith("json"):
            return loads(response.content)
        try:
            return loads(response.content)
        except Exception:
            return response.text

    def _status_error(self, response: Any) -> ProviderError:
        """The error for a non-2xx answer, from its body as the SDK keeps it."""
        text = response.text
        body: object = text.strip()
        with suppress(Exception):
            body = json.loads(text.strip())
        if isinstance(body, Mapping):
            body = body.get("error", body)
        headers = response.headers
        return status_error(
            response.status_code,
            headers,
            body,
            lambda: text,
            provider=self._provider,
            secrets=self._secrets,
            request_id=headers.get("x-request-id"),
        )

    def _error(self, exc: BaseException, *, mid_stream: bool = True) -> ProviderError:
        scrub_foreign(exc, self._secrets)
        return map_foreign_error(
            exc, provider=self._provider, secrets=self._secrets, mid_stream=mid_stream
        )

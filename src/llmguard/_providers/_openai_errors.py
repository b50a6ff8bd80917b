"""The one boundary where openai's exceptions become llmguard's error tree.

Messages are scrubbed: no API key, no part of one echoed back by the server (the
401 body repeats a masked form of the key), no authorization header, and error
bodies are cut short (an HTML page from a proxy is not an error message).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from .._errors import (
    MalformedResponse,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
    RateLimited,
)
from .._retry_after import parse_retry_after

__all__ = ["map_openai_error", "scrub"]

_MAX_MESSAGE = 300
_SHOULD_RETRY = {"true": True, "false": False}
_KEY_PATTERNS = (
    re.compile(r"\b(?:sk|rk|pk|sess)-[A-Za-z0-9_\-\*\.]{3,}"),
    re.compile(r"(API key provided:\s*)[^\s.,]+(?:[.,][^\s.,]+)*", re.IGNORECASE),
    re.compile(r"(Bearer\s+)\S+", re.IGNORECASE),
    re.compile(r"(api[-_]?key[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+", re.IGNORECASE),
)


def scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove API keys, bearer tokens and echoed (masked) keys from ``text``."""
    for secret in secrets:
        if secret and len(secret) >= 6:
            text = text.replace(secret, "[redacted]")
    text = _KEY_PATTERNS[0].sub("[redacted]", text)
    for pattern in _KEY_PATTERNS[1:]:
        text = pattern.sub(lambda m: m.group(1) + "[redacted]", text)
    return text


def _body_message(body: object) -> str | None:
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping):
            message = error.get("message")
            if isinstance(message, str):
                return message
        elif isinstance(error, str):
            return error
    return None


def _headers_of(exc: Any) -> Mapping[str, str]:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    return headers if headers is not None else {}


def _status_message(exc: Any, status: int) -> str:
    message = _body_message(getattr(exc, "body", None))
    if message is None:
        response = getattr(exc, "response", None)
        content_type = str(_headers_of(exc).get("content-type", ""))
        if "html" in content_type:
            message = "the server answered with an HTML page (a proxy or gateway error?)"
        else:
            try:
                text = response.text if response is not None else ""
            except Exception:  # a streamed body that was never read
                text = ""
            message = text or str(getattr(exc, "message", "")) or type(exc).__name__
    return f"HTTP {status}: {message}"


def map_openai_error(
    exc: BaseException, *, provider: str, secrets: tuple[str, ...] = ()
) -> ProviderError:
    """Translate an exception raised by the openai SDK (or while reading its output)
    into the most specific ``ProviderError``. Call as ``raise map_openai_error(e) from e``.
    """
    import openai

    def clean(text: str) -> str:
        text = scrub(text, secrets)
        return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"

    request_id = getattr(exc, "request_id", None)
    if isinstance(exc, openai.APITimeoutError):
        return ProviderTimeout(clean("the provider did not answer in time"), provider=provider)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = f": {type(cause).__name__}" if cause is not None else ""
        return ProviderConnectionError(
            clean(f"could not reach the provider{detail}"), provider=provider
        )
    if isinstance(exc, openai.APIResponseValidationError):
        return MalformedResponse(
            clean(f"the provider's answer did not match the expected shape: {exc.message}"),
            status_code=exc.status_code,
            request_id=request_id,
            provider=provider,
        )
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        headers = _headers_of(exc)
        retry_after = parse_retry_after(headers)
        # The server may say outright whether to try again (the SDK obeys it too).
        retryable = _SHOULD_RETRY.get(str(headers.get("x-should-retry", "")))
        message = clean(_status_message(exc, status))
        request_id = request_id or headers.get("x-request-id")
        if status == 429:
            return RateLimited(
                message,
                status_code=429,
                retryable=retryable,
                retry_after=retry_after,
                request_id=request_id,
                provider=provider,
            )
        return ProviderError(
            message,
            status_code=status,
            retryable=retryable,
            retry_after=retry_after,
            request_id=request_id,
            provider=provider,
        )
    if isinstance(exc, openai.APIError):
        # An error sent inside a stream (an ``error`` event or chunk): the stream
        # was cut by the server, so trying again may succeed.
        message = _body_message(getattr(exc, "body", None)) or exc.message
        return ProviderError(
            clean(f"the provider reported an error mid-stream: {message}"),
            retryable=True,
            request_id=request_id,
            provider=provider,
        )
    transport = _transport_kind(exc)
    if transport == "timeout":
        return ProviderTimeout(clean("the provider stopped sending in time"), provider=provider)
    if transport == "connection":
        return ProviderConnectionError(
            clean(f"the connection to the provider broke: {type(exc).__name__}"), provider=provider
        )
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return MalformedResponse(clean(f"the provider sent invalid JSON: {exc}"), provider=provider)
    if isinstance(exc, KeyError | TypeError | AttributeError | ValueError | IndexError):
        return MalformedResponse(
            clean(f"the provider's answer could not be read: {type(exc).__name__}: {exc}"),
            provider=provider,
        )
    return ProviderError(clean(f"{type(exc).__name__}: {exc}"), provider=provider)


def _transport_kind(exc: BaseException) -> str | None:
    """``"timeout"`` or ``"connection"`` for httpx/httpx2 transport errors (raised
    unwrapped while a stream is read), without importing either library."""
    for cls in type(exc).__mro__:
        if cls.__module__.split(".")[0] not in ("httpx", "httpx2", "httpcore"):
            continue
        if cls.__name__ in ("TimeoutException", "ReadTimeout", "PoolTimeout"):
            return "timeout"
        if cls.__name__ in ("TransportError", "StreamError", "NetworkError", "ProtocolError"):
            return "connection"
    return None

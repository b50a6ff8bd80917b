"""The one boundary where openai's exceptions become llmguard's error tree.

Messages are scrubbed: no API key, no part of one echoed back by the server (the
401 body repeats a masked form of the key), no authorization header, and error
bodies are cut short (an HTML page from a proxy is not an error message).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from .._errors import (
    MalformedResponse,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
    RateLimited,
)
from .._retry_after import parse_retry_after

__all__ = [
    "map_foreign_error",
    "map_openai_error",
    "scrub",
    "scrub_foreign",
    "status_error",
    "stream_error",
    "stream_error_message",
    "transport_error",
    "transport_kind",
]

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


def scrub_foreign(exc: BaseException, secrets: tuple[str, ...]) -> None:
    """Scrub keys from a foreign exception too: it stays attached as ``__cause__``."""
    try:
        exc.args = tuple(scrub(a, secrets) if isinstance(a, str) else a for a in exc.args)
        message = getattr(exc, "message", None)
        if isinstance(message, str):
            exc.message = scrub(message, secrets)  # type: ignore[attr-defined]
        body = getattr(exc, "body", None)
        if isinstance(body, dict):
            error = body.get("error")
            if isinstance(error, dict) and isinstance(error.get("message"), str):
                error["message"] = scrub(error["message"], secrets)
    except Exception:  # pragma: no cover - never let scrubbing hide the real error
        pass


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


def _clean(text: str, secrets: tuple[str, ...]) -> str:
    text = scrub(text, secrets)
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def status_error(
    status: int,
    headers: Mapping[str, str],
    body: object,
    text: Callable[[], str],
    *,
    provider: str,
    secrets: tuple[str, ...] = (),
    request_id: str | None = None,
) -> ProviderError:
    """The error for an HTTP answer with a non-2xx ``status``.

    ``body`` is the error object as the openai SDK keeps it (the JSON body's ``error``
    member, the whole body when it has none, or the text when it is not JSON); ``text``
    returns the body as text. Both paths (the SDK's and the lean wire client) call this.
    """
    message = _body_message(body)
    if message is None:
        if "html" in str(headers.get("content-type", "")):
            message = "the server answered with an HTML page (a proxy or gateway error?)"
        else:
            try:
                message = text()
            except Exception:  # a streamed body that was never read
                message = ""
            message = message or f"Error code: {status}"
    message = _clean(f"HTTP {status}: {message}", secrets)
    retry_after = parse_retry_after(headers)
    # The server may say outright whether to try again (the SDK obeys it too).
    retryable = _SHOULD_RETRY.get(str(headers.get("x-should-retry", "")))
    request_id = request_id or headers.get("x-request-id")
    kind = RateLimited if status == 429 else ProviderError
    return kind(
        message,
        status_code=status,
        retryable=retryable,
        retry_after=retry_after,
        request_id=request_id,
        provider=provider,
    )


def stream_error_message(body: object) -> str:
    """The message of an error sent inside a stream (an ``error`` event or chunk), read
    as the openai SDK reads it; ``body`` is the payload's ``error`` member."""
    message = body.get("message") if isinstance(body, Mapping) else None
    if not message or not isinstance(message, str):
        message = "An error occurred during streaming"
    return _body_message(body) or message


def stream_error(
    message: str,
    *,
    provider: str,
    secrets: tuple[str, ...] = (),
    request_id: str | None = None,
) -> ProviderError:
    """An error the server sent inside a stream: the stream was cut by the server, so
    trying again may succeed."""
    return ProviderError(
        _clean(f"the provider reported an error mid-stream: {message}", secrets),
        retryable=True,
        request_id=request_id,
        provider=provider,
    )


def transport_error(
    kind: str,
    cause: BaseException | None,
    *,
    mid_stream: bool,
    provider: str,
    secrets: tuple[str, ...] = (),
) -> ProviderError:
    """A transport failure (``kind``: ``"timeout"`` or ``"connection"``), before any
    answer arrived or while a streamed body was read (``mid_stream``); ``cause`` is the
    HTTP library's exception, named in the message."""
    if kind == "timeout":
        text = "the provider stopped sending in time" if mid_stream else ""
        text = text or "the provider did not answer in time"
        return ProviderTimeout(_clean(text, secrets), provider=provider)
    detail = f": {type(cause).__name__}" if cause is not None else ""
    if mid_stream:
        text = f"the connection to the provider broke{detail}"
    else:
        text = f"could not reach the provider{detail}"
    return ProviderConnectionError(_clean(text, secrets), provider=provider)


def map_openai_error(
    exc: BaseException,
    *,
    provider: str,
    secrets: tuple[str, ...] = (),
    mid_stream: bool = False,
) -> ProviderError:
    """Translate an exception raised by the openai SDK (or while reading its output)
    into the most specific ``ProviderError``. Call as ``raise map_openai_error(e) from e``.

    ``mid_stream``: raised while a stream's body was read (the SDK generations differ in
    how they wrap those transport errors; the messages here do not).
    """
    if type(exc).__module__.partition(".")[0] == "openai":
        mapped = _map_sdk_error(exc, provider=provider, secrets=secrets, mid_stream=mid_stream)
        if mapped is not None:
            return mapped
    # Raised unwrapped by the SDK: only ever while a body is read.
    return map_foreign_error(exc, provider=provider, secrets=secrets, mid_stream=True)


def _map_sdk_error(
    exc: BaseException, *, provider: str, secrets: tuple[str, ...], mid_stream: bool
) -> ProviderError | None:
    import openai

    if isinstance(exc, openai.APIConnectionError):  # APITimeoutError included
        kind = "timeout" if isinstance(exc, openai.APITimeoutError) else "connection"
        cause = exc.__cause__ or exc.__context__
        return transport_error(
            kind, cause, mid_stream=mid_stream, provider=provider, secrets=secrets
        )
    if isinstance(exc, openai.APIResponseValidationError):
        return MalformedResponse(
            _clean(
                f"the provider's answer did not match the expected shape: {exc.message}", secrets
            ),
            status_code=exc.status_code,
            request_id=getattr(exc, "request_id", None),
            provider=provider,
        )
    if isinstance(exc, openai.APIStatusError):
        response = exc.response
        return status_error(
            exc.status_code,
            _headers_of(exc),
            exc.body,
            lambda: response.text if response is not None else "",
            provider=provider,
            secrets=secrets,
            request_id=exc.request_id,
        )
    if isinstance(exc, openai.APIError):
        # An error sent inside a stream (an ``error`` event or chunk).
        message = _body_message(exc.body) or exc.message
        return stream_error(
            message,
            provider=provider,
            secrets=secrets,
            request_id=getattr(exc, "request_id", None),
        )
    return None


def map_foreign_error(
    exc: BaseException,
    *,
    provider: str,
    secrets: tuple[str, ...] = (),
    mid_stream: bool = True,
) -> ProviderError:
    """Translate an exception that is not the SDK's: a transport error raised unwrapped
    while a body is read (``mid_stream``), invalid JSON, an answer of an unexpected shape."""
    kind = transport_kind(exc)
    if kind is not None:
        return transport_error(kind, exc, mid_stream=mid_stream, provider=provider, secrets=secrets)
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return MalformedResponse(
            _clean(f"the provider sent invalid JSON: {exc}", secrets), provider=provider
        )
    if isinstance(exc, KeyError | TypeError | AttributeError | ValueError | IndexError):
        return MalformedResponse(
            _clean(
                f"the provider's answer could not be read: {type(exc).__name__}: {exc}", secrets
            ),
            provider=provider,
        )
    return ProviderError(_clean(f"{type(exc).__name__}: {exc}", secrets), provider=provider)


_TIMEOUTS = frozenset({"TimeoutException", "ReadTimeout", "PoolTimeout"})
_CONNECTION = frozenset({"TransportError", "StreamError", "NetworkError", "ProtocolError"})
_CONNECTION_ROOTS = frozenset({"RequestError"})


def transport_kind(exc: BaseException) -> str | None:
    """``"timeout"`` or ``"connection"`` for httpx/httpx2 transport errors (and the TLS
    and anyio errors the openai SDK counts as connection errors), without importing
    either library; the lean HTTP client's own errors say their kind themselves."""
    for cls in type(exc).__mro__:
        module = cls.__module__.split(".")[0]
        if module == "llmguard" and cls.__name__ == "LeanHTTPError":
            return str(getattr(exc, "kind", "connection"))
        if module in ("ssl", "_ssl") and cls.__name__ == "SSLError":
            return "connection"
        if module == "anyio" and cls.__name__ == "EndOfStream":
            return "connection"
        if module not in ("httpx", "httpx2", "httpcore", "httpcore2"):
            continue
        if cls.__name__ in _TIMEOUTS:
            return "timeout"
        if cls.__name__ in _CONNECTION or cls.__name__ in _CONNECTION_ROOTS:
            return "connection"
    return None

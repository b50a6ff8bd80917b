"""The lean HTTP client's own transport errors (``_lean_http``).

They never reach users: ``_openai_errors.transport_kind`` reads a class's ``kind``
(``"timeout"`` or ``"connection"``) and the lean wire client turns them into the same
``ProviderTimeout`` / ``ProviderConnectionError`` the httpx2 path raises. The leaf
classes carry httpx's names (``ConnectError``, ``ReadTimeout``, ``RemoteProtocolError``
...) because the error message names the cause's class: the messages stay the same on
both HTTP clients. No message ever holds a header value (the API key is one).
"""

from __future__ import annotations

__all__ = [
    "ConnectError",
    "ConnectTimeout",
    "DecodingError",
    "LeanConnectionError",
    "LeanHTTPError",
    "LeanTimeout",
    "LocalProtocolError",
    "PoolTimeout",
    "ReadError",
    "ReadTimeout",
    "RemoteProtocolError",
    "TooManyRedirects",
    "UnsupportedProtocol",
    "WriteError",
    "WriteTimeout",
]


class LeanHTTPError(Exception):
    """A transport failure of the lean HTTP client."""

    kind = "connection"


class LeanTimeout(LeanHTTPError):
    """A deadline passed: connecting, waiting for a pooled connection, sending, reading."""

    kind = "timeout"


class ConnectTimeout(LeanTimeout):
    """Connecting (TCP and TLS) took longer than the connect timeout."""


class ReadTimeout(LeanTimeout):
    """The server sent nothing for longer than the read timeout."""


class WriteTimeout(LeanTimeout):
    """Sending the request took longer than the write timeout."""


class PoolTimeout(LeanTimeout):
    """No connection became free within the pool timeout."""


class LeanConnectionError(LeanHTTPError):
    """The connection could not be made, broke, or the server spoke badly."""


class ConnectError(LeanConnectionError):
    """The connection was refused, the name did not resolve, or TLS failed."""


class ReadError(LeanConnectionError):
    """Reading from the connection failed (reset, closed)."""


class WriteError(LeanConnectionError):
    """Sending on the connection failed (reset, closed)."""


class RemoteProtocolError(LeanConnectionError):
    """The server broke HTTP/1.1: closed before a whole answer, sent garbage."""


class LocalProtocolError(LeanConnectionError):
    """The request cannot be sent as HTTP/1.1 (a header value with a line break, ...)."""


class DecodingError(LeanConnectionError):
    """A gzip or deflate body could not be decoded."""


class TooManyRedirects(LeanConnectionError):
    """More redirects than the client follows."""


class UnsupportedProtocol(LeanConnectionError):
    """A URL (a redirect's target) that is not http or https."""

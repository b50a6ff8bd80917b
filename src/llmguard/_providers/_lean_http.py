"""A small async HTTP/1.1 client (``h11`` over anyio streams) for the lean wire path.

Used when ``OpenAIProvider(api_key=..., wire="lean")`` has no client of its own: it
loads in a few milliseconds where ``httpx2`` takes over a hundred. It offers what
``_wire_client`` and ``_wire_stream`` use of an ``httpx2.AsyncClient`` and its
responses (``build_request``, ``send(stream=)``, ``status_code``, ``headers``,
``content``, ``text``, ``aread``, ``aiter_bytes``, ``aclose``, ``is_closed``) and
behaves as the openai SDK's own client by default: keep-alive pool (``_lean_pool``),
the SDK's timeouts and limits, ``Accept-Encoding: gzip, deflate``, redirects followed
as httpx follows them (at most 20), the CAs httpx2 trusts (``_lean_env``). Proxies and
HTTP/2 it leaves to httpx2 (``WireSetup.bind`` uses httpx2 when a proxy applies).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import anyio
import h11

from ._lean_env import default_ssl_context
from ._lean_errors import LocalProtocolError, TooManyRedirects, UnsupportedProtocol
from ._lean_pool import Origin, Pool
from ._lean_response import Headers, LeanResponse

__all__ = ["SDK_TIMEOUTS", "LeanClient", "LeanRequest", "Timeouts"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 20
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds for each phase (``None``: no limit), as ``httpx.Timeout`` splits them."""

    connect: float | None
    read: float | None
    write: float | None
    pool: float | None

    @classmethod
    def of(cls, timeout: Any) -> Timeouts:
        """From a float or ``None`` (every phase), or an object with the four fields."""
        if timeout is None or isinstance(timeout, int | float):
            return cls(timeout, timeout, timeout, timeout)
        return cls(timeout.connect, timeout.read, timeout.write, timeout.pool)


SDK_TIMEOUTS = Timeouts(connect=5.0, read=600.0, write=600.0, pool=600.0)
"""The openai SDK's ``DEFAULT_TIMEOUT``: ``Timeout(600, connect=5.0)``."""


@dataclass(frozen=True, slots=True)
class LeanRequest:
    """One request, ready to send (the URL split into origin and target)."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    content: bytes
    timeouts: Timeouts

    def __repr__(self) -> str:  # never the headers: the API key is one of them
        return f"LeanRequest({self.method!r}, {self.url!r})"


def _split(url: str) -> tuple[Origin, bytes]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise UnsupportedProtocol(f"not an http(s) URL: {scheme or '(none)'}://")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise UnsupportedProtocol("the URL's port is not a number") from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (scheme, parts.hostname, port), target.encode("ascii")


def _host_header(origin: Origin) -> str:
    scheme, host, port = origin
    host = f"[{host}]" if ":" in host else host
    return host if _DEFAULT_PORTS[scheme] == port else f"{host}:{port}"


class LeanClient:
    """The pool, the TLS context (built on the first https request) and the sending."""

    def __init__(
        self,
        *,
        timeout: Any = SDK_TIMEOUTS,
        max_connections: int = 1000,
        max_keepalive: int = 100,
        keepalive_expiry: float = 5.0,
        max_redirects: int = _MAX_REDIRECTS,
    ) -> None:
        self.timeouts = timeout if isinstance(timeout, Timeouts) else Timeouts.of(timeout)
        self.max_redirects = max_redirects
        self._ssl_context: Any = None
        self._pool = Pool(
            self._connect,
            max_connections=max_connections,
            max_keepalive=max_keepalive,
            keepalive_expiry=keepalive_expiry,
        )

    def __repr__(self) -> str:
        return f"<LeanClient idle={self._pool.idle}>"

    @property
    def is_closed(self) -> bool:
        """``aclose`` was called."""
        return self._pool.closed

    @property
    def pool(self) -> Pool:
        """The connection pool (tests look at it)."""
        return self._pool

    async def _connect(self, origin: Origin) -> Any:
        scheme, host, port = origin
        if scheme == "http":
            return await anyio.connect_tcp(host, port)
        if self._ssl_context is None:
            self._ssl_context = default_ssl_context()
        return await anyio.connect_tcp(
            host,
            port,
            tls=True,
            ssl_context=self._ssl_context,
            tls_hostname=host,
            tls_standard_compatible=False,
        )

    def build_request(
        self,
        method: str,
        url: str,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        content: bytes = b"",
        params: Mapping[str, str] | None = None,
        timeout: Any = None,
    ) -> LeanRequest:
        """A request as ``httpx.AsyncClient.build_request`` makes one."""
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
        timeouts = timeout if isinstance(timeout, Timeouts) else Timeouts.of(timeout)
        return LeanRequest(method.upper(), url, headers, content, timeouts)

    async def send(self, request: LeanRequest, *, stream: bool = False) -> LeanResponse:
        """Send ``request`` (following redirects); with ``stream=False`` the body is read."""
        for _ in range(self.max_redirects + 1):
            response = await self._send_one(request)
            location = response.headers.get("location")
            if response.status_code not in _REDIRECTS or location is None:
                break
            await response.aread()  # read to the end: the connection can be reused
            request = _redirected(request, response.status_code, location)
        else:
            await response.aclose()
            raise TooManyRedirects(f"exceeded {self.max_redirects} redirects")
        if not stream:
            await response.aread()
        return response

    async def _send_one(self, request: LeanRequest) -> LeanResponse:
        if self._pool.closed:
            raise RuntimeError("the HTTP client is closed")
        origin, target = _split(request.url)
        timeouts = request.timeouts
        sent = [("Host", _host_header(origin)), *request.headers]
        if not any(name.lower() == "accept-encoding" for name, _ in request.headers):
            sent.append(("Accept-Encoding", "gzip, deflate"))  # httpx's default
        if request.content or request.method not in ("GET", "HEAD"):
            sent.append(("Content-Length", str(len(request.content))))
        try:
            head = h11.Request(method=request.method, target=target, headers=sent)
        except h11.LocalProtocolError:
            head = None
        if head is None:  # raised out here: h11's error quotes the header (the key?)
            raise LocalProtocolError("a request header is not valid in HTTP/1.1")
        connection = await self._pool.acquire(origin, connect=timeouts.connect, pool=timeouts.pool)
        try:
            await connection.send(head, request.content, timeouts.write)
            while True:
                event = await connection.next_event(timeouts.read)
                if type(event) is h11.Response:
                    break  # 1xx (InformationalResponse) skipped
        except BaseException:
            await self._pool.discard(connection)
            raise
        headers = Headers(event.headers.raw_items())
        return LeanResponse(event.status_code, headers, connection, self._pool, timeouts.read)

    async def aclose(self) -> None:
        """Close the pool: idle connections now, those in use when their response ends."""
        await self._pool.aclose()


def _redirected(request: LeanRequest, status: int, location: str) -> LeanRequest:
    """The next request, as httpx builds it: 302 and 303 (and 301 after a POST) become
    a GET without a body; ``Authorization`` is dropped when the origin changes (except
    for an upgrade of the same host to https)."""
    url = urljoin(request.url, location)
    old, _ = _split(request.url)
    new, _ = _split(url)
    method = request.method
    if (status in (302, 303) and method != "HEAD") or (status == 301 and method == "POST"):
        method = "GET"
    drop = {"host"}
    if method != request.method:
        drop |= {"content-length", "transfer-encoding"}
    upgrade = old[0] == "http" and new[0] == "https" and old[1] == new[1]
    if new != old and not upgrade:
        drop.add("authorization")
    headers = tuple(h for h in request.headers if h[0].lower() not in drop)
    content = request.content if method == request.method else b""
    return replace(request, method=method, url=url, headers=headers, content=content)

"""Record and replay real OpenAI traffic: cassettes.

``RecordingTransport`` wraps the async transport of an ``httpx2`` or ``httpx`` client
and writes every exchange to a JSON file, scrubbed of credentials. ``Cassette.load``
reads such a file back and replays it offline through a ``FakeOpenAIEndpoint``. The
file layout is the one of ``shared/fixtures/openai``, so a fixture file is a cassette
of one exchange.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
from collections.abc import Callable, Coroutine, Mapping
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio

from .._errors import ConfigurationError
from ._openai_body import Sleep, http_module_for_sdk, http_module_of, sdk_client
from ._openai_endpoint import FakeOpenAIEndpoint
from ._openai_log import WireRequest, api_path
from ._openai_script import WireReply, path_of

if TYPE_CHECKING:
    import openai

__all__ = [
    "CASSETTE_FORMAT",
    "Cassette",
    "RecordingTransport",
    "close_now",
    "environment_key",
    "recording_client",
    "scrub_text",
]

CASSETTE_FORMAT = 1
"""The version written in every cassette file (``"llmguard_cassette": 1``)."""

Match = Literal["order", "request"]

_CREDENTIAL_HEADERS = frozenset(
    {"authorization", "api-key", "x-api-key", "cookie", "set-cookie"}
    | {"openai-organization", "openai-project"}
)
# The body is stored decoded, so the headers that describe its encoding go too.
_TRANSFER_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})
_PATTERNS = (
    (re.compile(r"\bsk-[A-Za-z0-9_\-\*]{4,}"), "sk-REDACTED"),
    (re.compile(r"\borg-[A-Za-z0-9]{8,}"), "org-REDACTED"),
    (re.compile(r"\bproj_[A-Za-z0-9]{8,}"), "proj_REDACTED"),
    (re.compile(r"\buser-[A-Za-z0-9]{12,}"), "user-REDACTED"),
    (re.compile(r"(?i)(api[-_]?key=)[^&\s\"']+"), r"\1REDACTED"),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9_\-\.\*]{8,}"), r"\1REDACTED"),
)


def scrub_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` without API keys (``sk-...``), organization, project and user ids,
    bearer tokens, ``api-key=`` query values, and the literal ``secrets``."""
    for secret in secrets:
        if len(secret) >= 6:
            text = text.replace(secret, "sk-REDACTED" if secret.startswith("sk-") else "REDACTED")
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _scrub_json(value: Any, secrets: tuple[str, ...]) -> Any:
    return json.loads(scrub_text(json.dumps(value, ensure_ascii=False), secrets))


def _secrets_of(headers: Mapping[str, str]) -> tuple[str, ...]:
    found = []
    for name, value in headers.items():
        if name.lower() in ("authorization", "api-key", "x-api-key"):
            found.append(value.split(" ", 1)[1] if " " in value else value)
    return tuple(found)


def _headers(items: list[tuple[str, str]], secrets: tuple[str, ...]) -> dict[str, str]:
    kept: dict[str, str] = {}
    for name, value in items:
        lowered = name.lower()
        if lowered in _CREDENTIAL_HEADERS or lowered in _TRANSFER_HEADERS:
            continue
        value = scrub_text(value, secrets)
        kept[lowered] = f"{kept[lowered]}, {value}" if lowered in kept else value
    return kept


def _request_body(content: bytes, secrets: tuple[str, ...]) -> Any:
    if not content:
        return None
    try:
        return _scrub_json(json.loads(content), secrets)
    except ValueError:
        return scrub_text(content.decode("utf-8", errors="replace"), secrets)


def _response_body(content: bytes, secrets: tuple[str, ...]) -> dict[str, Any]:
    try:
        return {"body": scrub_text(content.decode("utf-8"), secrets)}
    except UnicodeDecodeError:
        return {"body": None, "body_base64": base64.b64encode(content).decode("ascii")}


class RecordingTransport:
    """An async transport that passes requests to ``inner`` and records every exchange
    to the cassette file at ``path`` (rewritten after each one).

    ``inner`` is an async transport of ``httpx2`` or ``httpx`` (``AsyncHTTPTransport``
    for real traffic, a ``MockTransport`` in tests); this class works with either
    library's ``AsyncClient(transport=...)``. The request's method, URL, headers and
    JSON body and the response's status, headers and body (an SSE body as its raw
    text) are written scrubbed: no ``authorization``, ``api-key``, cookie,
    ``openai-organization`` or ``openai-project`` header, and no ``sk-...`` key,
    org, project or user id anywhere (see ``scrub_text``). The response body is read
    in full before the client sees it: streams arrive at once while recording.
    """

    def __init__(self, inner: Any, path: str | PathLike[str]) -> None:
        self.inner = inner
        self.path = Path(path)
        self.interactions: list[dict[str, Any]] = []

    async def handle_async_request(self, request: Any) -> Any:
        """Send ``request`` through ``inner``, record the exchange, return the response."""
        http = http_module_of(request)
        content = await request.aread()
        response = await self.inner.handle_async_request(request)
        try:
            body = await response.aread()
        finally:
            await response.aclose()
        secrets = _secrets_of(request.headers)
        headers = list(response.headers.multi_items())
        self.interactions.append(
            {
                "request": {
                    "method": str(request.method).upper(),
                    "url": scrub_text(str(request.url), secrets),
                    "headers": _headers(list(request.headers.multi_items()), secrets),
                    "body": _request_body(content, secrets),
                },
                "response": {
                    "status": response.status_code,
                    "headers": _headers(headers, secrets),
                    **_response_body(body, secrets),
                },
            }
        )
        await anyio.to_thread.run_sync(self._save)
        passed = [(k, v) for k, v in headers if k.lower() not in _TRANSFER_HEADERS]
        extensions = {k: v for k, v in response.extensions.items() if k == "http_version"}
        return http.Response(
            response.status_code,
            headers=passed,
            content=body,
            request=request,
            extensions=extensions,
        )

    def _save(self) -> None:
        document = {"llmguard_cassette": CASSETTE_FORMAT, "interactions": self.interactions}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", "utf-8")
        partial.replace(self.path)

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self.inner.aclose()

    async def __aenter__(self) -> RecordingTransport:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.inner.__aexit__(*exc_info)

    def __repr__(self) -> str:
        return f"RecordingTransport({self.inner!r}, {str(self.path)!r})"


class Cassette:
    """Recorded exchanges, replayed offline through a ``FakeOpenAIEndpoint``.

    >>> cassette = Cassette.load("tests/cassettes/hello.json")  # doctest: +SKIP
    >>> client = cassette.endpoint().async_client()  # doctest: +SKIP

    A cassette file is ``{"llmguard_cassette": 1, "interactions": [{"request": ...,
    "response": ...}, ...]}``; a file with one top-level ``request``/``response``
    pair (the fixture layout) loads as a cassette of one exchange.
    """

    def __init__(self, interactions: list[dict[str, Any]], *, path: Path | None = None) -> None:
        self.interactions = interactions
        self.path = path

    @classmethod
    def load(cls, path: str | PathLike[str]) -> Cassette:
        """Read a cassette (or fixture) file."""
        where = Path(path)
        document = json.loads(where.read_text(encoding="utf-8"))
        if isinstance(document, Mapping) and "interactions" in document:
            interactions = list(document["interactions"])
        elif isinstance(document, Mapping) and "request" in document and "response" in document:
            interactions = [dict(document)]
        else:
            raise ConfigurationError(f"{where} is not a cassette: no interactions in it")
        return cls(interactions, path=where)

    def endpoint(self, *, match: Match = "order", sleep: Sleep | None = None) -> FakeOpenAIEndpoint:
        """A strict ``FakeOpenAIEndpoint`` answering with the recorded responses.

        ``match="order"``: the n-th request gets the n-th response, and must have its
        method and API. ``match="request"``: each request gets the first unused
        exchange with the same method, API path, query and JSON body. Either way a
        request without a recorded answer raises ``UnexpectedRequest``. Paths are
        compared from the API's name on (``/chat/completions``...), so the replaying
        client's base URL need not be the one recorded with.
        """
        endpoint = FakeOpenAIEndpoint(strict=True, sleep=sleep)
        if match == "order":
            endpoint.add(*(WireReply.recorded(i, check_request=True) for i in self.interactions))
        elif match == "request":
            for interaction in self.interactions:
                endpoint.when(_same_request(interaction)).reply(
                    WireReply.recorded(interaction), times=1
                )
        else:
            raise ConfigurationError(f"match must be 'order' or 'request', not {match!r}")
        return endpoint

    def __len__(self) -> int:
        return len(self.interactions)

    def __repr__(self) -> str:
        return f"Cassette({str(self.path)!r}, interactions={len(self.interactions)})"


def _target(url: str) -> str:
    query = url.split("?", 1)[1] if "?" in url else ""
    return f"{api_path(path_of(url))}?{query}"


def _same_request(interaction: Mapping[str, Any]) -> Callable[[WireRequest], bool]:
    recorded = interaction["request"]
    method, target = str(recorded["method"]).upper(), _target(recorded["url"])
    body = recorded.get("body")

    def matches(request: WireRequest) -> bool:
        if request.method != method or _target(scrub_text(request.url)) != target:
            return False
        sent = None if request.json is None else _scrub_json(request.json, ())
        return bool(sent == body)

    return matches


def recording_client(
    path: Path, *, api_key: str, base_url: str | None = None
) -> tuple[openai.AsyncOpenAI, Any]:
    """An ``AsyncOpenAI`` on the real network, recording to ``path``; and its HTTP client.

    Connections are not kept alive, so nothing is left open once a response is read.
    """
    http = http_module_for_sdk()
    network = http.AsyncHTTPTransport(limits=http.Limits(max_keepalive_connections=0))
    return sdk_client(
        RecordingTransport(network, path), api_key=api_key, base_url=base_url, timeout=120.0
    )


def close_now(closing: Coroutine[Any, Any, object]) -> bool:
    """Run an ``aclose()`` coroutine to its end without an event loop, if it never has to
    wait (an ``httpx2``/``httpx`` client on a mock transport). Returns whether it
    finished; a close that has to wait, or needs a running loop, is abandoned (the
    clients llmguard builds keep no connection open, so nothing is left behind)."""
    try:
        closing.send(None)
    except StopIteration:
        return True
    except Exception:  # it needs an event loop (e.g. a connection pool's lock)
        return False
    with contextlib.suppress(RuntimeError):  # it insisted on waiting while being closed
        closing.close()
    return False


def environment_key() -> str | None:
    """The ``OPENAI_API_KEY`` to record with, if one is set."""
    return os.environ.get("OPENAI_API_KEY") or None

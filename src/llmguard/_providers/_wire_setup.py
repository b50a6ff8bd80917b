"""Where the lean wire client sends, and with what: from a given ``openai.AsyncOpenAI``
client, or from the provider's own arguments and the environment (without openai).

Read once, when the provider is built: the base URL, the API key (as the
``Authorization`` header), the organization and project headers, the client's default
headers and query, its timeout, and its HTTP client (``httpx2.AsyncClient`` under
openai 3.x, ``httpx.AsyncClient`` under 2.x), which the lean path sends through, so the
transport, connection pool, proxies and cookies stay the client's own. Without a
client, llmguard builds its own small HTTP/1.1 client (``_lean_http``) on the first
request, with the SDK's timeouts, limits and trusted CAs; when a proxy variable
applies to the base URL, it builds an ``httpx2.AsyncClient`` (as the SDK would)
instead, which speaks to proxies.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .._errors import ConfigurationError

__all__ = [
    "DEFAULT_BASE_URL",
    "Bound",
    "WireSetup",
    "http_module_of",
    "setup_from_args",
    "setup_from_client",
]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_PATH = b"chat/completions"

# What the openai SDK builds its own HTTP client with (openai._constants).
_MAX_CONNECTIONS = 1000
_MAX_KEEPALIVE = 100


@dataclass(frozen=True, slots=True)
class Bound:
    """The setup in one HTTP library's own types, ready to send."""

    client: Any  # http.AsyncClient
    url: Any  # http.URL of .../chat/completions
    headers: Any  # http.Headers
    timeout: Any  # http.Timeout, float or None


@dataclass(frozen=True, slots=True)
class WireSetup:
    """Everything the lean client needs to send a chat completion request."""

    base_url: str
    api_key: str
    headers: tuple[tuple[str, str], ...]
    timeout: Any  # the client's timeout: a Timeout of either library, a float or None
    params: Mapping[str, str] | None = None
    client: Any = None  # an httpx2/httpx AsyncClient; None: built on the first request

    def bind(self) -> Bound:
        """The setup in the HTTP client's library (building the client if there is none)."""
        client = self.client
        if client is None:
            from ._lean_env import proxy_applies

            scheme = self.base_url.partition("://")[0].lower()
            if not proxy_applies(scheme):
                return self._bind_lean()
            http = _default_http()  # a proxy: httpx2 speaks to it, as the SDK would
            client = http.AsyncClient(
                timeout=self.timeout,
                limits=http.Limits(
                    max_connections=_MAX_CONNECTIONS, max_keepalive_connections=_MAX_KEEPALIVE
                ),
                follow_redirects=True,
            )
        else:
            http = _module(client)
        base = http.URL(self.base_url)
        raw_path = base.raw_path if base.raw_path.endswith(b"/") else base.raw_path + b"/"
        return Bound(
            client=client,
            url=base.copy_with(raw_path=raw_path + _PATH),  # joined as the SDK joins them
            headers=http.Headers(list(self.headers)),
            timeout=_timeout(http, self.timeout),
        )

    def _bind_lean(self) -> Bound:
        """llmguard's own HTTP/1.1 client (``_lean_http``): no httpx2 to import."""
        from urllib.parse import urlsplit, urlunsplit

        from ._lean_http import LeanClient, Timeouts

        timeouts = Timeouts.of(self.timeout)
        client = LeanClient(
            timeout=timeouts, max_connections=_MAX_CONNECTIONS, max_keepalive=_MAX_KEEPALIVE
        )
        base = urlsplit(self.base_url)
        path = base.path if base.path.endswith("/") else base.path + "/"
        url = urlunsplit((base.scheme, base.netloc, path + _PATH.decode(), base.query, ""))
        return Bound(client=client, url=url, headers=self.headers, timeout=timeouts)


def http_module_of(client: object) -> ModuleType | None:
    """``httpx2`` or ``httpx``: the library ``client`` (an ``AsyncClient``) belongs to."""
    for klass in type(client).__mro__:
        root = klass.__module__.partition(".")[0]
        if root in ("httpx", "httpx2") and klass.__name__ == "AsyncClient":
            return sys.modules[root]
    return None


def _user_agent() -> str:
    from .. import __version__

    return f"llmguard/{__version__}"


def _module(client: object) -> ModuleType:
    found = http_module_of(client)
    if found is None:
        raise ConfigurationError(
            f"http_client must be an httpx2.AsyncClient or httpx.AsyncClient, "
            f"not {type(client).__name__}"
        )
    return found


def _headers(
    *,
    api_key: str,
    organization: str | None,
    project: str | None,
    custom: Mapping[str, object],
) -> tuple[tuple[str, str], ...]:
    """The SDK's request headers (auth, organization, project, the client's default
    headers winning over them), with a user agent of our own and no ``X-Stainless-*``."""
    merged: dict[str, tuple[str, str]] = {}

    def put(name: str, value: object) -> None:
        if isinstance(value, str):
            merged[name.lower()] = (name, value)
        else:  # the SDK's Omit(): the header is removed
            merged.pop(name.lower(), None)

    put("Accept", "application/json")
    put("Content-Type", "application/json")
    put("User-Agent", _user_agent())
    put("Authorization", f"Bearer {api_key}")
    if organization is not None:
        put("OpenAI-Organization", organization)
    if project is not None:
        put("OpenAI-Project", project)
    for name, value in custom.items():
        put(name, value)
    return tuple(merged.values())


def _timeout(http: ModuleType, timeout: Any) -> Any:
    """The timeout in ``http``'s own type (openai 3.x may hold an httpx2 ``Timeout``
    for a legacy httpx client)."""
    as_dict = getattr(timeout, "as_dict", None)
    if callable(as_dict) and not isinstance(timeout, http.Timeout):
        return http.Timeout(**as_dict())
    return timeout


def _query(query: Mapping[str, object]) -> Mapping[str, str] | None:
    if not query:
        return None
    if not all(isinstance(value, str) for value in query.values()):
        raise ConfigurationError(
            'wire="lean" sends default_query values that are strings only; '
            "use the SDK path (the default) for other query values"
        )
    return {key: str(value) for key, value in query.items()}


_REFUSED = (
    ("_provider_runtime", "an auth provider"),
    ("_provider", "an auth provider"),
    ("workload_identity", "workload identity"),
    ("_api_key_provider", "an API key function"),
    ("custom_auth", "custom auth"),
)


def setup_from_client(client: Any) -> WireSetup:
    """The lean client's setup from an ``openai.AsyncOpenAI`` client."""
    names = {klass.__name__ for klass in type(client).__mro__}
    if "AsyncAzureOpenAI" in names:
        raise ConfigurationError(
            'wire="lean" does not speak Azure OpenAI (deployments, api-key, Entra ID); '
            "use the SDK path (the default) for an AsyncAzureOpenAI client"
        )
    http_client = getattr(client, "_client", None)
    http = http_module_of(http_client)
    if http is None or "AsyncOpenAI" not in names:
        raise ConfigurationError(
            'wire="lean" needs an openai.AsyncOpenAI client (on httpx2 or httpx), '
            f"not {type(client).__name__}"
        )
    for attribute, what in _REFUSED:
        if getattr(client, attribute, None) is not None:
            raise ConfigurationError(
                f'wire="lean" sends a static API key; this client uses {what}: '
                "use the SDK path (the default)"
            )
    if getattr(client, "_strict_response_validation", False):
        raise ConfigurationError(
            'wire="lean" does not validate answers; this client asks for '
            "_strict_response_validation: use the SDK path (the default)"
        )
    api_key = getattr(client, "api_key", None)
    if not isinstance(api_key, str) or not api_key:
        raise ConfigurationError('wire="lean" needs a client with an API key')
    return WireSetup(
        base_url=str(client.base_url),
        api_key=api_key,
        headers=_headers(
            api_key=api_key,
            organization=getattr(client, "organization", None),
            project=getattr(client, "project", None),
            custom=getattr(client, "_custom_headers", None) or {},
        ),
        timeout=client.timeout,
        params=_query(getattr(client, "_custom_query", None) or {}),
        client=http_client,
    )


def _default_http() -> ModuleType:
    """httpx2 (openai 3.x's HTTP library), or httpx where it is missing (openai 2.x)."""
    try:
        import httpx2
    except ImportError:
        import httpx

        return httpx
    return httpx2


def setup_from_args(
    *,
    api_key: str | None,
    base_url: str | None,
    organization: str | None,
    project: str | None,
    default_headers: Mapping[str, str] | None,
    timeout: float | None,
    http_client: Any,
) -> WireSetup:
    """The lean client's setup from the provider's arguments, falling back on the same
    environment variables as the SDK (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``,
    ``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID``). openai is not imported."""
    api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
    if not api_key:
        raise ConfigurationError(
            "no API key: pass api_key= or set the OPENAI_API_KEY environment variable"
        )
    base_url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    organization = organization if organization is not None else os.environ.get("OPENAI_ORG_ID")
    project = project if project is not None else os.environ.get("OPENAI_PROJECT_ID")
    if http_client is not None:
        _module(http_client)
    scheme, _, rest = base_url.partition("://")
    if scheme.lower() not in ("http", "https") or not rest.split("/", 1)[0]:
        raise ConfigurationError(f"base_url must be an http(s) URL, not {base_url!r}")
    return WireSetup(
        base_url=base_url if base_url.endswith("/") else base_url + "/",
        api_key=api_key,
        headers=_headers(
            api_key=api_key,
            organization=organization,
            project=project,
            custom=default_headers or {},
        ),
        timeout=timeout,
        client=http_client,
    )

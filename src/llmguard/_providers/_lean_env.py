"""What the environment decides for the lean HTTP client: which CAs to trust and
whether a proxy applies (then llmguard uses httpx2 instead, which speaks to proxies).

The CA choice is httpx2's default (``httpcore2.default_ssl_context``), rebuilt here so
that neither library is imported: ``SSL_CERT_FILE``, else ``SSL_CERT_DIR``, else on
Windows and macOS the system store through ``truststore``, else OpenSSL's compiled-in
system paths (then the usual Linux bundle files). Not certifi: httpx2 does not use it.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl

__all__ = ["default_ssl_context", "proxy_applies"]

# The Linux bundles httpcore2 (after truststore) tries when OpenSSL's paths are unusable.
_CA_FILE_CANDIDATES = (
    "/etc/ssl/cert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/pki/tls/cert.pem",
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/ssl/ca-bundle.pem",
)


def default_ssl_context() -> ssl.SSLContext:
    """The TLS context httpx2 builds by default (``verify=True``, ``trust_env=True``),
    offering HTTP/1.1 by ALPN."""
    ctx = _trusting_context()
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _trusting_context() -> ssl.SSLContext:
    import ssl  # here: the provider's construction does not pay for it

    cafile = os.environ.get("SSL_CERT_FILE")
    if cafile:
        return ssl.create_default_context(cafile=cafile)
    capath = os.environ.get("SSL_CERT_DIR")
    if capath:
        return ssl.create_default_context(capath=capath)
    if sys.platform in ("win32", "darwin"):  # pragma: no cover - Linux runs the tests
        try:
            import truststore
        except ImportError:
            return ssl.create_default_context()
        return truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    paths = ssl.get_default_verify_paths()  # the compiled-in paths, not SSL_CERT_*
    found_file = paths.openssl_cafile if os.path.isfile(paths.openssl_cafile) else None
    found_dir = paths.openssl_capath if os.path.isdir(paths.openssl_capath) else None
    if found_dir and not found_file:  # pragma: no cover - depends on the system
        import re

        hashed = re.compile(r"[0-9a-fA-F]{8}\.\d")
        if not any(hashed.fullmatch(name) for name in os.listdir(found_dir)):
            found_dir = None
    if not found_file and not found_dir:  # pragma: no cover - depends on the system
        found_file = next(filter(os.path.isfile, _CA_FILE_CANDIDATES), None)
    if found_file or found_dir:  # pragma: no branch - a system without CAs trusts none
        ctx.load_verify_locations(found_file, found_dir)
    return ctx


def proxy_applies(scheme: str) -> bool:
    """Whether httpx would look for a proxy for a ``scheme`` URL: ``<scheme>_proxy`` or
    ``all_proxy`` is set (any case; on Windows and macOS also the system settings, as
    ``urllib.request.getproxies`` reads them). ``NO_PROXY`` is left to httpx2."""
    if sys.platform in ("win32", "darwin"):  # pragma: no cover - Linux runs the tests
        from urllib.request import getproxies

        proxies = getproxies()
        return bool(proxies.get(scheme) or proxies.get("all"))
    names = (f"{scheme}_proxy", "all_proxy")
    return any(value and key.lower() in names for key, value in os.environ.items())

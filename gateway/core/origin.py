"""Origin checks against cross-site WebSocket hijacking (RFC 6455 §10.2, §4.2.1 item 8).

Browsers always send ``Origin`` on a WebSocket handshake and scripts cannot forge it, so the
allowlist stops another site's page from opening a socket with the user's cookies.  A request
with no Origin comes from a non-browser client (it holds no victim's cookies) and is allowed
unless the mount says ``require_origin``.  Comparison is exact on the serialised origin
(RFC 6454 §6.2): scheme, host and port, lowercased, default ports dropped — so lookalike
suffixes (``https://example.com.evil``), ``null`` and scheme downgrades all fail.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from gateway.core.decisions import Reject

ANY = "*"
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def normalize(origin: str) -> str | None:
    """``"HTTP://Example.com:80"`` -> ``"http://example.com"``; ``None`` if it is not an origin
    (a path, userinfo, a query, ``null``, an unknown scheme)."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        return None
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal: urlsplit strips the brackets
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def same_origin(host: str, secure: bool) -> str | None:
    """The origin a page served by us under ``Host: host`` would have."""
    return normalize(f"{'https' if secure else 'http'}://{host}")


def check(
    origin: str | None,
    *,
    host: str,
    secure: bool,
    allowed: tuple[str, ...] | None,
    require: bool,
) -> Reject | None:
    """``None`` if the handshake's Origin may connect, else the 403 to send.

    ``allowed`` holds normalised origins (see :func:`normalize`), ``("*",)`` for any, or
    ``None`` for same-origin-as-Host.
    """
    if origin is None:
        return Reject(403, "an Origin header is required") if require else None
    if allowed is not None and ANY in allowed:
        return None
    got = normalize(origin)
    if got is None:
        return Reject(403, "origin not allowed")
    if allowed is None:
        if got == same_origin(host, secure):
            return None
        return Reject(403, "origin not allowed")
    return None if got in allowed else Reject(403, "origin not allowed")

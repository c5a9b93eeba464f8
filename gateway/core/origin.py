"""Origin checks against cross-site WebSocket hijacking (RFC 6455 §10.2, §4.2.1 item 8).

Browsers always send ``Origin`` on a WebSocket handshake and scripts cannot forge it, so the
allowlist stops another site's page from opening a socket with the user's cookies.  A request
with no Origin comes from a non-browser client (it holds no victim's cookies) and is allowed
unless the mount says ``require_origin``.  Comparison is exact on the serialised origin
(RFC 6454 §6.2): scheme, host and port, lowercased, default ports dropped — so lookalike
suffixes (``https://example.com.evil``), ``null`` and scheme downgrades all fail.
"""

from __future__ import annotations

import ipaddress
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


# -- Host allowlist (``server.hosts``), against DNS rebinding ----------------------------------
#
# A page on a rebinding domain talks to the gateway under its own name: Host and Origin both
# say ``evil.test``, so "same origin as Host" holds.  Only a list of the names the gateway is
# really served under stops it (Django's ALLOWED_HOSTS, Starlette's TrustedHostMiddleware).

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def host_name(host: str) -> str:
    """The name part of a ``Host`` value (RFC 9110 §7.2), lowercased, without the port and a
    trailing dot: ``"Example.COM.:8080"`` -> ``"example.com"``, ``"[::1]:80"`` -> ``"[::1]"``."""
    if host.startswith("["):
        end = host.find("]")
        name = host[: end + 1] if end != -1 else host
    else:
        name, colon, port = host.rpartition(":")
        if not colon or not port.isdigit():
            name = host
    name = name.lower()
    return name[:-1] if name.endswith(".") else name


def normalize_host_pattern(pattern: str) -> str | None:
    """A ``server.hosts`` entry in the form :func:`host_allowed` compares, or ``None`` if it is
    not one: ``"*"``, a name or address (``"gw.example"``, ``"10.0.0.1"``, ``"[::1]"``), or
    ``"*.example.com"`` for every subdomain (not ``example.com`` itself).  No ports: any port
    is accepted."""
    if pattern == ANY:
        return ANY
    name = pattern.lower()
    name = name[:-1] if name.endswith(".") else name
    rest = name[2:] if name.startswith("*.") else name
    if name.startswith("[") and name.endswith("]") and len(name) > 2:
        inner = name[1:-1]
        if all(c in "0123456789abcdef:." for c in inner) and ":" in inner:
            return name
        return None
    labels = rest.split(".")
    if not rest or not all(
        label and len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii()
        for label in labels
    ):
        return None
    if any(label.startswith("-") or label.endswith("-") for label in labels):
        return None
    return name


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """Whether a request's ``Host`` value is in ``allowed`` (entries from
    :func:`normalize_host_pattern`; ``"*"`` allows any)."""
    if ANY in allowed:
        return True
    name = host_name(host)
    for pattern in allowed:
        if pattern.startswith("*."):
            if name.endswith(pattern[1:]) and len(name) > len(pattern) - 1:
                return True
        elif name == pattern:
            return True
    return False


def default_hosts(listen_hosts: tuple[str, ...]) -> tuple[str, ...] | None:
    """``server.hosts`` when unset: the loopback names when every listen address is loopback
    (a developer's gateway is not reachable under another name but through rebinding), else
    ``None``, any Host (and ``gateway check`` warns)."""
    return LOOPBACK_HOSTS if listen_hosts and all(map(is_loopback, listen_hosts)) else None


def is_loopback(host: str) -> bool:
    """Whether a listen address (``"127.0.0.1"``, ``"::1"``, ``"localhost"``) is loopback only;
    ``""``, ``"0.0.0.0"`` and ``"::"`` (every interface) are not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False

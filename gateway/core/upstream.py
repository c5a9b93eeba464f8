"""Where a proxied request goes: upstream addresses and the ``[[proxy.routes]]`` prefix table.

Pure (no trio, no I/O): :func:`parse_upstream` turns ``"http://host:port"`` into an
:class:`Upstream`, and :class:`ProxyRoutes` picks the upstream for a request path, the longest
matching prefix first, the top-level ``proxy.upstream`` as the default.  :class:`AuthURL` is
the legacy site's "who is this?" URL (``auth = "upstream"``, :mod:`gateway.auth.upstream`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import urlsplit

# RFC 3986 §3.2.2 reg-name (letters, digits, '-', '.') or IPv4, or an IPv6 literal in brackets.
_URL = re.compile(r"http://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})/?")


@dataclass(frozen=True)
class Upstream:
    """One legacy HTTP server: ``host`` (IPv6 without brackets) and ``port``."""

    host: str
    port: int

    @cached_property
    def authority(self) -> str:
        """``host:port`` as it appears in a ``Host`` header (RFC 9110 §7.2); IPv6 in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @cached_property
    def authority_bytes(self) -> bytes:
        """:attr:`authority` as the proxy's ``Host`` field value (once, not per request)."""
        return self.authority.encode("ascii")

    def __str__(self) -> str:
        return f"http://{self.authority}"


def parse_upstream(url: str) -> Upstream:
    """``"http://127.0.0.1:9000"`` (a trailing ``/`` allowed) -> :class:`Upstream`.

    Only ``http://host:port`` is accepted: no https (the gateway speaks plain HTTP/1.1 to the
    site behind it), no path (the client's target is forwarded unchanged, as nginx's
    ``proxy_pass`` without a URI), no userinfo, query or fragment.  Raises :class:`ValueError`.
    """
    m = _URL.fullmatch(url)
    if m is None:
        raise ValueError(f"expected 'http://host:port', got {url!r}")
    port = int(m["port"])
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be 1-65535, got {port}")
    host = m["host"]
    if host.startswith("["):
        host = host[1:-1]
    elif host.startswith(("-", ".")) or host.endswith("-") or ".." in host:
        raise ValueError(f"invalid host in {url!r}")
    return Upstream(host, port)


@dataclass(frozen=True)
class AuthURL:
    """A parsed ``auth_url``: where to connect (:attr:`upstream`) and what to ask for."""

    upstream: Upstream
    target: str  # path and query, origin-form (RFC 9112 §3.2.1)
    host_header: str  # the URL's authority as written

    @property
    def host(self) -> str:
        return self.upstream.host

    @property
    def port(self) -> int:
        return self.upstream.port

    @classmethod
    def parse(cls, url: str) -> AuthURL:
        """Parse an absolute ``http://host[:port]/path[?query]`` URL; ``ValueError`` otherwise
        (https, user info, fragments and relative URLs are refused)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"not a valid URL: {exc}") from None
        if parts.scheme != "http":
            raise ValueError(f"must be an absolute http:// URL, got {url!r}")
        if not parts.hostname or parts.username is not None or parts.password is not None:
            raise ValueError(f"needs a host and no user info, got {url!r}")
        if parts.fragment or any(c in url for c in " \r\n\t"):
            raise ValueError(f"must not contain a fragment or whitespace, got {url!r}")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(Upstream(parts.hostname, port or 80), target, parts.netloc)


def prefix_matches(prefix: str, path: str) -> bool:
    """Whether the route ``prefix`` covers ``path``, segment-wise: ``/api`` covers ``/api``
    and ``/api/x`` but not ``/apix``; a prefix ending in ``/`` covers everything below it."""
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


class ProxyRoutes:
    """Prefix -> upstream, longest prefix first; ``default`` when none matches (may be None).

    Matching is on the raw (undecoded) request path, as received.  ``streamed``: the prefixes
    whose request bodies are streamed rather than buffered (``request_buffering = false``),
    and ``None`` among them for the default upstream.
    """

    def __init__(
        self,
        routes: Iterable[tuple[str, Upstream]],
        default: Upstream | None,
        *,
        streamed: Iterable[str | None] = (),
    ) -> None:
        self.routes = tuple(sorted(routes, key=lambda r: len(r[0]), reverse=True))
        self.default = default
        self.streamed = frozenset(streamed)

    def match(self, path: str) -> Upstream | None:
        """The upstream serving ``path``, or ``None`` when no route and no default covers it."""
        found = self.route(path)
        return found[0] if found is not None else None

    def route(self, path: str) -> tuple[Upstream, bool] | None:
        """The upstream serving ``path`` and whether its request bodies are buffered."""
        for prefix, upstream in self.routes:
            if prefix_matches(prefix, path):
                return upstream, prefix not in self.streamed
        if self.default is None:
            return None
        return self.default, None not in self.streamed

"""Where a proxied request goes: upstream addresses and the ``[[proxy.routes]]`` prefix table.

Pure (no trio, no I/O): :func:`parse_upstream` turns ``"http://host:port"`` into an
:class:`Upstream`, and :class:`ProxyRoutes` picks the upstream for a request path, the longest
matching prefix first, the top-level ``proxy.upstream`` as the default.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# RFC 3986 §3.2.2 reg-name (letters, digits, '-', '.') or IPv4, or an IPv6 literal in brackets.
_URL = re.compile(r"http://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})/?")


@dataclass(frozen=True)
class Upstream:
    """One legacy HTTP server: ``host`` (IPv6 without brackets) and ``port``."""

    host: str
    port: int

    @property
    def authority(self) -> str:
        """``host:port`` as it appears in a ``Host`` header (RFC 9110 §7.2); IPv6 in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

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

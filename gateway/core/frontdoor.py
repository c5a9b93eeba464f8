"""The front door's decision table: one pure function from an h11 request to a Decision.

``classify(request, policy, secure=...)`` never raises for any request h11 accepts; it only
reads the request, so every row of the table is a unit test.  Order matters and is documented
in the README ("How a request is answered"):

0. an HTTP major version other than 1 (``HTTP/2.0``, ``HTTP/0.9``: h11 parses any digit) ->
   505 and close (RFC 9110 §15.6.6), never proxied;
1. head limits (414/431), then what h11 lets through but we refuse: an invalid or repeated
   Host (RFC 9112 §3.2), a Host not in ``server.hosts`` (DNS rebinding; before anything else,
   health probes included), Content-Length with Transfer-Encoding, Transfer-Encoding on
   HTTP/1.0 (§6.1) -> 400; all close;
2. ``CONNECT`` (any target) -> 405 with ``Allow`` and close: h11 would take a 2xx for a
   tunnel (RFC 9110 §9.3.6), and we are no forward proxy; then a target that is not
   origin-form (``/path?query``) -> 400;
3. ``Upgrade: websocket`` -> route by path; unknown -> :class:`Destroy` (or 404 if configured);
   known -> handshake validation (400/405/426) -> Origin (403) -> :class:`Upgrade`; from a
   trusted proxy (``Policy.trusted``) the Origin is checked against the scheme and host it
   forwarded (``Forwarded``, ``X-Forwarded-Proto``/``-Host``), else against ours and Host;
4. the health and readiness paths -> :class:`Health`;
5. a WebSocket path asked for without the upgrade -> 426 with ``Upgrade: websocket``;
6. static files (GET/HEAD) -> :class:`Static`, other methods -> 405; no static root -> 404;
   with a proxy (``[proxy]``): anything else goes to the upstream its path routes to
   (:class:`Proxy`), and a GET/HEAD that finds no static file falls back to it
   (``Static.fallback``).  Upgrades for unknown paths are never proxied (row 3).  The route
   is chosen on the normalised path (:func:`gateway.core.routing.normalize_path`), so
   ``/%61pi`` and ``//api`` take the ``/api`` route; the target goes upstream unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import h11

from gateway.core import handshake, origin
from gateway.core import headers as hdr
from gateway.core.address import IPAddress, Network, forwarded_scheme_host, in_networks
from gateway.core.decisions import (
    Decision,
    Destroy,
    Health,
    MountRoute,
    Proxy,
    Reject,
    Static,
    Upgrade,
)
from gateway.core.routing import Router, normalize_path
from gateway.core.upstream import ProxyRoutes


@dataclass(frozen=True)
class HeadLimits:
    """Bounds on a request head, checked after parsing: h11 only bounds an *incomplete* head,
    so a large head that arrives in one read would otherwise pass: a client could send
    megabytes of headers in one packet."""

    max_request_line: int = 8 * 1024
    max_header_line: int = 8 * 1024
    max_headers: int = 128
    max_head_bytes: int = 16 * 1024


@dataclass(frozen=True)
class Policy:
    """Everything :func:`classify` consults; built once from the config."""

    router: Router[MountRoute]
    health_path: str = "/healthz"
    ready_path: str = "/readyz"
    static: bool = False
    unknown_path: Literal["destroy", "404"] = "destroy"
    limits: HeadLimits = HeadLimits()
    proxy: ProxyRoutes | None = None  # None: no [proxy], unserved paths are 404
    # server.hosts, normalised (gateway.core.origin.normalize_host_pattern); None: any Host
    hosts: tuple[str, ...] | None = None
    # server.trusted_proxies (+ proxy.trusted_proxies): their X-Forwarded-Proto/-Host and
    # Forwarded give the scheme and host the Origin check uses
    trusted: tuple[Network, ...] = ()


NOT_FOUND = Reject(404, "not found")
# What the gateway itself answers; with a proxy, the methods a site behind may take (the
# site has the last word with its own 405).  Never CONNECT.
ALLOW_OWN = "GET, HEAD"
ALLOW_PROXIED = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"


def classify(
    request: h11.Request,
    policy: Policy,
    *,
    secure: bool = False,
    peer: IPAddress | None = None,
) -> Decision:
    """Decide what to do with ``request`` from ``peer`` (the TCP peer's address, when known);
    see the module docstring for the order."""
    if not request.http_version.startswith(b"1."):
        # RFC 9110 §2.5, §15.6.6: only major version 1 is ours; a higher minor is read as 1.1.
        return Reject(505, "HTTP version not supported", close=True)
    seen = _scan(request, policy.limits)
    if isinstance(seen, Reject):
        return seen
    hosts, upgrades, has_te, has_cl = seen
    refused = _check_host(hosts, policy.hosts) or _check_framing(request, has_te, has_cl)
    if refused is not None:
        return refused
    if request.method == b"CONNECT":
        allow = ALLOW_PROXIED if policy.proxy is not None else ALLOW_OWN
        return Reject(405, "CONNECT is not supported", (("Allow", allow),), close=True)
    if not request.target.startswith(b"/"):
        # Absolute-form is for proxies and "*" for OPTIONS server-wide; we are neither.
        return Reject(400, "request target must be an absolute path", close=True)
    raw_path, raw_query = hdr.split_target(request.target)
    path = raw_path.decode("ascii", "replace")  # h11 only lets visible ASCII through

    if upgrades and b"websocket" in hdr.tokens(upgrades, b"upgrade"):  # is_websocket_upgrade
        return _upgrade(request, policy, path, raw_query.decode("ascii", "replace"), secure, peer)

    if path == policy.health_path:
        return Health(ready=False)
    if path == policy.ready_path:
        return Health(ready=True)
    if policy.router.match(path) is not None:
        # RFC 9110 §15.5.22: a 426 must say which protocol to upgrade to.
        return Reject(
            426,
            "this path is a WebSocket endpoint",
            (("Upgrade", "websocket"), ("Connection", "Upgrade")),
        )
    route = policy.proxy.route(normalize_path(path)) if policy.proxy is not None else None
    proxy = Proxy(route[0], path, request_buffering=route[1]) if route is not None else None
    if not policy.static:
        return proxy or NOT_FOUND
    if request.method not in (b"GET", b"HEAD"):
        return proxy or Reject(405, "method not allowed", (("Allow", "GET, HEAD"),))
    return Static(path, fallback=proxy)


# The fields the checks below read; every other field costs one set lookup in _scan.
_WATCHED = frozenset({b"host", b"upgrade", b"transfer-encoding", b"content-length"})
_Seen = tuple[list[bytes], list[tuple[bytes, bytes]], bool, bool]


def _scan(request: h11.Request, limits: HeadLimits) -> Reject | _Seen:
    """414 for a long request line; 431 for a long header line, too many headers or too big a
    head (sizes of the bytes h11 parsed: h11 only bounds an *incomplete* head).  In the same
    pass over the fields, what the other checks read: the Host values, the Upgrade fields,
    whether Transfer-Encoding and Content-Length came.  One pass, not one per question."""
    line = len(request.method) + len(request.target) + 10  # "M T HTTP/1.1"
    if line > limits.max_request_line:
        return Reject(414, "request line too long", close=True)
    items = hdr.pairs(request.headers)  # lowercase names: the same length as sent
    if len(items) > limits.max_headers:
        return Reject(431, "too many header fields", close=True)
    longest = limits.max_header_line
    total = line + 4
    hosts: list[bytes] = []
    upgrades: list[tuple[bytes, bytes]] = []
    has_te = has_cl = False
    for name, value in items:
        size = len(name) + len(value) + 2  # "name: value"
        if size > longest:
            return Reject(431, "header field too long", close=True)
        total += size + 2
        if name in _WATCHED:
            if name == b"host":
                hosts.append(value)
            elif name == b"upgrade":
                upgrades.append((name, value))
            elif name == b"transfer-encoding":
                has_te = True
            else:
                has_cl = True
    if total > limits.max_head_bytes:
        return Reject(431, "request head too large", close=True)
    return hosts, upgrades, has_te, has_cl


def _check_host(hosts: list[bytes], allowed: tuple[str, ...] | None) -> Reject | None:
    if len(hosts) > 1 or (hosts and not handshake.valid_host(hosts[0])):
        # RFC 9112 §3.2: 400 for several Host lines or an invalid one, on any request.
        return Reject(400, "invalid Host header", close=True)
    # No Host at all (HTTP/1.0 only: h11 refuses it on 1.1) names no other site: a browser,
    # the only client DNS rebinding can drive, always sends one.
    if hosts and allowed is not None and not origin.host_allowed(hdr.text(hosts[0]), allowed):
        return Reject(400, "host not allowed", close=True)
    return None


def _check_framing(request: h11.Request, has_te: bool, has_cl: bool) -> Reject | None:
    if has_te and has_cl:
        # RFC 9112 §6.1: such a message "ought to be handled as an error"; the connection
        # must be closed after responding, else a smuggled request may follow.
        return Reject(400, "both Content-Length and Transfer-Encoding", close=True)
    if has_te and request.http_version == b"1.0":
        return Reject(400, "Transfer-Encoding on HTTP/1.0", close=True)
    return None


def _upgrade(
    request: h11.Request,
    policy: Policy,
    path: str,
    query: str,
    secure: bool,
    peer: IPAddress | None,
) -> Decision:
    match = policy.router.match(path)
    if match is None:
        # Nobody serves this path: like ws's noServer pattern, destroy the socket so no plugin
        # code runs and nothing about the server leaks (or answer 404 if configured).
        if policy.unknown_path == "404":
            return Reject(404, "no WebSocket endpoint at this path", close=True)
        return Destroy("unknown WebSocket path")
    info = handshake.validate(request)
    if isinstance(info, Reject):
        return info
    mount = match.target
    host = info.host
    if peer is not None and policy.trusted and in_networks(peer, policy.trusted):
        # Behind a trusted (TLS-terminating) proxy: the scheme and host the client used.
        forwarded_secure, forwarded_host = forwarded_scheme_host(request.headers)
        if forwarded_secure is not None:
            secure = forwarded_secure
        if forwarded_host is not None and handshake.valid_host(forwarded_host.encode("latin-1")):
            host = forwarded_host
    denied = origin.check(
        info.origin,
        host=host,
        secure=secure,
        allowed=mount.origins,
        require=mount.require_origin,
    )
    if denied is not None:
        return denied
    return Upgrade(mount, match.params, info, path, query)

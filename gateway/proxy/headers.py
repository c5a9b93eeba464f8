"""The proxy's header rules, both directions: pure functions over h11's ``(name, value)`` pairs.

No trio, no I/O: :mod:`gateway.proxy.forward` calls these on the parsed heads, and the unit
tests pin every rule.  Names are lowercase bytes, as h11 gives them.

Requests (client -> upstream), :func:`request_headers`:

* hop-by-hop fields (RFC 9110 §7.6.1) and every field the ``Connection`` header names are
  removed; so is every field whose name contains ``_`` (nginx's ``underscores_in_headers
  off``: ``X_Forwarded_For`` must not alias ``X-Forwarded-For`` behind a CGI-style upstream);
* framing is regenerated, never copied: ``Content-Length`` when the length is known, else
  ``Transfer-Encoding: chunked`` (RFC 9112 §6.1, §6.2);
* ``Host`` is kept (``preserve_host``) or replaced by the upstream's ``host:port``; it goes
  first (RFC 9112 §3.2);
* ``X-Forwarded-For`` is overwritten with the peer address, or, when the peer is a trusted
  proxy, the peer is appended to what it sent; ``X-Forwarded-Proto`` and ``X-Forwarded-Host``
  are ours (``http``/``https``, the client's ``Host``) unless a trusted proxy set them;
  ``Forwarded`` (RFC 7239), ``X-Real-IP``, ``True-Client-IP``, ``CF-Connecting-IP`` and the
  like (:data:`CLIENT_IDENTITY`) only survive from a trusted proxy; ``Via`` gets ``1.1
  gateway`` appended (RFC 9110 §7.6.3).

Responses (upstream -> client), :func:`response_headers`: hop-by-hop and ``Connection``-named
fields removed, ``Content-Length`` dropped when the upstream used a transfer coding (h11 then
re-frames), ``Via`` appended, ``Date`` added when missing (RFC 9110 §6.6.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# The trusted-proxy rules live in the pure core, shared with the per-client limits.
from gateway.core.address import Network as Network
from gateway.core.address import is_trusted as is_trusted
from gateway.core.address import parse_networks as parse_networks

Headers = Sequence[tuple[bytes, bytes]]
HeaderList = list[tuple[bytes, bytes]]

# RFC 9110 §7.6.1 (Connection, Proxy-Connection, Keep-Alive, TE, Transfer-Encoding, Upgrade)
# and §11.7 (Proxy-Authenticate, Proxy-Authorization: for *this* hop); Trailer describes the
# framing we regenerate (RFC 9110 §6.6.2).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
# Fields the proxy writes itself from the original request, so a ``Connection`` header naming
# them cannot make them disappear (the hop-by-hop abuse trick against X-Forwarded-For/Host).
_OURS = frozenset(
    {
        b"host",
        b"content-length",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"forwarded",
        b"via",
    }
)
# Other fields that claim who the client is (nginx's real_ip_header, Akamai, Cloudflare,
# RFC 7239): only a trusted proxy may say; from anyone else they are dropped, never passed on
# for a site to believe (issue 9).
CLIENT_IDENTITY = frozenset(
    {
        b"x-real-ip",
        b"true-client-ip",
        b"cf-connecting-ip",
        b"x-client-ip",
        b"x-cluster-client-ip",
        b"fastly-client-ip",
        b"x-forwarded-port",
        b"x-forwarded-server",
        b"x-forwarded-prefix",
    }
)
VIA_NAME = b"gateway"


@dataclass(frozen=True)
class Client:
    """What the request rules need to know about the client side of the exchange.

    ``peer``: the TCP peer's address (no port), ``None`` when unknown (memory streams);
    ``trusted``: whether that peer is a trusted proxy (``server.trusted_proxies`` or
    ``proxy.trusted_proxies``); ``secure``: TLS.
    """

    peer: str | None
    trusted: bool = False
    secure: bool = False


def connection_named(headers: Headers) -> set[bytes]:
    """The field names listed in ``Connection`` (RFC 9110 §7.6.1), lowercased."""
    names: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            names.update(t for t in (p.strip().lower() for p in value.split(b",")) if t)
    return names


def strip_hop_by_hop(headers: Headers, *, keep: frozenset[bytes] = frozenset()) -> HeaderList:
    """``headers`` without hop-by-hop fields and without those ``Connection`` names, except
    that names in ``keep`` are never removed because ``Connection`` listed them."""
    named = connection_named(headers) - keep
    return [(n, v) for n, v in headers if n not in HOP_BY_HOP and n not in named]


def request_framing(headers: Headers) -> int | None:
    """The request body's length from ``Content-Length``, or ``None`` for chunked / no body.

    The front door and h11 have already refused ambiguous framing (CL with TE, conflicting
    CLs, a TE other than ``chunked``: RFC 9112 §6.1, §6.3), so at most one value counts.
    """
    for name, value in headers:
        if name == b"content-length":
            return int(value.split(b",")[0])
    return None


def request_headers(
    headers: Headers,
    client: Client,
    *,
    http_version: bytes,
    upstream_authority: str,
    preserve_host: bool = True,
) -> HeaderList:
    """The header fields to send upstream for a client request with ``headers``.

    Framing: ``Content-Length`` when the client sent one, ``Transfer-Encoding: chunked`` when
    it sent a chunked body (RFC 9112 §6.3: otherwise there is no body and neither is sent).
    """
    host = _single(headers, b"host")
    kept = [
        (n, v)
        for n, v in strip_hop_by_hop(headers, keep=_OURS)
        if n not in _OURS and b"_" not in n and (client.trusted or n not in CLIENT_IDENTITY)
    ]
    out: HeaderList = []
    out.append((b"host", host if preserve_host and host else upstream_authority.encode()))
    out.extend(kept)
    length = request_framing(headers)
    if length is not None:
        out.append((b"content-length", str(length).encode()))
    elif any(n == b"transfer-encoding" for n, _ in headers):
        out.append((b"transfer-encoding", b"chunked"))
    out.extend(_forwarded(headers, client, host))
    out.append((b"via", _via(headers, http_version)))
    return out


def response_headers(headers: Headers, *, http_version: bytes, date: bytes) -> HeaderList:
    """The header fields to send the client for an upstream response with ``headers``."""
    chunked = any(n == b"transfer-encoding" for n, _ in headers)
    out = [
        (n, v)
        for n, v in strip_hop_by_hop(headers, keep=frozenset({b"content-length", b"via"}))
        if n != b"via" and not (chunked and n == b"content-length")
    ]
    if not any(n == b"date" for n, _ in out):
        out.append((b"date", date))
    out.append((b"via", _via(headers, http_version)))
    return out


def _single(headers: Headers, name: bytes) -> bytes | None:
    found = [v for n, v in headers if n == name]
    return found[0] if len(found) == 1 else None


def _joined(headers: Headers, name: bytes) -> bytes:
    return b", ".join(v.strip() for n, v in headers if n == name and v.strip())


def _forwarded(headers: Headers, client: Client, host: bytes | None) -> HeaderList:
    out: HeaderList = []
    chain = _joined(headers, b"x-forwarded-for") if client.trusted else b""
    if client.peer is not None:
        peer = client.peer.encode("ascii")
        out.append((b"x-forwarded-for", chain + b", " + peer if chain else peer))
    elif chain:
        out.append((b"x-forwarded-for", chain))
    proto = _single(headers, b"x-forwarded-proto") if client.trusted else None
    if proto not in (b"http", b"https"):
        proto = b"https" if client.secure else b"http"
    out.append((b"x-forwarded-proto", proto))
    fwd_host = _single(headers, b"x-forwarded-host") if client.trusted else None
    if fwd_host or host:
        out.append((b"x-forwarded-host", fwd_host or host or b""))
    if client.trusted:
        out.extend((n, v) for n, v in headers if n == b"forwarded")
    return out


def _via(headers: Headers, http_version: bytes) -> bytes:
    # RFC 9110 §7.6.3: the received protocol version, then our pseudonym, appended.
    ours = http_version + b" " + VIA_NAME
    before = _joined(headers, b"via")
    return before + b", " + ours if before else ours

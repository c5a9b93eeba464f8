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
fields removed, ``Content-Length`` dropped when the upstream used a transfer coding (the relay
re-frames), ``Via`` appended, ``Date`` added when missing (RFC 9110 §6.6.1).  :func:`head`
serialises either head, refusing any field that could split it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

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


class Client(NamedTuple):  # (built per request: a tuple is cheaper than a frozen dataclass)
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
    return body_framing(headers)[0]


def body_framing(headers: Headers) -> tuple[int | None, bool]:
    """:func:`request_framing` and whether the body is chunked, in one pass."""
    length: int | None = None
    chunked = False
    for name, value in headers:
        if name == b"content-length":
            if length is None:
                length = int(value.split(b",")[0])
        elif name == b"transfer-encoding":
            chunked = True
    return length, chunked


# Every request field a rule applies to besides the two below (``_`` in the name, the client
# identity fields): one set lookup per field tells the usual field, passed on as is.
_NEVER_KEPT = HOP_BY_HOP | _OURS  # (regenerated or dropped: never among the fields passed on)
_REQUEST_RULED = _NEVER_KEPT | {b"expect"}
# The same for responses: hop-by-hop fields, and those the proxy rewrites or reads.
_RESPONSE_RULED = HOP_BY_HOP | {b"content-length", b"via", b"date"}
_RESPONSE_KEEP = frozenset({b"content-length", b"via"})  # never removed by Connection


def request_headers(
    headers: Headers,
    client: Client,
    *,
    http_version: bytes,
    upstream_authority: str | bytes,
    preserve_host: bool = True,
    body_length: int | None = None,
) -> HeaderList:
    """The header fields to send upstream for a client request with ``headers``.

    Framing: ``Content-Length`` when the client sent one, ``Transfer-Encoding: chunked`` when
    it sent a chunked body (RFC 9112 §6.3: otherwise there is no body and neither is sent).
    ``body_length``: the body was read whole (buffered) and has this length: it goes with
    ``Content-Length`` whatever the client's framing was, and ``Expect`` is dropped (the
    gateway answered it).

    One pass over the fields (they are many, the rules few): the usual field costs one set
    lookup; what the rules need (Host, framing, the forwarding fields, Via, the names
    ``Connection`` lists) is gathered on the way.
    """
    trusted = client.trusted
    kept: HeaderList = []
    hosts: list[bytes] = []
    length: bytes | None = None
    chunked = False
    named: set[bytes] | None = None
    chain: list[bytes] = []  # X-Forwarded-For, from a trusted proxy
    protos: list[bytes] = []
    fwd_hosts: list[bytes] = []
    forwarded: HeaderList = []
    vias: list[bytes] = []
    for field in headers:
        name = field[0]
        if name in _REQUEST_RULED:
            value = field[1]
            if name == b"host":
                hosts.append(value)
            elif name == b"content-length":
                if length is None:
                    length = value
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"connection":
                named = _connection_tokens(value, named)
            elif name == b"via":
                vias.append(value)
            elif name == b"expect":
                if body_length is None:
                    kept.append(field)
            elif trusted:
                if name == b"x-forwarded-for":
                    chain.append(value)
                elif name == b"x-forwarded-proto":
                    protos.append(value)
                elif name == b"x-forwarded-host":
                    fwd_hosts.append(value)
                elif name == b"forwarded":
                    forwarded.append(field)
            # any other: hop-by-hop, gone
        elif b"_" in name or (not trusted and name in CLIENT_IDENTITY):
            continue
        else:
            kept.append(field)
    if named and not named <= _NEVER_KEPT:
        # Fields the proxy writes itself are never removed this way (_OURS), and hop-by-hop
        # ones are gone already (``Connection: keep-alive`` needs no second pass).
        kept = [f for f in kept if f[0] not in named]
    host = hosts[0] if len(hosts) == 1 else None
    if preserve_host and host:
        out: HeaderList = [(b"host", host)]
    else:
        authority = upstream_authority
        out = [(b"host", authority if isinstance(authority, bytes) else authority.encode())]
    out += kept
    if body_length is not None:
        out.append((b"content-length", b"%d" % body_length))
    elif length is not None:
        out.append((b"content-length", b"%d" % int(length.split(b",")[0])))
    elif chunked:
        out.append((b"transfer-encoding", b"chunked"))
    # Who the client is (X-Forwarded-*, Forwarded): ours, or a trusted proxy's plus ours.
    before = _join(chain)
    if client.peer is not None:
        peer = client.peer.encode("ascii")
        out.append((b"x-forwarded-for", before + b", " + peer if before else peer))
    elif before:
        out.append((b"x-forwarded-for", before))
    proto = protos[0] if len(protos) == 1 else None
    if proto != b"http" and proto != b"https":
        proto = b"https" if client.secure else b"http"
    out.append((b"x-forwarded-proto", proto))
    fwd_host = fwd_hosts[0] if len(fwd_hosts) == 1 else None
    if fwd_host or host:
        out.append((b"x-forwarded-host", fwd_host or host or b""))
    if forwarded:
        out += forwarded
    out.append((b"via", _via(vias, http_version)))
    return out


def response_headers(headers: Headers, *, http_version: bytes, date: bytes) -> HeaderList:
    """The header fields to send the client for an upstream response with ``headers``.

    One pass, as :func:`request_headers`; a second only in the rare cases that need one (a
    ``Connection`` naming fields, both ``Content-Length`` and ``Transfer-Encoding``)."""
    out: HeaderList = []
    named: set[bytes] | None = None
    vias: list[bytes] = []
    chunked = has_length = has_date = False
    for field in headers:
        name = field[0]
        if name in _RESPONSE_RULED:
            if name == b"content-length":
                has_length = True
                out.append(field)
            elif name == b"date":
                has_date = True
                out.append(field)
            elif name == b"via":
                vias.append(field[1])
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"connection":
                named = _connection_tokens(field[1], named)
            # any other: hop-by-hop, gone
        else:
            out.append(field)
    if named:
        named -= _RESPONSE_KEEP | HOP_BY_HOP  # never removed / gone already (keep-alive)
        if named:
            out = [f for f in out if f[0] not in named]
            has_date = has_date and b"date" not in named
    if chunked and has_length:
        # The upstream's transfer coding wins (RFC 9112 §6.3); the relay frames anew.
        out = [f for f in out if f[0] != b"content-length"]
    if not has_date:
        out.append((b"date", date))
    out.append((b"via", _via(vias, http_version)))
    return out


def head(start_line: bytes, fields: Headers) -> bytes:
    """``start_line`` (without its CRLF), the fields and the empty line, as bytes.

    Raises :class:`ValueError` when a CR, LF or NUL hides anywhere in the pieces (one could
    split the head, or smuggle a second one: RFC 9110 §5.5, RFC 9112 §2.2), or a name is not
    a token.  The fields came from h11's parser (which checked each) or from the rules above;
    this last check before they go out looks at the whole head at once (a few scans in C)
    instead of running a regular expression per field."""
    data = b"\r\n".join([start_line, *[n + b": " + v for n, v in fields], b"", b""])
    lines = len(fields) + 2
    if (
        data.count(b"\n") != lines
        or data.count(b"\r") != lines
        or b"\0" in data
        or b"\n: " in data  # an empty name
        or not _tokens(b"-".join([n for n, _ in fields]))  # each name a token (§5.6.2)
    ):
        raise ValueError("unsendable head: a CR, LF or NUL inside a field, or a bad name")
    return data


def _tokens(names: bytes) -> bool:
    # Letters, digits and '-' (every usual name) are tchars: one C call decides those.
    return names.replace(b"-", b"").isalnum() or not _NOT_TCHAR.search(names)


_NOT_TCHAR = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")  # RFC 9110 §5.6.2 tchar


def _connection_tokens(value: bytes, named: set[bytes] | None) -> set[bytes]:
    tokens = named if named is not None else set()
    tokens.update(t for t in (p.strip().lower() for p in value.split(b",")) if t)
    return tokens


def _join(values: list[bytes]) -> bytes:
    if not values:  # the usual case: nothing to append to
        return b""
    if len(values) == 1:
        return values[0].strip()
    return b", ".join(s for s in (v.strip() for v in values) if s)


def _via(before: list[bytes], http_version: bytes) -> bytes:
    # RFC 9110 §7.6.3: the received protocol version, then our pseudonym, appended.
    ours = http_version + b" " + VIA_NAME
    joined = _join(before)
    return joined + b", " + ours if joined else ours

"""Who the client is: the TCP peer, or, behind a trusted proxy, the client it forwarded.

Pure (no trio, no I/O): the one definition of "the client's address" that the per-client limits
(:mod:`gateway.core.limiter`), ``session.remote`` and the proxy's ``X-Forwarded-For`` rules
share.  ``server.trusted_proxies`` (with ``proxy.trusted_proxies``, kept for older configs) is
the list of proxies whose word we take.

:func:`client_address`: for a peer that is not a trusted proxy, the peer (whatever headers it
sent: anyone can write ``X-Forwarded-For``).  For a trusted proxy, ``X-Forwarded-For`` is read
from the right, each hop appended by the proxy in front of it, skipping hops that are
themselves trusted proxies; the first untrusted hop is the client (nginx's ``real_ip_recursive
on``).  Entries to the left of it were written by the client and are never believed.  If every
hop is trusted, the leftmost is the client; a hop that is not an address (``unknown``, junk)
ends the walk at the last address a trusted proxy vouched for.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Headers = Sequence[tuple[bytes, bytes]]

# A forwarded chain longer than this is not read further (each hop is a trusted proxy's
# address, so a real chain is a handful; the head size bounds the rest anyway).
MAX_HOPS = 32


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """``["10.0.0.0/8", "127.0.0.1"]`` -> networks (a bare address is a /32 or /128).

    Host bits are refused (``10.0.0.1/8``: a typo that would trust a whole network);
    raises :class:`ValueError` naming the bad entry.
    """
    out: list[Network] = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value, strict=True))
        except ValueError as exc:
            raise ValueError(f"not an IP address or CIDR network: {value!r} ({exc})") from None
    return tuple(out)


class ListenAddress(NamedTuple):
    """Where to listen (``server.listen``, ``admin.listen``): ``host`` (IPv6 without brackets,
    ``0.0.0.0`` / ``::`` for every address) and ``port`` (0: a free one)."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


_LISTEN_HOST = re.compile(r"[A-Za-z0-9.\-:]*")


def parse_listen(address: str) -> ListenAddress:
    """``"127.0.0.1:8080"`` / ``"[::1]:8080"`` / ``"localhost:0"`` -> ``(host, port)``;
    :class:`ValueError` naming the problem otherwise."""
    host, colon, port = address.rpartition(":")
    if not colon or not host:
        raise ValueError(f"expected 'host:port', got {address!r}")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"unbalanced '[' in {address!r}")
        host = host[1:-1]
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"port must be 0-65535, got {port!r}")
    if not host or not _LISTEN_HOST.fullmatch(host):
        raise ValueError(f"invalid host {host!r}")
    return ListenAddress(host, int(port))


def unmapped(address: IPAddress) -> IPAddress:
    """``::ffff:10.0.0.1`` (an IPv4 client on a dual-stack socket) -> ``10.0.0.1``."""
    if address.version == 6:
        mapped = address.ipv4_mapped
        if mapped is not None:
            return mapped
    return address


def in_networks(address: IPAddress, networks: Sequence[Network]) -> bool:
    """Whether ``address`` (or the IPv4 address it maps) lies in one of ``networks``."""
    if not networks:
        return False
    candidates = {address, unmapped(address)}
    return any(a in net for a in candidates for net in networks if a.version == net.version)


def is_trusted(peer: str | None, networks: Sequence[Network]) -> bool:
    """Whether ``peer`` (an IP address as text) lies in one of ``networks``."""
    if peer is None or not networks:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return in_networks(address, networks)


def parse_hop(text: str) -> IPAddress | None:
    """One ``X-Forwarded-For`` entry as an address: ``203.0.113.7``, ``2001:db8::1``, and the
    forms with a port some proxies write (``203.0.113.7:5100``, ``[2001:db8::1]:5100``);
    ``None`` for anything else (``unknown``, an obfuscated ``Forwarded`` name, a zone id)."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not (text[end + 1 :] == "" or text[end + 1 :].startswith(":")):
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    if "%" in text:
        return None  # a zone id names an interface of the proxy's host, not a client
    try:
        return unmapped(ipaddress.ip_address(text))
    except ValueError:
        return None


def forwarded_for(headers: Headers) -> list[str]:
    """The ``X-Forwarded-For`` hops, left to right, over all its fields (RFC 9110 §5.3: one
    list, in order)."""
    hops: list[str] = []
    for name, value in headers:
        if name == b"x-forwarded-for":
            hops.extend(v for v in value.decode("latin-1").split(",") if v.strip())
    return hops


def client_address(peer: IPAddress, headers: Headers, trusted: Sequence[Network]) -> IPAddress:
    """The client's address for a request from ``peer`` with ``headers`` (module docstring)."""
    peer = unmapped(peer)
    if not trusted or not in_networks(peer, trusted):
        return peer
    current = peer
    for hop in reversed(forwarded_for(headers)[-MAX_HOPS:]):
        address = parse_hop(hop)
        if address is None:
            return current
        if not in_networks(address, trusted):
            return address
        current = address
    return current


# -- scheme and host, behind a trusted proxy ---------------------------------------------------
#
# A TLS-terminating proxy talks plain HTTP to us: the browser's Origin is https://, and only the
# proxy knows that.  From a trusted proxy, the scheme and host it says the client used replace
# ours for the Origin check and the logs; from anyone else the headers mean nothing.

_SCHEMES = {"http": False, "https": True, "ws": False, "wss": True}


def _last_value(headers: Headers, name: bytes) -> str | None:
    """The rightmost list element of header ``name`` (over all its fields): what the proxy
    nearest to us wrote, since each proxy appends."""
    value = None
    for n, v in headers:
        if n == name:
            parts = [p.strip() for p in v.decode("latin-1").split(",") if p.strip()]
            if parts:
                value = parts[-1]
    return value


def _forwarded_element(headers: Headers) -> dict[str, str]:
    """The last element of ``Forwarded`` (RFC 7239 §4) as ``{param: value}``, quotes removed
    (a quoted value holding a comma is not split correctly; proxies write ``proto`` and
    ``host`` without one)."""
    element = _last_value(headers, b"forwarded")
    params: dict[str, str] = {}
    if element is None:
        return params
    for pair in element.split(";"):
        name, eq, value = pair.partition("=")
        if eq:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            params[name.strip().lower()] = value
    return params


def forwarded_scheme_host(headers: Headers) -> tuple[bool | None, str | None]:
    """What a trusted proxy says the client asked for: ``(secure, host)``, each ``None`` when
    not said.  ``Forwarded``'s ``proto``/``host`` (RFC 7239 §5.3, §5.4) win over
    ``X-Forwarded-Proto``/``X-Forwarded-Host``; a scheme other than http(s)/ws(s) says nothing.
    The host is returned as sent: the caller validates it as a ``Host`` value."""
    element = _forwarded_element(headers)
    proto = element.get("proto") or _last_value(headers, b"x-forwarded-proto")
    host = element.get("host") or _last_value(headers, b"x-forwarded-host")
    secure = _SCHEMES.get(proto.lower()) if proto is not None else None
    return secure, host or None

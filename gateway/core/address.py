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
from collections.abc import Iterable, Sequence

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

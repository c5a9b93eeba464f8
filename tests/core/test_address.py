"""The client's address: the peer, or behind a trusted proxy the forwarded client
(gateway/core/address.py)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.address import (
    MAX_HOPS,
    ListenAddress,
    client_address,
    forwarded_for,
    in_networks,
    parse_hop,
    parse_listen,
    parse_networks,
)

ip = ipaddress.ip_address
TRUSTED = parse_networks(["10.0.0.0/8", "2001:db8:ffff::/48"])
PROXY = ip("10.0.0.2")


def xff(*values: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-forwarded-for", v.encode("latin-1")) for v in values]


@pytest.mark.parametrize(
    ("peer", "headers", "client"),
    [
        # Not a trusted proxy: the header is anyone's to write and is ignored.
        ("198.51.100.9", xff("203.0.113.7"), "198.51.100.9"),
        # A trusted proxy: the hop it appended.
        ("10.0.0.2", xff("203.0.113.7"), "203.0.113.7"),
        # The client wrote the left part itself: only the rightmost untrusted hop counts.
        ("10.0.0.2", xff("1.1.1.1, 203.0.113.7"), "203.0.113.7"),
        # Two proxies of ours: skip the inner one.
        ("10.0.0.2", xff("1.1.1.1, 203.0.113.7, 10.9.9.9"), "203.0.113.7"),
        # Every hop trusted: the leftmost (an internal client behind our proxies).
        ("10.0.0.2", xff("10.0.0.3, 10.0.0.4"), "10.0.0.3"),
        # Nothing forwarded: the proxy itself.
        ("10.0.0.2", [], "10.0.0.2"),
        ("10.0.0.2", xff(""), "10.0.0.2"),
        # Junk where an address should be: the last address a trusted proxy vouched for.
        ("10.0.0.2", xff("203.0.113.7, unknown"), "10.0.0.2"),
        ("10.0.0.2", xff("unknown, 10.0.0.5"), "10.0.0.5"),
        # Several fields are one list, in order (RFC 9110 §5.3).
        ("10.0.0.2", xff("203.0.113.7", "10.0.0.9"), "203.0.113.7"),
        ("10.0.0.2", xff("10.0.0.9", "203.0.113.8"), "203.0.113.8"),
        # Ports and brackets some proxies write.
        ("10.0.0.2", xff("203.0.113.7:5100"), "203.0.113.7"),
        ("10.0.0.2", xff("[2001:db8::7]:443"), "2001:db8::7"),
        ("10.0.0.2", xff("2001:db8::7"), "2001:db8::7"),
        ("10.0.0.2", xff("[2001:db8::7]"), "2001:db8::7"),
        # An IPv4 client on a dual-stack socket is an IPv4 client, trusted or not.
        ("::ffff:10.0.0.2", xff("203.0.113.7"), "203.0.113.7"),
        ("::ffff:198.51.100.9", xff("203.0.113.7"), "198.51.100.9"),
        ("10.0.0.2", xff("::ffff:203.0.113.7"), "203.0.113.7"),
        # An IPv6 proxy of ours.
        ("2001:db8:ffff::1", xff("2001:db8:1::5"), "2001:db8:1::5"),
    ],
)
def test_client_address(peer: str, headers: list[tuple[bytes, bytes]], client: str) -> None:
    assert client_address(ip(peer), headers, TRUSTED) == ip(client)


def test_no_trusted_proxies_means_the_peer() -> None:
    assert client_address(ip("10.0.0.2"), xff("203.0.113.7"), ()) == ip("10.0.0.2")


def test_a_long_chain_is_read_only_so_far() -> None:
    chain = ["203.0.113.7"] + [f"10.0.0.{i}" for i in range(1, MAX_HOPS + 5)]
    # Past MAX_HOPS trusted hops the walk stops at the last one it read.
    assert client_address(PROXY, xff(", ".join(chain)), TRUSTED) == ip(chain[-MAX_HOPS])
    short = ["203.0.113.7"] + [f"10.0.0.{i}" for i in range(1, MAX_HOPS)]
    assert client_address(PROXY, xff(", ".join(short)), TRUSTED) == ip("203.0.113.7")


@pytest.mark.parametrize(
    "text",
    ["unknown", "", "_hidden", "fe80::1%eth0", "[fe80::1%eth0]:80", "[::1", "[::1]x", "1.2.3"],
)
def test_parse_hop_refuses(text: str) -> None:
    assert parse_hop(text) is None


def test_forwarded_for_reads_every_field_in_order() -> None:
    headers = [*xff("a, b"), (b"x-other", b"c"), *xff(" d ,,e")]
    assert [h.strip() for h in forwarded_for(headers)] == ["a", "b", "d", "e"]


def test_in_networks_matches_mapped_addresses() -> None:
    assert in_networks(ip("::ffff:10.1.2.3"), TRUSTED)
    assert not in_networks(ip("::ffff:11.1.2.3"), TRUSTED)
    assert not in_networks(ip("10.1.2.3"), ())


hop_text = st.one_of(
    st.ip_addresses().map(str),
    st.text(alphabet="0123456789abcdef:.[]% unknow", max_size=20),
)


@given(
    peer=st.ip_addresses(),
    hops=st.lists(hop_text, max_size=8),
)
def test_any_header_gives_an_address_from_the_chain_or_the_peer(
    peer: ipaddress.IPv4Address | ipaddress.IPv6Address, hops: list[str]
) -> None:
    headers = xff(", ".join(hops))
    client = client_address(peer, headers, TRUSTED)
    chain = {parse_hop(h) for h in hops} - {None}
    peer4 = peer.ipv4_mapped if isinstance(peer, ipaddress.IPv6Address) else None
    assert client in chain | {peer, peer4}
    if not in_networks(peer, TRUSTED):
        assert client in (peer, peer4)  # an untrusted peer is never taken at its word


# --------------------------------------------------------------------------- scheme and host


def test_forwarded_scheme_and_host() -> None:
    from gateway.core.address import forwarded_scheme_host

    assert forwarded_scheme_host([]) == (None, None)
    assert forwarded_scheme_host(
        [(b"x-forwarded-proto", b"https"), (b"x-forwarded-host", b"chat.example.com")]
    ) == (True, "chat.example.com")
    # The rightmost value: what the proxy next to us wrote (each proxy appends).
    assert forwarded_scheme_host([(b"x-forwarded-proto", b"http, https")]) == (True, None)
    assert forwarded_scheme_host([(b"x-forwarded-proto", b"gopher")]) == (None, None)
    # RFC 7239 wins over the X- headers; quoted values unquoted.
    headers = [
        (b"x-forwarded-proto", b"http"),
        (b"forwarded", b'for=1.2.3.4;proto=http, for=5.6.7.8;proto=https;host="gw.test:8443"'),
    ]
    assert forwarded_scheme_host(headers) == (True, "gw.test:8443")


@pytest.mark.parametrize(
    ("address", "parsed"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:80", ("localhost", 80)),
    ],
)
def test_parse_listen(address: str, parsed: tuple[str, int]) -> None:
    assert parse_listen(address) == parsed
    assert str(parse_listen(address)) == address


@pytest.mark.parametrize(
    "address", ["8080", ":8080", "[::1:80", "host:65536", "host:-1", "ho st:80", "[]:80"]
)
def test_parse_listen_refuses(address: str) -> None:
    with pytest.raises(ValueError, match=r"host|port|\["):
        parse_listen(address)


def test_listen_address_prints_ipv6_in_brackets() -> None:
    assert str(ListenAddress("::1", 0)) == "[::1]:0"
    assert str(ListenAddress("0.0.0.0", 80)) == "0.0.0.0:80"

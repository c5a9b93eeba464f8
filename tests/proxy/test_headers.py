"""The proxy's header rules (gateway/proxy/headers.py), one table row per rule."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.proxy.headers import (
    Client,
    head,
    is_trusted,
    parse_networks,
    request_framing,
    request_headers,
    response_headers,
    strip_hop_by_hop,
)

H = list[tuple[bytes, bytes]]
PEER = Client("198.51.100.9")
TRUSTED = Client("10.0.0.2", trusted=True)


def req(
    headers: H, client: Client = PEER, *, preserve_host: bool = True, version: bytes = b"1.1"
) -> H:
    return request_headers(
        [(b"host", b"site.example"), *headers],
        client,
        http_version=version,
        upstream_authority="127.0.0.1:9000",
        preserve_host=preserve_host,
    )


def get(headers: H, name: bytes) -> list[bytes]:
    return [v for n, v in headers if n == name]


HOP = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"proxy-authenticate",
    b"proxy-authorization",
]


@pytest.mark.parametrize("name", HOP)
def test_hop_by_hop_fields_are_stripped_both_ways(name: bytes) -> None:
    headers = [(name, b"x"), (b"x-kept", b"1")]
    assert strip_hop_by_hop(headers) == [(b"x-kept", b"1")]
    assert name not in [n for n, _ in req(headers)] or name == b"transfer-encoding"
    assert name not in [n for n, _ in response_headers(headers, http_version=b"1.1", date=b"D")]


@pytest.mark.parametrize(
    ("connection", "gone", "kept"),
    [
        (b"X-A", [b"x-a"], [b"x-b"]),
        (b"close, X-A , x-b", [b"x-a", b"x-b"], []),
        (b"keep-alive,,X-B", [b"x-b"], [b"x-a"]),
        (b"keep-alive", [], [b"x-a", b"x-b", b"expect"]),
        (b"Expect", [b"expect"], [b"x-a", b"x-b"]),  # a field the rules read is named too
    ],
)
def test_fields_named_in_connection_are_stripped(
    connection: bytes, gone: list[bytes], kept: list[bytes]
) -> None:
    headers = [(b"connection", connection), (b"x-a", b"1"), (b"x-b", b"2"), (b"expect", b"3")]
    for out in (req(headers), response_headers(headers, http_version=b"1.1", date=b"D")):
        names = [n for n, _ in out]
        assert all(g not in names for g in gone)
        assert all(k in names for k in kept)


@pytest.mark.parametrize(
    "name", [b"host", b"content-length", b"x-forwarded-for", b"x-forwarded-proto", b"via"]
)
def test_connection_cannot_remove_the_fields_the_proxy_writes(name: bytes) -> None:
    out = req([(b"connection", name), (b"content-length", b"3")])
    assert get(out, name), name


def test_names_with_underscores_are_dropped_from_requests() -> None:
    out = req([(b"x_forwarded_for", b"6.6.6.6"), (b"x-ok", b"1"), (b"a_b", b"2")])
    assert [n for n, _ in out if b"_" in n] == []
    assert get(out, b"x-ok") == [b"1"]


@pytest.mark.parametrize(
    ("client", "sent", "expected"),
    [
        (PEER, [], [b"198.51.100.9"]),
        (PEER, [b"1.2.3.4"], [b"198.51.100.9"]),  # spoofed by an untrusted peer: overwritten
        (TRUSTED, [b"1.2.3.4"], [b"1.2.3.4, 10.0.0.2"]),
        (TRUSTED, [b"1.2.3.4", b"5.6.7.8"], [b"1.2.3.4, 5.6.7.8, 10.0.0.2"]),
        (TRUSTED, [], [b"10.0.0.2"]),
        (Client(None), [b"1.2.3.4"], []),  # unknown peer, untrusted: nothing to say
    ],
)
def test_x_forwarded_for(client: Client, sent: list[bytes], expected: list[bytes]) -> None:
    out = req([(b"x-forwarded-for", v) for v in sent], client)
    assert get(out, b"x-forwarded-for") == expected


@pytest.mark.parametrize(
    ("client", "sent", "expected"),
    [
        (PEER, None, b"http"),
        (Client("1.1.1.1", secure=True), None, b"https"),
        (PEER, b"https", b"http"),  # untrusted: ours
        (TRUSTED, b"https", b"https"),  # a trusted TLS terminator in front
        (TRUSTED, b"gopher", b"http"),  # nonsense is replaced
    ],
)
def test_x_forwarded_proto(client: Client, sent: bytes | None, expected: bytes) -> None:
    headers = [] if sent is None else [(b"x-forwarded-proto", sent)]
    assert get(req(headers, client), b"x-forwarded-proto") == [expected]


@pytest.mark.parametrize(
    ("client", "expected"), [(PEER, [b"site.example"]), (TRUSTED, [b"front.example"])]
)
def test_x_forwarded_host(client: Client, expected: list[bytes]) -> None:
    out = req([(b"x-forwarded-host", b"front.example")], client)
    assert get(out, b"x-forwarded-host") == expected


@pytest.mark.parametrize(("client", "kept"), [(PEER, False), (TRUSTED, True)])
def test_forwarded_survives_only_from_a_trusted_proxy(client: Client, kept: bool) -> None:
    assert bool(get(req([(b"forwarded", b"for=1.2.3.4")], client), b"forwarded")) is kept


@pytest.mark.parametrize(
    ("preserve", "expected"), [(True, b"site.example"), (False, b"127.0.0.1:9000")]
)
def test_host_is_first_and_preserved_or_replaced(preserve: bool, expected: bytes) -> None:
    out = req([(b"x-a", b"1")], preserve_host=preserve)
    assert out[0] == (b"host", expected)
    assert len(get(out, b"host")) == 1


def test_an_http_1_0_request_without_host_gets_the_upstreams() -> None:
    out = request_headers(
        [], PEER, http_version=b"1.0", upstream_authority="up:1", preserve_host=True
    )
    assert out[0] == (b"host", b"up:1")
    assert get(out, b"via") == [b"1.0 gateway"]
    assert get(out, b"x-forwarded-host") == []


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ([], b"1.1 gateway"),
        ([b"1.0 fred"], b"1.0 fred, 1.1 gateway"),
        ([b"a", b"b"], b"a, b, 1.1 gateway"),
    ],
)
def test_via_is_appended(sent: list[bytes], expected: bytes) -> None:
    assert get(req([(b"via", v) for v in sent]), b"via") == [expected]


@pytest.mark.parametrize(
    ("headers", "length", "framing"),
    [
        ([], None, []),
        ([(b"content-length", b"12")], 12, [(b"content-length", b"12")]),
        ([(b"content-length", b"0")], 0, [(b"content-length", b"0")]),
        ([(b"transfer-encoding", b"chunked")], None, [(b"transfer-encoding", b"chunked")]),
    ],
)
def test_request_framing_is_regenerated(headers: H, length: int | None, framing: H) -> None:
    assert request_framing(headers) == length
    out = req(headers)
    assert [(n, v) for n, v in out if n in (b"content-length", b"transfer-encoding")] == framing


@pytest.mark.parametrize(
    ("headers", "expected_length"),
    [
        ([(b"content-length", b"5")], [b"5"]),
        ([(b"transfer-encoding", b"chunked"), (b"content-length", b"5")], []),  # TE wins
        ([], []),
    ],
)
def test_response_framing(headers: H, expected_length: list[bytes]) -> None:
    out = response_headers(headers, http_version=b"1.1", date=b"D")
    assert get(out, b"content-length") == expected_length
    assert get(out, b"transfer-encoding") == []


def test_response_gets_date_when_missing_and_via() -> None:
    out = response_headers([(b"via", b"1.0 x")], http_version=b"1.0", date=b"NOW")
    assert get(out, b"date") == [b"NOW"]
    assert get(out, b"via") == [b"1.0 x, 1.0 gateway"]
    kept = response_headers([(b"date", b"THEN")], http_version=b"1.1", date=b"NOW")
    assert get(kept, b"date") == [b"THEN"]


@pytest.mark.parametrize(
    ("peer", "networks", "trusted"),
    [
        ("10.1.2.3", ["10.0.0.0/8"], True),
        ("11.1.2.3", ["10.0.0.0/8"], False),
        ("127.0.0.1", ["127.0.0.1"], True),
        ("::1", ["::1"], True),
        ("::ffff:10.0.0.1", ["10.0.0.0/8"], True),  # IPv4-mapped
        ("2001:db8::1", ["10.0.0.0/8"], False),
        (None, ["0.0.0.0/0"], False),
        ("not-an-ip", ["0.0.0.0/0"], False),
        ("10.0.0.1", [], False),
    ],
)
def test_is_trusted(peer: str | None, networks: list[str], trusted: bool) -> None:
    assert is_trusted(peer, parse_networks(networks)) is trusted


@pytest.mark.parametrize("bad", ["10.0.0.1/8", "10.0.0.0/33", "nope", "", "10.0.0.0/8 "])
def test_parse_networks_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="CIDR"):
        parse_networks([bad])


def test_parse_networks_accepts_addresses_and_networks() -> None:
    assert parse_networks(["10.0.0.0/8", "::1"]) == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )


# --------------------------------------------------------------------------- client identity


IDENTITY_FIELDS = [
    (b"x-real-ip", b"6.6.6.6"),
    (b"true-client-ip", b"6.6.6.6"),
    (b"cf-connecting-ip", b"6.6.6.6"),
    (b"x-client-ip", b"6.6.6.6"),
    (b"forwarded", b"for=6.6.6.6"),
    (b"x-forwarded-port", b"443"),
]


def test_client_identity_fields_from_an_untrusted_peer_are_dropped() -> None:
    out = req([(b"host", b"site"), *IDENTITY_FIELDS, (b"x-kept", b"1")])
    names = [n for n, _ in out]
    for name, _ in IDENTITY_FIELDS:
        assert name not in names
    assert (b"x-kept", b"1") in out


def test_client_identity_fields_from_a_trusted_proxy_are_kept() -> None:
    out = req([(b"host", b"site"), *IDENTITY_FIELDS], TRUSTED)
    for field in IDENTITY_FIELDS:
        assert field in out


def test_a_connection_header_cannot_shield_an_identity_field() -> None:
    out = req([(b"host", b"site"), (b"connection", b"x-real-ip"), (b"x-real-ip", b"6.6.6.6")])
    assert b"x-real-ip" not in [n for n, _ in out]


# -- one pass: the rules hold for any mix of fields ------------------------------------------

_NAMES = st.sampled_from(
    [
        b"host",
        b"connection",
        b"transfer-encoding",
        b"te",
        b"upgrade",
        b"keep-alive",
        b"proxy-authorization",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"forwarded",
        b"via",
        b"expect",
        b"date",
        b"x-real-ip",
        b"x_forwarded_for",
        b"x-a",
        b"x-b",
        b"cookie",
    ]
)
_VALUES = st.sampled_from(
    [b"1", b"x-a", b"close, x-b", b"keep-alive", b"expect", b"chunked", b"10.0.0.1", b" ", b"https"]
)
_FIELDS = st.lists(
    st.tuples(_NAMES, _VALUES)
    # h11 holds Content-Length to digits (and the front door refuses it with chunked)
    | st.tuples(st.just(b"content-length"), st.sampled_from([b"0", b"5"])),
    max_size=12,
)


@given(_FIELDS, st.booleans(), st.sampled_from([None, 0, 7]))
def test_request_rules_hold_for_any_fields(fields: H, trusted: bool, buffered: int | None) -> None:
    client = Client("198.51.100.9", trusted=trusted)
    out = request_headers(
        fields, client, http_version=b"1.1", upstream_authority="up:1", body_length=buffered
    )
    names = [n for n, _ in out]
    named = {t.strip().lower() for n, v in fields if n == b"connection" for t in v.split(b",")}
    ours = {b"host", b"content-length", b"x-forwarded-for", b"x-forwarded-proto", b"via"}
    assert out[0][0] == b"host" and names.count(b"host") == 1
    assert not set(names) & {n for n in HOP if n != b"transfer-encoding"}
    assert all(b"_" not in n for n in names)
    for name in names:  # Connection removes what it names, never the fields the proxy writes
        assert name not in named or name in ours | {b"x-forwarded-host", b"forwarded"}
    assert get(out, b"x-forwarded-for")[-1].endswith(b"198.51.100.9")
    assert len(get(out, b"via")) == 1 and get(out, b"via")[0].endswith(b"1.1 gateway")
    if not trusted:
        assert b"x-real-ip" not in names and b"forwarded" not in names
        assert get(out, b"x-forwarded-for") == [b"198.51.100.9"]
    framing = [f for f in out if f[0] in (b"content-length", b"transfer-encoding")]
    if buffered is not None:
        assert framing == [(b"content-length", str(buffered).encode())]
        assert b"expect" not in names
    else:
        assert len(framing) <= 1
    assert head(b"GET / HTTP/1.1", out).count(b"\r\n") == len(out) + 2


@given(_FIELDS)
def test_response_rules_hold_for_any_fields(fields: H) -> None:
    out = response_headers(fields, http_version=b"1.1", date=b"NOW")
    names = [n for n, _ in out]
    named = {t.strip().lower() for n, v in fields if n == b"connection" for t in v.split(b",")}
    assert not set(names) & set(HOP)
    assert names.count(b"via") == 1 and names[-1] == b"via"
    assert names.count(b"date") >= 1  # the upstream's, or ours when it sent none
    if b"date" in named:
        assert get(out, b"date") == [b"NOW"]
    for name in names:
        assert name not in named or name in (b"content-length", b"via", b"date")
    if any(n == b"transfer-encoding" for n, _ in fields):
        assert b"content-length" not in names
    kept = [f for f in fields if f[0] not in set(HOP) | named | {b"via"}]
    assert [f for f in out if f[0] not in (b"via", b"date", b"content-length")] == [
        f for f in kept if f[0] not in (b"date", b"content-length")
    ]


# -- the serialised head ---------------------------------------------------------------------


def test_head_is_the_start_line_the_fields_and_an_empty_line() -> None:
    fields = [(b"host", b"a"), (b"x-b", b"c d")]
    assert head(b"GET /x HTTP/1.1", fields) == b"GET /x HTTP/1.1\r\nhost: a\r\nx-b: c d\r\n\r\n"
    assert head(b"HTTP/1.1 204 No Content", []) == b"HTTP/1.1 204 No Content\r\n\r\n"


@pytest.mark.parametrize(
    "field",
    [
        (b"x-a", b"1\r\nx-b: 2"),  # a field smuggled in a value
        (b"x-a", b"1\n"),
        (b"x-a", b"\r"),
        (b"x-a", b"a\x00b"),
        (b"x a", b"1"),  # names are tokens (RFC 9110 §5.6.2)
        (b"x:a", b"1"),
        (b"caf\xc3\xa9", b"1"),  # not ASCII
        (b"", b"1"),
        (b"x\r\nb", b"1"),
    ],
)
def test_head_refuses_a_field_that_could_split_it(field: tuple[bytes, bytes]) -> None:
    with pytest.raises(ValueError, match="unsendable"):
        head(b"GET / HTTP/1.1", [(b"host", b"a"), field, (b"x-z", b"9")])

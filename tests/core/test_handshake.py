"""RFC 6455 §4.2.1 handshake validation, table-driven, no sockets."""

from __future__ import annotations

import pytest

from gateway.core import handshake
from gateway.core.decisions import HandshakeInfo, Reject
from tests.support.parsed_requests import KEY, request, upgrade, upgrade_headers


def test_accept_key_matches_rfc_example() -> None:
    # RFC 6455 §1.3: this key must give this accept value.
    assert handshake.accept_key(KEY.encode()) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_valid_handshake_extracts_fields() -> None:
    req = upgrade(
        "/echo",
        Origin="http://gateway.test",
        **{"Sec-WebSocket-Protocol": "chat.v2, Chat.V1", "Sec-WebSocket-Extensions": "x-foo"},
    )
    info = handshake.validate(req)
    assert info == HandshakeInfo(
        key=KEY.encode(),
        subprotocols=("chat.v2", "Chat.V1"),  # case kept: names are case-sensitive (§11.3.4)
        extensions=("x-foo",),
        origin="http://gateway.test",
        host="gateway.test",
    )


def test_header_tokens_are_case_insensitive_and_listed() -> None:
    req = upgrade(Upgrade="WebSocket", Connection="keep-alive, UPGRADE")
    assert isinstance(handshake.validate(req), HandshakeInfo)


BAD = [
    ("post", dict(method="POST"), 405),
    ("http/1.0", dict(version="1.0"), 400),
    ("no connection upgrade", dict(Connection="keep-alive"), 400),
    ("no connection header", dict(Connection=None), 400),
    ("version 8", dict(**{"Sec-WebSocket-Version": "8"}), 426),
    ("no version", dict(**{"Sec-WebSocket-Version": None}), 426),
    ("two versions", dict(**{"Sec-WebSocket-Version": "13, 8"}), 426),
    ("no key", dict(**{"Sec-WebSocket-Key": None}), 400),
    ("short key", dict(**{"Sec-WebSocket-Key": "dGhlIHNhbXBsZQ=="}), 400),
    ("long key", dict(**{"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZSBtb3Jl"}), 400),
    ("non-base64 key", dict(**{"Sec-WebSocket-Key": "!!!!!!!!!!!!!!!!!!!!!!=="}), 400),
    ("bad protocol token", dict(**{"Sec-WebSocket-Protocol": "a b"}), 400),
    ("with body", dict(**{"Content-Length": "5"}), 400),
]


@pytest.mark.parametrize(("name", "change", "status"), BAD, ids=[b[0] for b in BAD])
def test_bad_handshakes_are_rejected(name: str, change: dict[str, str | None], status: int) -> None:
    method = change.pop("method", "GET")
    version = change.pop("version", "1.1")
    req = request(
        "/echo", upgrade_headers(**change), method=method or "GET", version=version or "1.1"
    )
    result = handshake.validate(req)
    assert isinstance(result, Reject)
    assert result.status == status


def test_426_names_the_supported_version() -> None:
    result = handshake.validate(upgrade(**{"Sec-WebSocket-Version": "8"}))
    assert isinstance(result, Reject)
    assert ("Sec-WebSocket-Version", "13") in result.headers


def test_405_says_allow_get() -> None:
    result = handshake.validate(request("/echo", upgrade_headers(), method="PUT"))
    assert isinstance(result, Reject)
    assert ("Allow", "GET") in result.headers


def test_duplicate_key_header_is_rejected() -> None:
    headers = [*upgrade_headers(), ("Sec-WebSocket-Key", KEY)]
    result = handshake.validate(request("/echo", headers))
    assert isinstance(result, Reject) and result.status == 400


def test_duplicate_origin_is_rejected() -> None:
    headers = [*upgrade_headers(), ("Origin", "http://a.test"), ("Origin", "http://b.test")]
    result = handshake.validate(request("/echo", headers))
    assert isinstance(result, Reject) and result.status == 400


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("example.com", True),
        ("example.com:8080", True),
        ("127.0.0.1:80", True),
        ("[::1]:8080", True),
        ("[::1]", True),
        ("a@evil.test", False),
        ("exa mple.com", False),
        ("example.com:99999", False),
        ("example.com:80:80", False),
        ("", False),
    ],
)
def test_host_syntax(host: str, ok: bool) -> None:
    assert handshake.valid_host(host.encode()) is ok


@pytest.mark.parametrize(
    ("offered", "supported", "chosen"),
    [
        (("v1", "v2"), ("v2", "v1"), "v2"),
        (("v1",), ("v2", "v1"), "v1"),
        (("x",), ("v2",), None),
        ((), ("v2",), None),
        (("V2",), ("v2",), None),
    ],
)
def test_subprotocol_choice_prefers_the_server_order(
    offered: tuple[str, ...], supported: tuple[str, ...], chosen: str | None
) -> None:
    assert handshake.choose_subprotocol(offered, supported) == chosen


def test_is_websocket_upgrade() -> None:
    assert handshake.is_websocket_upgrade(upgrade())
    assert handshake.is_websocket_upgrade(request("/", [("Upgrade", "h2c, WebSocket")]))
    assert not handshake.is_websocket_upgrade(request("/", [("Upgrade", "h2c")]))
    assert not handshake.is_websocket_upgrade(request("/"))

"""The front door's decision table: every row, plus "never raises" as a property."""

from __future__ import annotations

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.core.decisions import Destroy, Health, MountRoute, Reject, Static, Upgrade
from gateway.core.frontdoor import HeadLimits, Policy, classify
from gateway.core.routing import Router, Template
from tests.support.parsed_requests import parse, request, upgrade

ECHO = MountRoute("echo", None)
CHAT = MountRoute("chat", ("https://app.example",), require_origin=True)


def policy(**overrides: object) -> Policy:
    router = Router([(Template.parse("/echo"), ECHO), (Template.parse("/chat/{room}"), CHAT)])
    values: dict[str, object] = {"router": router, "static": True, **overrides}
    return Policy(**values)  # type: ignore[arg-type]


def status(decision: object) -> int:
    assert isinstance(decision, Reject), decision
    return decision.status


def test_upgrade_to_a_mount() -> None:
    d = classify(upgrade("/echo?x=1"), policy())
    assert isinstance(d, Upgrade)
    assert (d.mount, d.path, d.query, d.params) == (ECHO, "/echo", "x=1", {})


def test_upgrade_carries_route_params() -> None:
    req = upgrade("/chat/lobby", Origin="https://app.example", Cookie="a=1")
    d = classify(req, policy())
    assert isinstance(d, Upgrade)
    assert d.params == {"room": "lobby"}


def test_unknown_upgrade_path_is_destroyed() -> None:
    assert isinstance(classify(upgrade("/nope"), policy()), Destroy)


def test_unknown_upgrade_path_is_destroyed_even_if_the_handshake_is_broken() -> None:
    # The router decides first: nothing about a path nobody serves is answered.
    req = request("/nope", [("Upgrade", "websocket")], method="POST")
    assert isinstance(classify(req, policy()), Destroy)


def test_unknown_upgrade_path_can_be_404() -> None:
    d = classify(upgrade("/nope"), policy(unknown_path="404"))
    assert status(d) == 404
    assert isinstance(d, Reject) and d.close


@pytest.mark.parametrize(
    ("req", "expected"),
    [
        (upgrade("/echo", Origin="http://evil.test"), 403),
        (upgrade("/echo", Origin="http://gateway.test"), None),
        (upgrade("/chat/x", Origin="https://app.example.evil"), 403),
        (upgrade("/chat/x"), 403),  # this mount requires Origin
        (upgrade("/chat/x", Origin="https://app.example"), None),
        (upgrade("/echo", **{"Sec-WebSocket-Version": "7"}), 426),
        (upgrade("/echo", **{"Sec-WebSocket-Key": "short"}), 400),
    ],
)
def test_handshake_and_origin_rows(req: h11.Request, expected: int | None) -> None:
    d = classify(req, policy())
    if expected is None:
        assert isinstance(d, Upgrade)
    else:
        assert status(d) == expected


def test_origin_uses_the_connection_scheme() -> None:
    req = upgrade("/echo", Origin="https://gateway.test")
    assert isinstance(classify(req, policy(), secure=True), Upgrade)
    assert status(classify(req, policy(), secure=False)) == 403


@pytest.mark.parametrize(
    ("req", "expected"),
    [
        (request("/healthz"), Health(ready=False)),
        (request("/readyz"), Health(ready=True)),
        (request("/"), Static("/")),
        (request("/app.js?v=2"), Static("/app.js")),
        (request("/index.html", method="HEAD"), Static("/index.html")),
    ],
)
def test_plain_http_rows(req: h11.Request, expected: object) -> None:
    assert classify(req, policy()) == expected


def test_a_websocket_path_without_upgrade_is_426_with_upgrade_header() -> None:
    d = classify(request("/echo"), policy())
    assert status(d) == 426
    assert isinstance(d, Reject) and ("Upgrade", "websocket") in d.headers


def test_other_methods_on_static_are_405() -> None:
    d = classify(request("/", method="DELETE"), policy())
    assert status(d) == 405
    assert isinstance(d, Reject) and ("Allow", "GET, HEAD") in d.headers


def test_without_static_root_everything_else_is_404() -> None:
    assert status(classify(request("/index.html"), policy(static=False))) == 404


def test_content_length_with_transfer_encoding_is_400_and_close() -> None:
    raw = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    d = classify(parse(raw), policy())
    assert status(d) == 400
    assert isinstance(d, Reject) and d.close


def test_asterisk_target_is_400() -> None:
    assert status(classify(request("*", method="OPTIONS"), policy())) == 400


def test_absolute_form_target_is_400() -> None:
    assert status(classify(request("http://gateway.test/echo"), policy())) == 400


# Any request h11 accepts gets a Decision, never an exception.
_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)
_value = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
_header_names = st.sampled_from(
    [
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
        "origin",
        "cookie",
        "content-length",
        "transfer-encoding",
        "x-any",
    ]
)
_target = st.one_of(
    st.sampled_from(["/echo", "/chat/a", "/chat/", "/", "/healthz", "*", "/nope"]),
    st.text(alphabet="/abc%2F?=.&", min_size=1, max_size=30).map(lambda t: "/" + t),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "OPTIONS", "BREW"]),
    target=_target,
    version=st.sampled_from(["1.0", "1.1"]),
    headers=st.lists(st.tuples(st.one_of(_header_names, _token), _value), max_size=8),
    secure=st.booleans(),
)
def test_any_request_h11_accepts_gets_a_decision(
    method: str, target: str, version: str, headers: list[tuple[str, str]], secure: bool
) -> None:
    lines = [f"{method} {target} HTTP/{version}", "Host: gateway.test"]
    lines += [f"{n}: {v.strip()}" for n, v in headers]
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(("\r\n".join(lines) + "\r\n\r\n").encode())
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return  # h11 refused it: the shell answers those (covered elsewhere)
    if not isinstance(event, h11.Request):
        return
    decision = classify(event, policy(), secure=secure)
    assert isinstance(decision, Reject | Health | Static | Destroy | Upgrade)


LIMITS = HeadLimits(max_request_line=100, max_header_line=50, max_headers=5, max_head_bytes=200)


@pytest.mark.parametrize(
    ("req", "expected"),
    [
        (request("/" + "a" * 80), None),
        (request("/" + "a" * 95), 414),  # "GET /aaa… HTTP/1.1" is over 100 bytes
        (request("/", [("x", "v" * 40)]), None),
        (request("/", [("x", "v" * 48)]), 431),  # "x: vvv…" is over 50 bytes
        (request("/", [(f"x{i}", "v") for i in range(4)]), None),  # with Host: 5 headers
        (request("/", [(f"x{i}", "v") for i in range(5)]), 431),
        (request("/", [("a", "v" * 40), ("b", "v" * 40), ("c", "v" * 40)]), None),
        (request("/", [("a", "v" * 40), ("b", "v" * 40), ("c", "v" * 40), ("d", "v" * 40)]), 431),
    ],
)
def test_head_limits_are_checked_after_parsing(req: h11.Request, expected: int | None) -> None:
    d = classify(req, policy(limits=LIMITS))
    if expected is None:
        assert isinstance(d, Static)
    else:
        assert status(d) == expected
        assert isinstance(d, Reject) and d.close


def test_origin_behind_a_trusted_proxy_uses_the_forwarded_scheme_and_host() -> None:
    import ipaddress

    import h11

    from gateway.core.address import parse_networks
    from gateway.core.decisions import MountRoute
    from gateway.core.frontdoor import Policy, classify
    from gateway.core.routing import Router, Template

    policy = Policy(
        router=Router([(Template.parse("/ws"), MountRoute("ws", None, False))]),
        trusted=parse_networks(["10.0.0.0/8"]),
    )
    request = h11.Request(
        method="GET",
        target="/ws",
        headers=[
            ("Host", "10.1.2.3:8080"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
            ("Origin", "https://chat.example.com"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "chat.example.com"),
        ],
    )
    proxy = ipaddress.ip_address("10.0.0.5")
    stranger = ipaddress.ip_address("192.0.2.1")
    assert type(classify(request, policy, peer=proxy)).__name__ == "Upgrade"
    refused = classify(request, policy, peer=stranger)
    assert type(refused).__name__ == "Reject" and refused.status == 403  # type: ignore[union-attr]
    assert type(classify(request, policy)).__name__ == "Reject"  # no peer known: no trust


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        # the head limits come first, wherever the oversized field stands
        ([("Host", "u@h"), ("x", "v" * 48)], 431),
        ([("x", "v" * 48), ("Host", "h"), ("Transfer-Encoding", "chunked")], 431),
        # then Host (userinfo is not allowed: RFC 9112 §3.2), then the framing
        ([("Host", "u@h"), ("Transfer-Encoding", "chunked"), ("Content-Length", "1")], 400),
        ([("Host", "h"), ("Transfer-Encoding", "chunked"), ("Content-Length", "1")], 400),
        # names are compared case-insensitively (h11 keeps them as sent in raw_items)
        ([("HOST", "h"), ("UPGRADE", "WebSocket"), ("Connection", "upgrade")], None),
    ],
)
def test_the_checks_of_one_pass_keep_their_order(
    fields: list[tuple[str, str]], expected: int | None
) -> None:
    req = request("/nowhere", fields, host=None)
    d = classify(req, policy(limits=LIMITS))
    if expected is None:
        assert isinstance(d, Destroy)  # routed as an upgrade: unknown path
    else:
        assert status(d) == expected
        if expected == 400:
            host_first = fields[0] == ("Host", "u@h")
            assert isinstance(d, Reject)
            assert d.detail == (
                "invalid Host header" if host_first else "both Content-Length and Transfer-Encoding"
            )

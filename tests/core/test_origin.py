"""Origin checks against cross-site WebSocket hijacking (RFC 6455 §10.2)."""

from __future__ import annotations

import pytest

from gateway.core import origin


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("http://example.com", "http://example.com"),
        ("HTTP://Example.COM:80", "http://example.com"),
        ("https://example.com:443", "https://example.com"),
        ("https://example.com:8443", "https://example.com:8443"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("http://example.com/", "http://example.com"),
        ("null", None),
        ("file://", None),
        ("ftp://example.com", None),
        ("http://user@example.com", None),
        ("http://example.com/path", None),
        ("http://example.com?q", None),
        ("http://example.com:99999", None),
        ("example.com", None),
    ],
)
def test_normalize(raw: str, normal: str | None) -> None:
    assert origin.normalize(raw) == normal


ALLOWED = ("https://app.example",)


@pytest.mark.parametrize(
    ("sent", "ok"),
    [
        ("https://app.example", True),
        ("https://APP.example:443", True),
        ("https://app.example.evil", False),  # lookalike suffix
        ("https://evil-app.example", False),
        ("http://app.example", False),  # scheme downgrade
        ("https://app.example:8443", False),
        ("null", False),
    ],
)
def test_allowlist(sent: str, ok: bool) -> None:
    result = origin.check(sent, host="gw.example", secure=True, allowed=ALLOWED, require=False)
    assert (result is None) is ok
    if not ok:
        assert result is not None and result.status == 403


@pytest.mark.parametrize(
    ("sent", "host", "secure", "ok"),
    [
        ("http://gw.test:8080", "gw.test:8080", False, True),
        ("http://GW.test:8080", "gw.test:8080", False, True),
        ("http://gw.test", "gw.test:80", False, True),
        ("https://gw.test", "gw.test", True, True),
        ("http://gw.test", "gw.test", True, False),  # page over http, socket over TLS
        ("http://gw.test:8081", "gw.test:8080", False, False),
        ("http://other.test:8080", "gw.test:8080", False, False),
    ],
)
def test_same_origin_default(sent: str, host: str, secure: bool, ok: bool) -> None:
    result = origin.check(sent, host=host, secure=secure, allowed=None, require=False)
    assert (result is None) is ok


def test_missing_origin_is_a_non_browser_client() -> None:
    assert origin.check(None, host="h", secure=False, allowed=ALLOWED, require=False) is None
    denied = origin.check(None, host="h", secure=False, allowed=ALLOWED, require=True)
    assert denied is not None and denied.status == 403


def test_star_allows_any_origin() -> None:
    assert (
        origin.check("https://x.test", host="h", secure=False, allowed=("*",), require=False)
        is None
    )


# --------------------------------------------------------------------------- server.hosts


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("Example.COM", "example.com"),
        ("example.com:8080", "example.com"),
        ("example.com.", "example.com"),
        ("example.com.:443", "example.com"),
        ("[::1]", "[::1]"),
        ("[::1]:8080", "[::1]"),
        ("[2001:DB8::1]:80", "[2001:db8::1]"),
        ("127.0.0.1:80", "127.0.0.1"),
    ],
)
def test_host_name(host: str, name: str) -> None:
    assert origin.host_name(host) == name


@pytest.mark.parametrize(
    ("pattern", "normal"),
    [
        ("*", "*"),
        ("GW.Example", "gw.example"),
        ("gw.example.", "gw.example"),
        ("*.Apps.Example", "*.apps.example"),
        ("10.0.0.1", "10.0.0.1"),
        ("[::1]", "[::1]"),
        ("localhost", "localhost"),
        ("gw.example:8080", None),
        ("*example.com", None),
        ("a.*.example", None),
        ("gw_example", None),
        ("-gw.example", None),
        ("", None),
        ("[]", None),
        ("[::1", None),
        ("http://gw.example", None),
        ("gw..example", None),
        ("gw.exämple", None),
    ],
)
def test_normalize_host_pattern(pattern: str, normal: str | None) -> None:
    assert origin.normalize_host_pattern(pattern) == normal


@pytest.mark.parametrize(
    ("host", "allowed", "ok"),
    [
        ("gw.example:443", ("gw.example",), True),
        ("evil.test", ("gw.example",), False),
        ("gw.example.evil.test", ("gw.example",), False),
        ("a.apps.example", ("*.apps.example",), True),
        ("a.b.apps.example", ("*.apps.example",), True),
        ("apps.example", ("*.apps.example",), False),
        ("evilapps.example", ("*.apps.example",), False),
        ("anything", ("*",), True),
        ("[::1]:80", origin.LOOPBACK_HOSTS, True),
    ],
)
def test_host_allowed(host: str, allowed: tuple[str, ...], ok: bool) -> None:
    assert origin.host_allowed(host, allowed) is ok


@pytest.mark.parametrize(
    ("listen", "hosts"),
    [
        (("127.0.0.1",), origin.LOOPBACK_HOSTS),
        (("127.0.0.1", "::1", "localhost"), origin.LOOPBACK_HOSTS),
        (("127.0.0.5",), origin.LOOPBACK_HOSTS),
        (("0.0.0.0",), None),
        (("::",), None),
        (("127.0.0.1", "10.0.0.1"), None),
        (("gw.internal",), None),
        ((), None),
    ],
)
def test_default_hosts_follow_the_listen_addresses(
    listen: tuple[str, ...], hosts: tuple[str, ...] | None
) -> None:
    assert origin.default_hosts(listen) == hosts

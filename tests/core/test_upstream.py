"""Upstream URLs, the auth URL and the longest-prefix proxy route table
(gateway/core/upstream.py)."""

from __future__ import annotations

import pytest

from gateway.core.upstream import AuthURL, ProxyRoutes, Upstream, parse_upstream, prefix_matches


@pytest.mark.parametrize(
    ("url", "upstream", "authority"),
    [
        ("http://127.0.0.1:9000", Upstream("127.0.0.1", 9000), "127.0.0.1:9000"),
        ("http://legacy.internal:80/", Upstream("legacy.internal", 80), "legacy.internal:80"),
        ("http://[::1]:8081", Upstream("::1", 8081), "[::1]:8081"),
    ],
)
def test_parse_upstream(url: str, upstream: Upstream, authority: str) -> None:
    assert parse_upstream(url) == upstream
    assert upstream.authority == authority
    assert str(upstream) == f"http://{authority}"


@pytest.mark.parametrize(
    "url",
    [
        "https://a:1",
        "http://a",
        "http://a:0",
        "http://a:65536",
        "http://a:1/app",
        "http://user@a:1",
        "http://a:1?x",
        "a:1",
        "http://:1",
        "http://-a:1",
        "http://a..b:1",
        "HTTP://a:1",
    ],
)
def test_parse_upstream_refuses(url: str) -> None:
    with pytest.raises(ValueError, match="http://host:port|port|host"):
        parse_upstream(url)


@pytest.mark.parametrize(
    ("prefix", "path", "matches"),
    [
        ("/api", "/api", True),
        ("/api", "/api/x", True),
        ("/api", "/apix", False),
        ("/api/", "/api/x", True),
        ("/api/", "/api", False),
        ("/", "/anything", True),
    ],
)
def test_prefix_matches_by_segment(prefix: str, path: str, matches: bool) -> None:
    assert prefix_matches(prefix, path) is matches


A, B, D = Upstream("a", 1), Upstream("b", 2), Upstream("d", 3)


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/api/v2/x", B), ("/api/v2", B), ("/api/v1", A), ("/api", A), ("/apiv2", D), ("/", D)],
)
def test_the_longest_prefix_wins_then_the_default(path: str, expected: Upstream) -> None:
    routes = ProxyRoutes([("/api", A), ("/api/v2", B)], D)
    assert routes.match(path) == expected


def test_no_default_means_no_match() -> None:
    assert ProxyRoutes([("/api", A)], None).match("/other") is None


def test_auth_url_parses_host_port_and_target() -> None:
    url = AuthURL.parse("http://127.0.0.1:9000/api/whoami?x=1")
    assert (url.host, url.port, url.target, url.host_header) == (
        "127.0.0.1",
        9000,
        "/api/whoami?x=1",
        "127.0.0.1:9000",
    )
    assert AuthURL.parse("http://legacy").port == 80
    assert AuthURL.parse("http://legacy").target == "/"


@pytest.mark.parametrize(
    "url",
    [
        "https://legacy/whoami",
        "/api/whoami",
        "legacy:9000/whoami",
        "http:///whoami",
        "http://user:pw@legacy/whoami",
        "http://legacy:99999/whoami",
        "http://legacy/who ami",
        "http://legacy/whoami#frag",
    ],
)
def test_auth_url_refuses_what_the_client_cannot_do(url: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        AuthURL.parse(url)


def test_auth_url_brackets_ipv6_and_keeps_the_authority_as_written() -> None:
    url = AuthURL.parse("http://[::1]:8081/who")
    assert url.upstream == Upstream("::1", 8081)
    assert url.host_header == "[::1]:8081"

"""The front door's issue-9 rows, pure: CONNECT (405 + Allow, close), other major versions
(505, close), the ``server.hosts`` allowlist (400 before anything else) and proxy routes chosen
on the normalised path."""

from __future__ import annotations

import pytest

from gateway.core.decisions import Health, MountRoute, Proxy, Reject, Static, Upgrade
from gateway.core.frontdoor import ALLOW_OWN, ALLOW_PROXIED, Policy, classify
from gateway.core.origin import LOOPBACK_HOSTS
from gateway.core.routing import Router, Template
from gateway.core.upstream import ProxyRoutes, Upstream
from tests.support.parsed_requests import parse, request, upgrade

DEFAULT, API = Upstream("legacy", 80), Upstream("api", 81)
ROUTES = ProxyRoutes([("/api", API)], DEFAULT)
ECHO = MountRoute("echo", None)


def policy(**overrides: object) -> Policy:
    values: dict[str, object] = {
        "router": Router([(Template.parse("/echo"), ECHO)]),
        "static": True,
        **overrides,
    }
    return Policy(**values)  # type: ignore[arg-type]


def reject(decision: object) -> Reject:
    assert isinstance(decision, Reject), decision
    return decision


# --------------------------------------------------------------------------- CONNECT


@pytest.mark.parametrize("target", ["/healthz", "/", "/echo", "/api/x", "example.com:443"])
@pytest.mark.parametrize("proxy", [None, ROUTES])
def test_connect_is_405_never_proxied(target: str, proxy: ProxyRoutes | None) -> None:
    d = reject(classify(request(target, method="CONNECT"), policy(proxy=proxy)))
    assert (d.status, d.close) == (405, True)
    assert d.headers == (("Allow", ALLOW_PROXIED if proxy else ALLOW_OWN),)
    assert "CONNECT" not in dict(d.headers)["Allow"]


def test_connect_with_an_upgrade_header_is_405_too() -> None:
    d = reject(classify(request("/echo", _upgrade_headers(), method="CONNECT"), policy()))
    assert d.status == 405


def test_a_bad_host_is_still_400_before_connect() -> None:
    d = reject(classify(request("/x", method="CONNECT", host="a@b"), policy()))
    assert d.status == 400


# --------------------------------------------------------------------------- versions


@pytest.mark.parametrize("version", ["2.0", "3.0", "0.9", "9.9"])
@pytest.mark.parametrize("target", ["/healthz", "/api/x", "/echo", "*"])
def test_other_major_versions_are_505(version: str, target: str) -> None:
    d = reject(classify(request(target, version=version), policy(proxy=ROUTES)))
    assert (d.status, d.close) == (505, True)


def test_the_http2_preface_is_505() -> None:
    d = reject(classify(parse(b"PRI * HTTP/2.0\r\n\r\n"), policy(proxy=ROUTES)))
    assert d.status == 505


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_major_version_1_is_served(version: str) -> None:
    assert isinstance(classify(request("/healthz", version=version), policy()), Health)


# --------------------------------------------------------------------------- server.hosts


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("localhost", True),
        ("LOCALHOST:8080", True),
        ("localhost.", True),
        ("127.0.0.1:1", True),
        ("[::1]", True),
        ("[::1]:8080", True),
        ("evil.test", False),
        ("evil.test:8080", False),
        ("localhost.evil.test", False),
        ("127.0.0.2", False),
        ("[::2]", False),
    ],
)
def test_the_loopback_allowlist(host: str, ok: bool) -> None:
    p = policy(hosts=LOOPBACK_HOSTS, proxy=ROUTES)
    for req in (request("/healthz", host=host), upgrade("/echo"), request("/api/x", host=host)):
        if req.target == b"/echo":  # the DNS-rebinding upgrade: Host and Origin alike
            req = request("/echo", [*_upgrade_headers(), ("Origin", f"http://{host}")], host=host)
        d = classify(req, p)
        if ok:
            assert not isinstance(d, Reject), (host, d)
        else:
            refused = reject(d)
            assert (refused.status, refused.close, refused.detail) == (
                400,
                True,
                "host not allowed",
            )


def _upgrade_headers() -> list[tuple[str, str]]:
    return [(n.decode(), v.decode()) for n, v in upgrade("/echo").headers if n != b"host"]


def test_no_allowlist_allows_any_host() -> None:
    assert isinstance(classify(request("/healthz", host="evil.test"), policy()), Health)


def test_the_allowlist_comes_before_head_routing_and_framing() -> None:
    p = policy(hosts=("gw.example",))
    raw = (
        b"POST / HTTP/1.1\r\nHost: evil.test\r\n"
        b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    assert reject(classify(parse(raw), p)).detail == "host not allowed"
    assert reject(classify(request("/x", method="CONNECT", host="evil.test"), p)).status == 400


def test_http_1_0_without_host_is_not_refused_by_the_allowlist() -> None:
    d = classify(request("/healthz", version="1.0", host=None), policy(hosts=LOOPBACK_HOSTS))
    assert isinstance(d, Health)


# --------------------------------------------------------------------------- routes


@pytest.mark.parametrize(
    ("path", "upstream"),
    [
        ("/api/x", API),
        ("/%61pi/x", API),
        ("/%61%70%69", API),
        ("//api/x", API),
        ("///api//x", API),
        ("/./api/x", API),
        ("/other/../api/x", API),
        ("/%2e%2e/api/x", API),
        ("/api/../other", DEFAULT),
        ("/api%2Fx", DEFAULT),  # an encoded slash is not a separator: "/api%2Fx" is one segment
        ("/apix", DEFAULT),
    ],
)
def test_routes_match_the_normalised_path(path: str, upstream: Upstream) -> None:
    d = classify(request(path, method="POST"), policy(static=False, proxy=ROUTES))
    assert d == Proxy(upstream, path)  # the raw path still goes upstream


def test_a_static_miss_falls_back_on_the_normalised_route() -> None:
    d = classify(request("//api/x"), policy(proxy=ROUTES))
    assert d == Static("//api/x", fallback=Proxy(API, "//api/x"))


def test_websocket_upgrades_are_untouched_by_proxy_normalisation() -> None:
    assert isinstance(classify(upgrade("/echo"), policy(proxy=ROUTES)), Upgrade)

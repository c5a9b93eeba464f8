"""The front door's proxy rows: what is proxied, what never is."""

from __future__ import annotations

import pytest

from gateway.core.decisions import Destroy, Health, MountRoute, Proxy, Reject, Static, Upgrade
from gateway.core.frontdoor import Policy, classify
from gateway.core.routing import Router, Template
from gateway.core.upstream import ProxyRoutes, Upstream
from tests.support.parsed_requests import request, upgrade

DEFAULT, API = Upstream("legacy", 80), Upstream("api", 81)
ROUTES = ProxyRoutes([("/api", API)], DEFAULT)
ECHO = MountRoute("echo", None)


def policy(*, static: bool, proxy: ProxyRoutes | None = ROUTES) -> Policy:
    return Policy(router=Router([(Template.parse("/echo"), ECHO)]), static=static, proxy=proxy)


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize(
    ("method", "path", "upstream"),
    [("POST", "/form", DEFAULT), ("DELETE", "/api/x", API), ("PUT", "/api", API)],
)
def test_non_get_requests_are_proxied(
    static: bool, method: str, path: str, upstream: Upstream
) -> None:
    assert classify(request(path, method=method), policy(static=static)) == Proxy(upstream, path)


def test_get_without_static_root_is_proxied() -> None:
    assert classify(request("/page?x=1"), policy(static=False)) == Proxy(DEFAULT, "/page")


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_get_with_a_static_root_tries_the_file_first(method: str) -> None:
    d = classify(request("/api/x", method=method), policy(static=True))
    assert d == Static("/api/x", fallback=Proxy(API, "/api/x"))


def test_paths_no_route_covers_are_404_or_static() -> None:
    only_api = ProxyRoutes([("/api", API)], None)
    d = classify(request("/other", method="POST"), policy(static=False, proxy=only_api))
    assert isinstance(d, Reject) and d.status == 404
    assert classify(request("/other"), policy(static=True, proxy=only_api)) == Static("/other")


def test_health_mounts_and_upgrades_are_never_proxied() -> None:
    p = policy(static=False)
    assert isinstance(classify(request("/healthz"), p), Health)
    assert isinstance(classify(upgrade("/echo"), p), Upgrade)
    assert isinstance(classify(upgrade("/nobody"), p), Destroy)  # not WebSocket-proxied
    d = classify(request("/echo"), p)
    assert isinstance(d, Reject) and d.status == 426


@pytest.mark.parametrize(
    ("headers", "version", "host"),
    [
        ([("Content-Length", "3"), ("Transfer-Encoding", "chunked")], "1.1", "a"),
        ([("Transfer-Encoding", "chunked")], "1.0", "a"),
        ([], "1.1", "a@evil"),
    ],
)
def test_ambiguous_requests_are_refused_before_proxying(
    headers: list[tuple[str, str]], version: str, host: str
) -> None:
    d = classify(
        request("/x", headers, method="POST", version=version, host=host), policy(static=False)
    )
    assert isinstance(d, Reject) and d.status == 400 and d.close

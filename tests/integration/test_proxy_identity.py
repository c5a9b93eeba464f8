"""Through the real gateway to a real upstream (issue 9, informational findings): fields that
claim who the client is never reach the site from an untrusted client, and
``[[proxy.routes]]`` prefixes are matched on the normalised path, so ``/%61pi/x`` and
``//api/x`` cannot dodge the ``/api`` route."""

from __future__ import annotations

import pytest
import trio

from tests.support.in_process import GatewayFactory, Running
from tests.support.proxy_http import HTTPReader
from tests.support.raw_http import request
from tests.support.timeouts import TIMEOUT
from tests.support.upstream import UpstreamProcess, echoed, header_values

SPOOFED = [
    ("X-Real-IP", "6.6.6.6"),
    ("True-Client-IP", "6.6.6.6"),
    ("CF-Connecting-IP", "6.6.6.6"),
    ("Forwarded", "for=6.6.6.6"),
    ("X-Forwarded-For", "6.6.6.6"),
]


async def fetch(gw: Running, raw: bytes) -> dict[str, object]:
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(gw.host, gw.port)
        async with stream:
            await stream.send_all(raw)
            return echoed(await HTTPReader(stream).response())


async def test_spoofed_client_addresses_are_dropped(
    start_gateway: GatewayFactory, upstream: UpstreamProcess
) -> None:
    async with start_gateway({"proxy.upstream": upstream.url}) as gw:
        echo = await fetch(gw, request("GET", "/who", SPOOFED))
    names = [n for n, _ in echo["headers"]]  # type: ignore[attr-defined]
    for gone in ("x-real-ip", "true-client-ip", "cf-connecting-ip", "forwarded"):
        assert gone not in names
    assert header_values(echo, "x-forwarded-for") == ["127.0.0.1"]


async def test_a_trusted_proxy_may_say_who_the_client_is(
    start_gateway: GatewayFactory, upstream: UpstreamProcess
) -> None:
    changes = {"proxy.upstream": upstream.url, "proxy.trusted_proxies": ["127.0.0.1"]}
    async with start_gateway(changes) as gw:
        echo = await fetch(gw, request("GET", "/who", SPOOFED))
    assert header_values(echo, "x-real-ip") == ["6.6.6.6"]
    assert header_values(echo, "cf-connecting-ip") == ["6.6.6.6"]


@pytest.mark.parametrize(
    "target", ["/api/x", "/%61pi/x", "//api/x", "/./api/x", "/other/../api/x", "/%61%70%69"]
)
async def test_routes_match_the_normalised_path(
    start_gateway: GatewayFactory, upstream: UpstreamProcess, target: str
) -> None:
    """Only /api is routed (no default upstream): a path that means /api must get there."""
    routes = [{"prefix": "/api", "upstream": upstream.url}]
    async with start_gateway({"proxy.routes": routes, "http.static_root": None}) as gw:
        echo = await fetch(gw, request("POST", target, [("Content-Length", "0")]))
    # Forwarded as received (http.server itself collapses a leading "//", CVE-2021-28861).
    assert echo["target"] in (target, "/" + target.lstrip("/"))


async def test_a_path_outside_the_route_is_not_routed(
    start_gateway: GatewayFactory, upstream: UpstreamProcess
) -> None:
    routes = [{"prefix": "/api", "upstream": upstream.url}]
    async with start_gateway({"proxy.routes": routes, "http.static_root": None}) as gw:
        with trio.fail_after(TIMEOUT):
            stream = await trio.open_tcp_stream(gw.host, gw.port)
            async with stream:
                await stream.send_all(request("GET", "/api/../other"))
                response = await HTTPReader(stream).response()
        stats = await upstream.stats()
    assert response.status == 404
    assert stats["requests"] == []

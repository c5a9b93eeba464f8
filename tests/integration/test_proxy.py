"""The legacy-site proxy through real sockets: a real gateway in process, a real upstream
(``upstream_server.py``, the standard library's http.server) in a subprocess.

Bodies must arrive byte-identical both ways (a 100 MB download with bounded gateway memory, a
chunked upload), the header rules must hold on the wire, keep-alive upstream connections must
be reused, and what the upstream receives is counted to show nothing else reaches it.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import pytest
import trio

from tests.support.in_process import GatewayFactory, Running
from tests.support.memory import rss_bytes
from tests.support.proxy_http import HTTPReader, chunked
from tests.support.raw_http import Response, new_key, request, upgrade_headers
from tests.support.timeouts import TIMEOUT
from tests.support.upstream import (
    UpstreamProcess,
    echoed,
    header_values,
    pattern_sha256,
    running_upstream,
)


@asynccontextmanager
async def proxied(
    start_gateway: GatewayFactory,
    upstream: UpstreamProcess,
    changes: Mapping[str, object] | None = None,
) -> AsyncIterator[Running]:
    async with start_gateway({"proxy.upstream": upstream.url, **(changes or {})}) as gw:
        yield gw


@asynccontextmanager
async def client(gw: Running) -> AsyncIterator[HTTPReader]:
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(gw.host, gw.port)
    async with stream:
        yield HTTPReader(stream)


async def fetch(gw: Running, raw: bytes, *, head_request: bool = False) -> Response:
    """Send ``raw`` on a new connection and read one response."""
    async with client(gw) as c:
        await c.stream.send_all(raw)
        with trio.fail_after(TIMEOUT):
            return await c.response(head_request=head_request)


async def get(gw: Running, target: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return await fetch(gw, request("GET", target, headers or []))


# --------------------------------------------------------------------------- routing


async def test_unserved_paths_go_upstream_static_files_do_not(
    start_gateway: GatewayFactory, upstream: UpstreamProcess
) -> None:
    async with proxied(start_gateway, upstream) as gw:
        echo = echoed(await get(gw, "/legacy/page?x=1"))
        assert (echo["method"], echo["target"]) == ("GET", "/legacy/page?x=1")
        static = await get(gw, "/index.html")
        assert static.status == 200
        assert b"<html" in static.body.lower()
        assert (await get(gw, "/healthz")).body == b"ok\n"
        post = await fetch(
            gw, request("POST", "/index.html", [("Content-Length", "2")], body=b"hi")
        )
        assert echoed(post)["body_len"] == 2
        ws = request("GET", "/nobody", upgrade_headers(new_key()))
        async with client(gw) as c:
            await c.stream.send_all(ws)
            assert await c.closed()
            assert c.buffer == b""  # an unknown WebSocket path is destroyed, never proxied
        stats = await upstream.stats()
    assert stats["requests"] == [["GET", "/legacy/page?x=1"], ["POST", "/index.html"]]


async def test_without_a_proxy_unserved_paths_are_still_404(start_gateway: GatewayFactory) -> None:
    async with start_gateway() as gw:
        assert (await get(gw, "/legacy/page")).status == 404


async def test_the_longest_route_prefix_wins(
    start_gateway: GatewayFactory, upstream: UpstreamProcess
) -> None:
    with running_upstream() as api, running_upstream() as v2:
        routes = [
            {"prefix": "/api", "upstream": api.url},
            {"prefix": "/api/v2/", "upstream": v2.url},
        ]
        async with proxied(start_gateway, upstream, {"proxy.routes": routes}) as gw:
            for target in ("/api", "/api/x", "/api/v2/y", "/apix", "/other"):
                await get(gw, target)
            seen = [[r[1] for r in (await u.stats())["requests"]] for u in (upstream, api, v2)]
    assert seen == [["/apix", "/other"], ["/api", "/api/x"], ["/api/v2/y"]]


# --------------------------------------------------------------------------- bodies


async def test_a_100_mb_download_is_byte_identical_in_bounded_memory(
    start_gateway: GatewayFactory, upstream: UpstreamProcess
) -> None:
    size = 100 * 1024 * 1024
    async with proxied(start_gateway, upstream) as gw, client(gw) as c:
        await get(gw, "/warm-up")  # the pool, h11 and the upstream path are in place
        baseline = peak = rss_bytes()
        await c.stream.send_all(request("GET", f"/big?size={size}"))
        with trio.fail_after(60):
            response = await c.head()
            assert response.header("content-length") == str(size)
            sha, received, next_sample = hashlib.sha256(), 0, 0
            async for piece in c.body_chunks(response):
                sha.update(piece)
                received += len(piece)
                if received >= next_sample:
                    peak = max(peak, rss_bytes())
                    next_sample += 4 * 1024 * 1024
    assert received == size
    assert sha.hexdigest() == pattern_sha256(size)
    assert peak - baseline < 30 * 1024 * 1024, f"RSS grew by {(peak - baseline) >> 20} MiB"


async def test_a_chunked_download_stays_chunked_and_identical(
    start_gateway: GatewayFactory, upstream: UpstreamProcess
) -> None:
    size = 3 * 1024 * 1024 + 17
    async with proxied(start_gateway, upstream) as gw:
        response = await get(gw, f"/big?size={size}&chunked=1")
    assert response.header("transfer-encoding") == "chunked"
    assert response.header("content-length") is None
    assert hashlib.sha256(response.body).hexdigest() == pattern_sha256(size)


@pytest.mark.parametrize("buffering", [True, False], ids=["buffered", "streamed"])
async def test_a_chunked_upload_reaches_the_upstream_intact(
    start_gateway: GatewayFactory, upstream: UpstreamProcess, buffering: bool
) -> None:
    body = bytes(range(256)) * 20_000 + b"tail"  # ~5 MB, not a multiple of the chunk size
    changes = {"proxy.max_body_size": 8 * 1024 * 1024, "proxy.request_buffering": buffering}
    async with proxied(start_gateway, upstream, changes) as gw:
        head = request("POST", "/upload", [("Transfer-Encoding", "chunked")])
        echo = echoed(await fetch(gw, head + chunked(body, 50_000)))
    assert (echo["body_len"], echo["body_sha256"]) == (len(body), hashlib.sha256(body).hexdigest())
    if buffering:  # read whole (spooled to a file past 64 KiB), so its length is known
        assert header_values(echo, "transfer-encoding") == []
        assert header_values(echo, "content-length") == [str(len(body))]
    else:
        assert header_values(echo, "transfer-encoding") == ["chunked"]
        assert header_values(echo, "content-length") == []


async def test_a_content_length_upload_keeps_its_length(
    start_gateway: GatewayFactory, upstream: UpstreamProcess
) -> None:
    body = b"0123456789" * 1000
    async with proxied(start_gateway, upstream) as gw:
        raw = request("PUT", "/upload", [("Content-Length", str(len(body)))], body=body)
        echo = echoed(await fetch(gw, raw))
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert header_values(echo, "content-length") == [str(len(body))]


@pytest.mark.parametrize("buffering", [True, False], ids=["buffered", "streamed"])
async def test_expect_100_continue_is_answered(
    start_gateway: GatewayFactory, upstream: UpstreamProcess, buffering: bool
) -> None:
    body = b"x" * 5000
    headers = [("Content-Length", str(len(body))), ("Expect", "100-continue")]
    changes = {"proxy.request_buffering": buffering}
    async with proxied(start_gateway, upstream, changes) as gw, client(gw) as c:
        await c.stream.send_all(request("POST", "/upload", headers))
        with trio.fail_after(TIMEOUT):
            interim = await c.head()
            # Streamed: the upstream's 100, relayed; buffered: the gateway's own, since it
            # reads the body before going upstream.  Either way, before we sent the body.
            assert interim.status == 100
            await c.stream.send_all(body)
            echo = echoed(await c.response())
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    # Buffered, the expectation was the gateway's to meet: the upstream never sees it.
    assert header_values(echo, "expect") == ([] if buffering else ["100-continue"])
    stats = await upstream.stats()
    assert [r for r in stats["requests"] if r[1] == "/upload"] == [["POST", "/upload"]]


async def test_a_refused_expectation_is_relayed_and_the_connection_closes(
    start_gateway: GatewayFactory, upstream: UpstreamProcess
) -> None:
    headers = [("Content-Length", "5000"), ("Expect", "100-continue")]
    changes = {"proxy.request_buffering": False}  # only a streamed body asks the upstream
    async with proxied(start_gateway, upstream, changes) as gw, client(gw) as c:
        await c.stream.send_all(request("POST", "/reject-expect", headers))
        with trio.fail_after(TIMEOUT):
            response = await c.response()
        assert response.status == 417
        assert response.header("connection") == "close"
        assert await c.closed()


@pytest.mark.parametrize(
    ("method", "target", "status"),
    [("HEAD", "/big?size=5000", 200), ("GET", "/status/204", 204), ("GET", "/status/304", 304)],
)
async def test_responses_without_bodies_have_none_and_keep_alive_continues(
    start_gateway: GatewayFactory, upstream: UpstreamProcess, method: str, target: str, status: int
) -> None:
    async with proxied(start_gateway, upstream) as gw, client(gw) as c:
        await c.stream.send_all(request(method, target) + request("GET", "/after"))
        with trio.fail_after(TIMEOUT):
            first = await c.response(head_request=True)
            second = await c.response()
    assert first.status == status
    if method == "HEAD":
        assert first.header("content-length") == "5000"
    assert echoed(second)["target"] == "/after"  # no stray body bytes between the two


async def test_a_close_delimited_upstream_body_is_reframed(
    start_gateway: GatewayFactory, upstream: UpstreamProcess
) -> None:
    async with proxied(start_gateway, upstream) as gw, client(gw) as c:
        await c.stream.send_all(request("GET", "/close-delimited") + request("GET", "/after"))
        with trio.fail_after(TIMEOUT):
            first = await c.response()
            second = await c.response()
    assert first.header("transfer-encoding") == "chunked"
    assert first.body == b"until the end\n" * 100
    assert echoed(second)["target"] == "/after"


# --------------------------------------------------------------------------- headers


async def test_request_header_rules_on_the_wire(
    start_gateway: GatewayFactory, upstream: UpstreamProcess
) -> None:
    headers = [
        ("Connection", "keep-alive, X-Secret-Hop, X-Forwarded-For"),
        ("X-Secret-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("TE", "trailers"),
        ("Upgrade", "h2c"),
        ("X_Forwarded_For", "6.6.6.6"),
        ("X-Forwarded-For", "1.2.3.4"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.example"),
        ("Forwarded", "for=6.6.6.6"),
        ("Via", "1.0 corp-proxy"),
        ("X-End-To-End", "kept"),
    ]
    site = {"server.hosts": ["site.example"]}  # a name the gateway is served under
    async with proxied(start_gateway, upstream, site) as gw:
        echo = echoed(await fetch(gw, request("GET", "/h", headers, host="site.example:8080")))
    names = [n for n, _ in echo["headers"]]
    for gone in ("connection", "x-secret-hop", "keep-alive", "proxy-authorization", "te"):
        assert gone not in names
    assert "upgrade" not in names
    assert "x_forwarded_for" not in names
    assert "forwarded" not in names
    assert names[0] == "host"
    assert header_values(echo, "host") == ["site.example:8080"]
    assert header_values(echo, "x-forwarded-for") == ["127.0.0.1"]  # overwritten
    assert header_values(echo, "x-forwarded-proto") == ["http"]
    assert header_values(echo, "x-forwarded-host") == ["site.example:8080"]
    assert header_values(echo, "via") == ["1.0 corp-proxy, 1.1 gateway"]
    assert header_values(echo, "x-end-to-end") == ["kept"]


async def test_a_trusted_proxy_extends_x_forwarded_for(
    start_gateway: GatewayFactory, upstream: UpstreamProcess
) -> None:
    changes = {
        "proxy.trusted_proxies": ["127.0.0.0/8"],
        "proxy.preserve_host": False,
        "server.hosts": ["site.example"],
    }
    headers = [("X-Forwarded-For", "203.0.113.7, 10.0.0.1"), ("X-Forwarded-Proto", "https")]
    async with proxied(start_gateway, upstream, changes) as gw:
        echo = echoed(await fetch(gw, request("GET", "/h", headers, host="site.example")))
    assert header_values(echo, "x-forwarded-for") == ["203.0.113.7, 10.0.0.1, 127.0.0.1"]
    assert header_values(echo, "x-forwarded-proto") == ["https"]  # the TLS proxy in front said so
    assert header_values(echo, "host") == [f"127.0.0.1:{upstream.port}"]  # preserve_host = false
    assert header_values(echo, "x-forwarded-host") == ["site.example"]


async def test_response_hop_by_hop_headers_are_stripped(
    start_gateway: GatewayFactory, upstream: UpstreamProcess
) -> None:
    async with proxied(start_gateway, upstream) as gw:
        response = await get(gw, "/hop")
    names = [n for n, _ in response.headers]
    for gone in ("x-hop-secret", "keep-alive", "proxy-authenticate", "upgrade", "trailer"):
        assert gone not in names
    assert response.header("connection") is None
    assert response.header("x-end-to-end") == "kept"
    assert response.header("via") == "1.1 gateway"
    assert (response.header("server") or "").startswith("legacy-site")
    assert response.body == b"hop\n"


# --------------------------------------------------------------------------- keep-alive


async def test_upstream_connections_are_reused(
    start_gateway: GatewayFactory, upstream: UpstreamProcess
) -> None:
    async with proxied(start_gateway, upstream) as gw:
        for i in range(5):
            await get(gw, f"/one-by-one/{i}")  # a new client connection each time
        async with client(gw) as c:
            await c.stream.send_all(b"".join(request("GET", f"/pipelined/{i}") for i in range(5)))
            with trio.fail_after(TIMEOUT):
                for i in range(5):
                    assert echoed(await c.response())["target"] == f"/pipelined/{i}"
        stats = await upstream.stats()
        assert gw.app.proxy is not None
        assert len(gw.app.proxy.pools.pools) == 1
    assert len(stats["requests"]) == 10
    assert stats["connections"] == 1

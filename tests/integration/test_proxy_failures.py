"""The proxy when things go wrong: a refused, silent, stalling, dying upstream; bodies over the
limit; and request-smuggling vectors, with the upstream counting what reached it."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import pytest
import trio

from tests.support.in_process import GatewayFactory, Running
from tests.support.proxy_http import Cut, HTTPReader, chunked
from tests.support.raw_http import Response, request
from tests.support.timeouts import TIMEOUT
from tests.support.upstream import UpstreamProcess, echoed, running_upstream


@asynccontextmanager
async def gateway_to(
    start_gateway: GatewayFactory, url: str, changes: Mapping[str, object] | None = None
) -> AsyncIterator[Running]:
    # The requests here say "Host: a": any Host, so each refusal is the framing rule under
    # test, not the server.hosts allowlist.
    hosts = {"server.hosts": ["*"]}
    async with start_gateway({"proxy.upstream": url, **hosts, **(changes or {})}) as gw:
        yield gw


@asynccontextmanager
async def client(gw: Running) -> AsyncIterator[HTTPReader]:
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(gw.host, gw.port)
    async with stream:
        yield HTTPReader(stream)


async def fetch(gw: Running, raw: bytes) -> Response:
    async with client(gw) as c:
        await c.stream.send_all(raw)
        with trio.fail_after(TIMEOUT):
            return await c.response()


async def assert_cut(c: HTTPReader) -> Response:
    """The response starts, then the connection ends before it is complete."""
    with trio.fail_after(TIMEOUT):
        response = await c.head()
        assert response.status == 200
        with pytest.raises(Cut):
            async for _ in c.body_chunks(response):
                pass
    return response


async def read_killing(
    c: HTTPReader, response: Response, doomed: UpstreamProcess, *, after: int
) -> int:
    """Read the body, killing the upstream once ``after`` bytes arrived; the bytes read
    before the cut (which must come: :class:`Cut` or the test fails)."""
    received = 0
    try:
        async for piece in c.body_chunks(response):
            received += len(piece)
            if doomed.proc.poll() is None and received > after:
                doomed.kill()
    except Cut:
        return received
    raise AssertionError(f"the response looked complete after {received} bytes")


def idle_upstream_connections(gw: Running) -> int:
    assert gw.app.proxy is not None
    return sum(len(pool.idle) for pool in gw.app.proxy.pools.pools.values())


# --------------------------------------------------------------------------- unreachable, slow


async def test_a_refused_upstream_is_502_at_once(start_gateway: GatewayFactory) -> None:
    with socket.socket() as s:  # a port that was just free: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with gateway_to(start_gateway, f"http://127.0.0.1:{port}") as gw:
        started = trio.current_time()
        response = await fetch(gw, request("GET", "/page"))
        elapsed = trio.current_time() - started
    assert response.status == 502
    assert response.header("connection") == "close"
    assert elapsed < 1.0


async def test_a_connect_timeout_is_504(start_gateway: GatewayFactory) -> None:
    # A listener with a backlog of 0 whose queue is full: Linux drops further SYNs, so a
    # connect neither succeeds nor fails.
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        filler.connect(listener.getsockname())
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        async with gateway_to(start_gateway, url, {"proxy.connect_timeout": 0.3}) as gw:
            started = trio.current_time()
            response = await fetch(gw, request("GET", "/page"))
            elapsed = trio.current_time() - started
    assert response.status == 504
    assert 0.25 < elapsed < 3.0


async def test_an_upstream_that_never_answers_is_504(
    start_gateway: GatewayFactory, upstream: UpstreamProcess
) -> None:
    async with gateway_to(start_gateway, upstream.url, {"proxy.read_timeout": 0.3}) as gw:
        response = await fetch(gw, request("GET", "/stall"))
        assert response.status == 504
        assert idle_upstream_connections(gw) == 0


async def test_a_body_that_stalls_cuts_the_response(
    start_gateway: GatewayFactory, upstream: UpstreamProcess
) -> None:
    async with gateway_to(start_gateway, upstream.url, {"proxy.read_timeout": 0.3}) as gw:
        async with client(gw) as c:
            await c.stream.send_all(request("GET", "/stall-body"))
            response = await assert_cut(c)
            assert response.header("content-length") == "1000"
        assert idle_upstream_connections(gw) == 0


async def test_an_upstream_closing_mid_response_cuts_it_and_is_not_reused(
    start_gateway: GatewayFactory, upstream: UpstreamProcess
) -> None:
    async with gateway_to(start_gateway, upstream.url) as gw:
        echoed(await fetch(gw, request("GET", "/first")))  # one pooled connection now
        async with client(gw) as c:
            await c.stream.send_all(request("GET", "/close-mid"))
            await assert_cut(c)
        echoed(await fetch(gw, request("GET", "/after")))
        stats = await upstream.stats()
    # /first and /close-mid shared a connection; after the error /after needed a new one.
    assert stats["connections"] == 2


async def test_a_killed_upstream_cuts_the_response(start_gateway: GatewayFactory) -> None:
    size = 100 * 1024 * 1024
    with running_upstream() as doomed:
        async with gateway_to(start_gateway, doomed.url) as gw, client(gw) as c:
            await c.stream.send_all(request("GET", f"/big?size={size}"))
            with trio.fail_after(TIMEOUT):
                response = await c.head()
                received = await read_killing(c, response, doomed, after=1024 * 1024)
            assert received < size
            with trio.fail_after(TIMEOUT):
                after = await fetch(gw, request("GET", "/after"))
            assert after.status == 502  # the pooled connection died with it: not reused


# --------------------------------------------------------------------------- body limits


async def test_a_declared_body_over_the_limit_is_413_before_anything_goes_upstream(
    start_gateway: GatewayFactory, upstream: UpstreamProcess
) -> None:
    async with gateway_to(start_gateway, upstream.url, {"proxy.max_body_size": 1000}) as gw:
        async with client(gw) as c:
            await c.stream.send_all(request("POST", "/upload", [("Content-Length", "1001")]))
            with trio.fail_after(TIMEOUT):
                response = await c.response()
            assert response.status == 413
            assert await c.closed()
        stats = await upstream.stats()
    assert stats["requests"] == []


@pytest.mark.parametrize("buffering", [True, False], ids=["buffered", "streamed"])
async def test_a_chunked_body_growing_over_the_limit_is_413(
    start_gateway: GatewayFactory, upstream: UpstreamProcess, buffering: bool
) -> None:
    changes = {"proxy.max_body_size": 100_000, "proxy.request_buffering": buffering}
    async with gateway_to(start_gateway, upstream.url, changes) as gw:
        async with client(gw) as c:
            head = request("POST", "/upload", [("Transfer-Encoding", "chunked")])
            await c.stream.send_all(head + chunked(b"z" * 150_000, 10_000)[:-5])
            with trio.fail_after(TIMEOUT):
                response = await c.response()
            assert response.status == 413
            assert await c.closed()
        assert idle_upstream_connections(gw) == 0
        echoed(await fetch(gw, request("GET", "/after")))
        stats = await upstream.stats()
    if buffering:  # refused while reading the body: the upstream was never asked
        assert (stats["connections"], stats["requests"]) == (1, [["GET", "/after"]])
    else:
        assert stats["connections"] == 2  # the aborted exchange's connection was not reused
        assert stats["requests"][-1] == ["GET", "/after"]


async def test_a_malformed_chunked_body_is_400_and_aborts_the_exchange(
    start_gateway: GatewayFactory, upstream: UpstreamProcess
) -> None:
    async with gateway_to(start_gateway, upstream.url) as gw, client(gw) as c:
        head = request("POST", "/upload", [("Transfer-Encoding", "chunked")])
        await c.stream.send_all(head + b"5\r\nhello\r\nzz\r\n")
        with trio.fail_after(TIMEOUT):
            response = await c.response()
        assert response.status == 400
        assert await c.closed()
        assert idle_upstream_connections(gw) == 0


# --------------------------------------------------------------------------- smuggling

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"

VECTORS = {
    "CL.TE": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "TE.CL": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 40\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "TE chunked, identity": b"POST / HTTP/1.1\r\nHost: a\r\n"
    b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "TE space before colon": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
    b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "TE twice": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
    b"Transfer-Encoding: x\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "TE xchunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n"
    b"0\r\n\r\n" + SMUGGLED,
    "TE vertical tab": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n"
    b"0\r\n\r\n" + SMUGGLED,
    "duplicate CL": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
    b"Content-Length: 40\r\n\r\nhello" + SMUGGLED,
    "CL list": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 40\r\n\r\nhello" + SMUGGLED,
    "CL with sign": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello" + SMUGGLED,
    "HTTP/1.0 + TE": b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\n" + SMUGGLED,
    "Host with userinfo": b"GET / HTTP/1.1\r\nHost: a@evil\r\n\r\n" + SMUGGLED,
    "two Hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + SMUGGLED,
}


@pytest.mark.parametrize("raw", VECTORS.values(), ids=VECTORS.keys())
async def test_smuggling_vectors_never_reach_the_upstream(
    start_gateway: GatewayFactory, upstream: UpstreamProcess, raw: bytes
) -> None:
    async with gateway_to(start_gateway, upstream.url) as gw, client(gw) as c:
        await c.stream.send_all(raw)
        with trio.fail_after(TIMEOUT):
            response = await c.response()
        assert response.status in (400, 501)
        assert await c.closed()
        stats = await upstream.stats()
    assert stats["requests"] == []


async def test_a_body_that_looks_like_a_request_stays_a_body(
    start_gateway: GatewayFactory, upstream: UpstreamProcess
) -> None:
    body = b"0\r\n\r\n" + SMUGGLED
    async with gateway_to(start_gateway, upstream.url) as gw:
        raw = request("POST", "/upload", [("Content-Length", str(len(body)))], body=body)
        assert echoed(await fetch(gw, raw))["body_len"] == len(body)
        stats = await upstream.stats()
    assert stats["requests"] == [["POST", "/upload"]]


async def test_an_obs_folded_header_is_unfolded_and_reframed_consistently(
    start_gateway: GatewayFactory, upstream: UpstreamProcess
) -> None:
    # RFC 9112 §5.2 lets a server replace obs-fold with SP (h11 does): the gateway then sees a
    # chunked POST and a pipelined GET, and since it regenerates framing the upstream sees
    # exactly those two requests, never a different split of the bytes.
    raw = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"
    async with gateway_to(start_gateway, upstream.url) as gw, client(gw) as c:
        await c.stream.send_all(raw + SMUGGLED)
        with trio.fail_after(TIMEOUT):
            first, second = echoed(await c.response()), echoed(await c.response())
        stats = await upstream.stats()
    assert (first["body_len"], second["target"]) == (0, "/smuggled")
    assert stats["requests"] == [["POST", "/"], ["GET", "/smuggled"]]

"""The relayed response's framing towards the client (``forward._Framer``), written by the
gateway rather than h11 since issue 14: it must frame exactly as h11 would (RFC 9112 §6.3),
for every client version and method, and end the connection whenever the client asked."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from tests.support.in_process import GatewayFactory, Running
from tests.support.proxy_http import HTTPReader
from tests.support.raw_http import request
from tests.support.timeouts import TIMEOUT
from tests.support.upstream import UpstreamProcess, echoed, pattern_sha256


@asynccontextmanager
async def connected(
    start_gateway: GatewayFactory, upstream: UpstreamProcess
) -> AsyncIterator[tuple[Running, HTTPReader]]:
    async with start_gateway({"proxy.upstream": upstream.url}) as gw:
        with trio.fail_after(TIMEOUT):
            stream = await trio.open_tcp_stream(gw.host, gw.port)
        async with stream:
            yield gw, HTTPReader(stream)


async def test_an_http10_client_gets_a_chunked_upstream_body_close_delimited(
    start_gateway: GatewayFactory, upstream: UpstreamProcess
) -> None:
    # HTTP/1.0 has no chunked coding (RFC 9112 §7): the body ends with the connection.
    size = 200_000
    async with connected(start_gateway, upstream) as (_, c):
        target = f"/big?size={size}&chunked=1"
        await c.stream.send_all(request("GET", target, version="HTTP/1.0"))
        with trio.fail_after(TIMEOUT):
            response = await c.response()
    assert response.status == 200
    assert response.header("transfer-encoding") is None
    assert response.header("content-length") is None
    assert response.header("connection") == "close"
    assert hashlib.sha256(response.body).hexdigest() == pattern_sha256(size)


async def test_an_http10_client_keeps_a_content_length_and_the_connection_closes(
    start_gateway: GatewayFactory, upstream: UpstreamProcess
) -> None:
    async with connected(start_gateway, upstream) as (_, c):
        await c.stream.send_all(request("GET", "/big?size=5000", version="HTTP/1.0"))
        with trio.fail_after(TIMEOUT):
            response = await c.response()
        assert response.header("content-length") == "5000"
        assert response.header("connection") == "close"
        assert len(response.body) == 5000
        assert await c.closed()


async def test_head_of_a_chunked_resource_says_chunked_and_sends_no_body(
    start_gateway: GatewayFactory, upstream: UpstreamProcess
) -> None:
    async with connected(start_gateway, upstream) as (_, c):
        await c.stream.send_all(
            request("HEAD", "/big?size=5000&chunked=1") + request("GET", "/after")
        )
        with trio.fail_after(TIMEOUT):
            head = await c.response(head_request=True)
            # A body after the HEAD answer would be read here as the next status line.
            after = await c.response()
    assert head.status == 200
    assert head.header("transfer-encoding") == "chunked"
    assert echoed(after)["target"] == "/after"


async def test_a_request_saying_close_gets_close_and_the_connection_ends(
    start_gateway: GatewayFactory, upstream: UpstreamProcess
) -> None:
    async with connected(start_gateway, upstream) as (_, c):
        await c.stream.send_all(
            request("GET", "/first", [("Connection", "close")]) + request("GET", "/second")
        )
        with trio.fail_after(TIMEOUT):
            first = await c.response()
        assert echoed(first)["target"] == "/first"
        assert first.header("connection") == "close"
        assert await c.closed()
        assert bytes(c.buffer) == b""  # /second was never answered


async def test_pipelined_proxied_and_own_answers_keep_their_order(
    start_gateway: GatewayFactory, upstream: UpstreamProcess
) -> None:
    # Answers written by h11, by the proxy and by the front door alternate on one connection:
    # each cycle must start from the bytes the previous one left.
    async with connected(start_gateway, upstream) as (_, c):
        await c.stream.send_all(
            request("GET", "/a")
            + request("GET", "/healthz")
            + request("POST", "/b", [("Content-Length", "3")], body=b"xyz")
            + request("GET", "/healthz")
            + request("GET", "/c")
        )
        with trio.fail_after(TIMEOUT):
            answers = [await c.response() for _ in range(5)]
    assert echoed(answers[0])["target"] == "/a"
    assert answers[1].body == b"ok\n"
    assert echoed(answers[2])["target"] == "/b"
    assert answers[3].body == b"ok\n"
    assert echoed(answers[4])["target"] == "/c"

"""``[limits]`` through the real server: one client address past each limit is refused while
another address (127.0.0.2, the client socket bound to it) is still served; behind a trusted
proxy the forwarded client is the one counted (gateway/client_limits.py)."""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio

from tests.support.in_process import GatewayFactory, Running, wait_until
from tests.support.raw_http import (
    RawClient,
    Response,
    expected_accept,
    new_key,
    request,
    upgrade_headers,
)
from tests.support.timeouts import TIMEOUT
from tests.support.upstream import UpstreamProcess
from tests.support.ws_frames import TEXT, masked_frame

ONE = "127.0.0.1"
TWO = "127.0.0.2"  # on Linux all of 127.0.0.0/8 is the loopback interface


@asynccontextmanager
async def connect_from(gw: Running, source: str) -> AsyncIterator[RawClient]:
    """A TCP connection to the gateway whose source address is ``source``."""
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(gw.host, gw.port, local_address=source)
    async with stream:
        yield RawClient(stream)


async def upgrade(
    client: RawClient, path: str = "/echo", headers: Sequence[tuple[str, str]] = ()
) -> Response:
    key = new_key()
    await client.send(request("GET", path, [*upgrade_headers(key), *headers]))
    response = await client.read_response()
    if response.status == 101:
        assert response.header("sec-websocket-accept") == expected_accept(key)
    return response


async def echoes(client: RawClient) -> None:
    """The WebSocket on ``client`` is served: a message comes back."""
    await client.send(masked_frame(TEXT, b"still served"))
    assert await client.read_frame() == (TEXT, True, b"still served")


def limit_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "gateway.limits"]


# --------------------------------------------------------------------------- connections


async def test_connections_per_client(
    start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "gateway.limits")
    with trio.fail_after(TIMEOUT):
        async with (
            start_gateway({"limits.connections_per_client": 3}) as gw,
            AsyncExitStack() as stack,
        ):
            held = [await stack.enter_async_context(connect_from(gw, ONE)) for _ in range(3)]
            assert (await upgrade(held[0])).status == 101
            await wait_until(lambda: gw.app.connections == 3, "three connections accepted")

            # The fourth from the same address: 503 at once, whatever it sends (here a
            # handshake, written before the answer could arrive), then closed.
            for _ in range(3):
                async with connect_from(gw, ONE) as extra:
                    response = await upgrade(extra)
                    assert (response.status, response.header("retry-after")) == (503, "1")
                    assert response.body == b"too many connections from your address\n"
                    assert await extra.read_until_eof() == b""
            assert gw.app.connections == 3  # refused ones never took a place
            assert gw.app.limits.limiter.refused_connections == 3

            # Another address connects, upgrades and is served; so is the first's WebSocket.
            async with connect_from(gw, TWO) as other:
                assert (await upgrade(other)).status == 101
                await echoes(other)
            await echoes(held[0])

            # One line for the three refusals, naming the address.
            lines = limit_lines(caplog)
            assert len(lines) == 1, lines
            assert lines[0].startswith("client 127.0.0.1 refused 503: 3 connections open")
            assert "server.trusted_proxies" in lines[0]  # a loopback peer: maybe a proxy

            # A connection that ends gives its place back.
            await held[1].stream.aclose()
            await wait_until(lambda: gw.app.connections == 2, "a place freed")
            async with connect_from(gw, ONE) as again:
                assert (await upgrade(again)).status == 101
                await echoes(again)
        limiter = gw.app.limits.limiter
        for source in (ONE, TWO):  # every place was given back at shutdown
            assert limiter.open_connections(limiter.key(ipaddress.ip_address(source))) == 0


# --------------------------------------------------------------------------- handshakes


async def test_handshake_rate_per_client(
    start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "gateway.limits")
    changes = {"limits.handshakes_per_second": 0.1, "limits.handshake_burst": 3}
    with trio.fail_after(TIMEOUT):
        async with start_gateway(changes) as gw, AsyncExitStack() as stack:
            for _ in range(3):  # the burst
                client = await stack.enter_async_context(connect_from(gw, ONE))
                assert (await upgrade(client)).status == 101
            for _ in range(3):
                async with connect_from(gw, ONE) as client:
                    response = await upgrade(client)
                    assert response.status == 429
                    assert response.body == b"too many handshakes from your address\n"
                    # a token every 10 s: the next one within 10 s, said in whole seconds
                    assert 1 <= int(response.header("retry-after") or "") <= 10
                    assert response.header("connection") == "close"
                    assert await client.read_until_eof() == b""
            # A plain request from the same address is not a handshake: served.
            async with connect_from(gw, ONE) as client:
                await client.send(request("GET", "/healthz"))
                assert (await client.read_response()).status == 200
            async with connect_from(gw, TWO) as other:
                assert (await upgrade(other)).status == 101
                await echoes(other)
            assert gw.app.limits.limiter.refused_handshakes == 3
            lines = limit_lines(caplog)
            assert len(lines) == 1, lines
            assert lines[0].startswith("client 127.0.0.1 refused 429: over 0.1 handshakes/s")


# --------------------------------------------------------------------------- proxied requests


async def get(client: RawClient, target: str, headers: Sequence[tuple[str, str]] = ()) -> Response:
    await client.send(request("GET", target, headers))
    return await client.read_response()


async def test_http_request_rate_for_the_proxy(
    start_gateway: GatewayFactory, upstream: UpstreamProcess
) -> None:
    changes = {
        "proxy.upstream": upstream.url,
        "limits.requests_per_second": 0.1,
        "limits.request_burst": 2,
    }
    with trio.fail_after(TIMEOUT):
        async with start_gateway(changes) as gw:
            async with connect_from(gw, ONE) as client:
                assert (await get(client, "/api/one")).status == 200
                assert (await get(client, "/api/two")).status == 200
                refused = await get(client, "/api/three")
                assert refused.status == 429
                assert refused.body == b"too many requests from your address\n"
                assert 1 <= int(refused.header("retry-after") or "") <= 10
                assert refused.header("connection") is None  # the connection stays
                assert (await get(client, "/api/four")).status == 429
                # Probes and static files are not the proxy's: never limited.
                assert (await get(client, "/healthz")).status == 200
                assert (await get(client, "/")).status == 200
            async with connect_from(gw, TWO) as other:
                assert (await get(other, "/api/five")).status == 200
            assert gw.app.limits.limiter.refused_requests == 2
    stats = await upstream.stats()
    # the refused ones never went upstream
    assert stats["requests"] == [["GET", "/api/one"], ["GET", "/api/two"], ["GET", "/api/five"]]


# --------------------------------------------------------------------------- trusted proxies


def forwarded(address: str) -> list[tuple[str, str]]:
    return [("X-Forwarded-For", address)]


async def test_behind_a_trusted_proxy_the_forwarded_client_is_counted(
    start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    changes = {
        "server.trusted_proxies": [ONE],  # 127.0.0.1 plays the proxy
        "limits.connections_per_client": 2,
        "limits.handshakes_per_second": 0.1,
        "limits.handshake_burst": 3,
    }
    caplog.set_level(logging.DEBUG, "gateway.session")  # the sessions' "open" lines
    with trio.fail_after(TIMEOUT):
        async with start_gateway(changes) as gw, AsyncExitStack() as stack:
            # The proxy's own connections are not one client's: more than 2 are accepted.
            alice = [await stack.enter_async_context(connect_from(gw, ONE)) for _ in range(3)]
            for client in alice[:2]:
                assert (await upgrade(client, headers=forwarded("203.0.113.7"))).status == 101
            # Alice's third WebSocket through the proxy: her connections are full.
            response = await upgrade(alice[2], headers=forwarded("203.0.113.7"))
            assert (response.status, response.header("retry-after")) == (503, "1")
            assert response.body == b"too many connections from your address\n"
            # Bob, through the same proxy, is his own client (the proxy's chain: the client
            # wrote "203.0.113.7" itself, the proxy appended what it saw).
            bob = await stack.enter_async_context(connect_from(gw, ONE))
            bob_chain = forwarded("203.0.113.7, 198.51.100.4")
            assert (await upgrade(bob, headers=bob_chain)).status == 101
            await echoes(bob)
            await echoes(alice[0])
            # session.remote is the forwarded client (the engine's ws.remote stays the peer).
            opened = [r for r in caplog.records if r.getMessage() == "open /echo"]
            assert any(str(getattr(r, "remote", "")).startswith("198.51.100.4") for r in opened)
            # Handshakes are counted per forwarded client too.  A place freed, Alice takes
            # the last of her burst of 3 (the 503 took none); after that, 429.
            limiter = gw.app.limits.limiter
            alice_key = limiter.key(ipaddress.ip_address("203.0.113.7"))

            async def free_one_of_alices(client: RawClient) -> RawClient:
                await client.stream.aclose()
                await wait_until(lambda: limiter.open_connections(alice_key) < 2, "place freed")
                return await stack.enter_async_context(connect_from(gw, ONE))

            again = await free_one_of_alices(alice[0])
            assert (await upgrade(again, headers=forwarded("203.0.113.7"))).status == 101
            await echoes(again)
            late = await free_one_of_alices(alice[1])
            response = await upgrade(late, headers=forwarded("203.0.113.7"))
            assert response.status == 429
            assert response.body == b"too many handshakes from your address\n"
            async with connect_from(gw, ONE) as carol:
                assert (await upgrade(carol, headers=forwarded("192.0.2.55"))).status == 101
            lines = limit_lines(caplog)
            assert any(line.startswith("client 203.0.113.7 refused 503") for line in lines)


async def test_x_forwarded_for_from_anyone_else_is_ignored(start_gateway: GatewayFactory) -> None:
    changes = {"server.trusted_proxies": [ONE], "limits.connections_per_client": 2}
    with trio.fail_after(TIMEOUT):
        async with start_gateway(changes) as gw, AsyncExitStack() as stack:
            # 127.0.0.2 is not a trusted proxy: claiming other addresses changes nothing.
            for i in range(2):
                client = await stack.enter_async_context(connect_from(gw, TWO))
                assert (await upgrade(client, headers=forwarded(f"203.0.113.{i}"))).status == 101
            async with connect_from(gw, TWO) as third:
                response = await upgrade(third, headers=forwarded("203.0.113.99"))
                assert response.status == 503


async def test_server_trusted_proxies_extend_the_proxys_x_forwarded_for(
    start_gateway: GatewayFactory, upstream: UpstreamProcess
) -> None:
    changes = {"proxy.upstream": upstream.url, "server.trusted_proxies": [ONE]}
    with trio.fail_after(TIMEOUT):
        async with start_gateway(changes) as gw:
            async with connect_from(gw, ONE) as proxy:
                response = await get(proxy, "/api/x", forwarded("203.0.113.7"))
            async with connect_from(gw, TWO) as stranger:
                spoofed = await get(stranger, "/api/x", forwarded("203.0.113.7"))
    seen = dict((k.lower(), v) for k, v in json.loads(response.body)["headers"])
    assert seen["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    seen = dict((k.lower(), v) for k, v in json.loads(spoofed.body)["headers"])
    assert seen["x-forwarded-for"] == "127.0.0.2"

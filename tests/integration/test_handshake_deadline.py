"""``handshake_timeout`` counts from the first byte of the request that carries the upgrade,
not from the TCP accept: an upgrade on an older keep-alive connection is served (issue 9,
item 6), and a handshake that stalls is still cut at its own deadline."""

from __future__ import annotations

import trio

from tests.support.in_process import GatewayFactory
from tests.support.raw_http import (
    expected_accept,
    new_key,
    raw_connection,
    request,
    upgrade_headers,
)
from tests.support.timeouts import TIMEOUT

# Short enough for a quick test, and the keep-alive idle time is well above it.
CHANGES = {"websocket.handshake_timeout": 0.5, "http.keepalive_timeout": 5.0}


async def test_an_upgrade_on_an_old_keep_alive_connection_is_served(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(CHANGES) as gw, raw_connection(gw) as client:
        with trio.fail_after(TIMEOUT):
            await client.send(request("GET", "/healthz"))
            assert (await client.read_response()).status == 200
        await trio.sleep(1.0)  # the connection is now twice handshake_timeout old
        key = new_key()
        with trio.fail_after(TIMEOUT):
            await client.send(request("GET", "/echo", upgrade_headers(key)))
            response = await client.read_response()
        assert response.status == 101
        assert response.header("sec-websocket-accept") == expected_accept(key)


async def test_an_upgrade_head_sent_slowly_on_a_keep_alive_connection_keeps_its_deadline(
    start_gateway: GatewayFactory,
) -> None:
    """The deadline starts at the request's first byte: a head trickling in for longer than
    handshake_timeout (but within head_timeout) is not upgraded; the socket is closed."""
    async with start_gateway(CHANGES) as gw, raw_connection(gw) as client:
        with trio.fail_after(TIMEOUT):
            await client.send(request("GET", "/healthz"))
            assert (await client.read_response()).status == 200
        data = request("GET", "/echo", upgrade_headers(new_key()))
        await client.send(data[:10])
        await trio.sleep(0.8)
        await client.send(data[10:])
        with trio.fail_after(TIMEOUT):
            assert await client.read_until_eof() == b""

"""``/metrics`` through the real server: traffic over real sockets, then a scrape over HTTP
parsed with prometheus-client's own parser, and the values checked."""

from __future__ import annotations

import trio
import trio_websocket

from gateway.ws.connection import WebSocketConnection
from tests.support.admin import admin_gateway, samples, value
from tests.support.http_client import fetch
from tests.support.in_process import GatewayFactory, wait_until, ws_client
from tests.support.raw_http import new_key, raw_connection, request, upgrade_headers
from tests.support.upstream import running_upstream
from tests.support.ws_frames import TEXT, masked_frame


async def test_websocket_handshakes_messages_bytes_and_closes(nursery: trio.Nursery) -> None:
    async with admin_gateway(nursery) as gw:
        running = gw.running
        async with ws_client(running, "/echo") as a, ws_client(running, "/echo") as b:
            for ws, text in ((a, "hello"), (a, "héllo ✓"), (b, "x" * 1000)):
                await ws.send_message(text)
                assert await ws.get_message() == text
            await b.send_message(b"\x00\x01\x02")
            assert await b.get_message() == b"\x00\x01\x02"
            families = await gw.metrics()
            assert value(families, "gateway_websocket_connections", mount="echo") == 2
            assert value(families, "gateway_websocket_connections", mount="clock") == 0
            # 4 messages each way; payload bytes, text counted as UTF-8
            size = 5 + len("héllo ✓".encode()) + 1000 + 3
            assert value(families, "gateway_websocket_messages_received_total", mount="echo") == 4
            assert value(families, "gateway_websocket_messages_sent_total", mount="echo") == 4
            assert value(families, "gateway_websocket_received_bytes_total", mount="echo") == size
            assert value(families, "gateway_websocket_sent_bytes_total", mount="echo") == size
            await a.aclose(code=4000, reason="bye")
        await wait_until(lambda: len(running.app.mounts["echo"].mount) == 0, "echo emptied")

        # A cross-site handshake (403) and a broken one (400) on the same mount.
        async with raw_connection(running) as raw:
            headers = [*upgrade_headers(new_key()), ("Origin", "http://evil.example")]
            await raw.send(request("GET", "/echo", headers))
            assert (await raw.read_response()).status == 403
        async with raw_connection(running) as raw:
            no_key = [("Upgrade", "websocket"), ("Connection", "Upgrade")]
            await raw.send(request("GET", "/echo", [*no_key, ("Sec-WebSocket-Version", "13")]))
            assert (await raw.read_response()).status == 400

        families = await gw.metrics()
        assert value(families, "gateway_handshakes_total", mount="echo", status="101") == 2
        assert value(families, "gateway_handshakes_total", mount="echo", status="403") == 1
        assert value(families, "gateway_handshakes_total", mount="echo", status="400") == 1
        assert value(families, "gateway_websocket_connections", mount="echo") == 0
        # Closed sessions keep their counts in the mount's totals.
        assert value(families, "gateway_websocket_messages_received_total", mount="echo") == 4
        assert value(families, "gateway_websocket_closes_total", mount="echo", code="4000") == 1
        assert value(families, "gateway_websocket_closes_total", mount="echo") == 2
        # Refused handshakes are handshakes, not HTTP requests.
        assert value(families, "gateway_http_requests_total") == 0
        assert {"mount": "echo", "path": "/echo"} in samples(families, "gateway_mount_info")


async def test_fan_out_counts_each_recipient(nursery: trio.Nursery) -> None:
    changes = {"plugins.room": {"path": "/room", "use": "plugins.broadcast:broadcast"}}
    async with admin_gateway(nursery, changes) as gw:
        running = gw.running
        async with (
            ws_client(running, "/room") as a,
            ws_client(running, "/room") as b,
            ws_client(running, "/room") as c,
        ):
            await wait_until(lambda: len(running.app.mounts["room"].mount) == 3, "3 joined")
            await a.send_message("to everyone")
            for ws in (a, b, c):
                assert await ws.get_message() == "to everyone"
            families = await gw.metrics()
        assert value(families, "gateway_websocket_messages_received_total", mount="room") == 1
        assert value(families, "gateway_websocket_messages_sent_total", mount="room") == 3
        assert value(families, "gateway_websocket_sent_bytes_total", mount="room") == 3 * 11


async def test_keepalive_close_is_counted(nursery: trio.Nursery) -> None:
    """A client that never answers pings is closed 1011, counted as a keepalive close."""
    changes = {
        "plugins.echo.ping_interval": 0.1,
        "plugins.echo.ping_timeout": 0.2,
        "plugins.echo.close_timeout": 0.2,
    }
    async with admin_gateway(nursery, changes) as gw:
        running = gw.running
        async with raw_connection(running) as raw:
            await raw.send(request("GET", "/echo", upgrade_headers(new_key())))
            assert (await raw.read_response()).status == 101
            await raw.send(masked_frame(TEXT, b"hi"))  # one message, then silence
            await wait_until(
                lambda: running.app.mounts["echo"].mount.keepalive_closes == 1, "keepalive close"
            )
        families = await gw.metrics()
        assert value(families, "gateway_websocket_keepalive_closes_total", mount="echo") == 1
        assert value(families, "gateway_websocket_closes_total", mount="echo", code="1011") == 1
        assert value(families, "gateway_websocket_slow_consumer_closes_total", mount="echo") == 0


async def test_http_requests_by_kind_and_status(nursery: trio.Nursery) -> None:
    async with admin_gateway(nursery) as gw:
        url = gw.running.url
        assert (await fetch(url, "/healthz")).status == 200
        assert (await fetch(url, "/")).status == 200
        assert (await fetch(url, "/no-such-file")).status == 404
        assert (await fetch(url, "/echo")).status == 426  # a WebSocket path asked for without it
        async with raw_connection(gw.running) as raw:
            await raw.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n")
            assert (await raw.read_response()).status == 400
        families = await gw.metrics()
        assert value(families, "gateway_http_requests_total", kind="health", status="200") == 1
        assert value(families, "gateway_http_requests_total", kind="static", status="200") == 1
        assert value(families, "gateway_http_requests_total", kind="static", status="404") == 1
        assert value(families, "gateway_http_requests_total", kind="reject", status="426") == 1
        assert value(families, "gateway_http_requests_total", kind="reject", status="400") == 1
        assert value(families, "gateway_connections_accepted_total") >= 5


async def test_metrics_are_not_served_on_the_public_port(nursery: trio.Nursery) -> None:
    async with admin_gateway(nursery) as gw:
        reply = await fetch(gw.running.url, "/metrics")
        assert reply.status == 404
        assert b"gateway_" not in reply.body
        assert (await fetch(gw.admin_url, "/metrics")).status == 200


async def test_proxy_requests_latency_and_pool(nursery: trio.Nursery) -> None:
    with running_upstream() as upstream:
        changes = {
            "proxy.routes": [{"prefix": "/api", "upstream": upstream.url}],
            "proxy.upstream": upstream.url,
            "http.static_root": None,
        }
        async with admin_gateway(nursery, changes) as gw:
            url = gw.running.url
            for _ in range(3):
                assert (await fetch(url, "/api/items?id=7")).status == 200
            assert (await fetch(url, "/other")).status == 200
            families = await gw.metrics()
    assert value(families, "gateway_http_requests_total", kind="proxy", status="200") == 4
    assert value(families, "gateway_proxy_requests_total", route="/api", status="200") == 3
    assert value(families, "gateway_proxy_requests_total", route="default", status="200") == 1
    count = "gateway_proxy_upstream_duration_seconds_count"
    assert value(families, count, route="/api") == 3
    assert value(families, count, route="default") == 1
    assert value(families, "gateway_proxy_upstream_duration_seconds_sum", route="/api") > 0
    inf = value(families, "gateway_proxy_upstream_duration_seconds_bucket", route="/api", le="+Inf")
    assert inf == 3
    # One upstream behind both routes: one connection opened, the others reused from the pool.
    authority = upstream.url.removeprefix("http://")
    assert value(families, "gateway_proxy_pool_opened_total", upstream=authority) == 1
    assert value(families, "gateway_proxy_pool_reused_total", upstream=authority) == 3
    # Route labels are the configured prefixes, never the paths asked for.
    routes = {s["route"] for s in samples(families, "gateway_proxy_requests_total")}
    assert routes == {"/api", "default"}


async def test_upstream_auth_outcomes(nursery: trio.Nursery) -> None:
    """An auth service that answers 200 without naming a user fails closed (503)."""
    with running_upstream() as upstream:
        changes = {
            "plugins.echo.auth": "upstream",
            "plugins.echo.auth_url": f"{upstream.url}/whoami",
        }
        async with admin_gateway(nursery, changes) as gw:
            async with raw_connection(gw.running) as raw:
                await raw.send(request("GET", "/echo", upgrade_headers(new_key())))
                assert (await raw.read_response()).status == 503
            families = await gw.metrics()
    assert value(families, "gateway_upstream_auth_total", mount="echo", outcome="unavailable") == 1
    assert value(families, "gateway_upstream_auth_total", mount="echo", outcome="accepted") == 0
    assert value(families, "gateway_upstream_auth_duration_seconds_count", mount="echo") == 1
    assert value(families, "gateway_handshakes_total", mount="echo", status="503") == 1


async def test_limit_refusals_are_counted(nursery: trio.Nursery) -> None:
    changes = {"limits.handshakes_per_second": 1.0, "limits.handshake_burst": 1}
    async with admin_gateway(nursery, changes) as gw:
        statuses = []
        for _ in range(3):
            async with raw_connection(gw.running) as raw:
                await raw.send(request("GET", "/echo", upgrade_headers(new_key())))
                statuses.append((await raw.read_response()).status)
        families = await gw.metrics()
    assert statuses[0] == 101 and 429 in statuses[1:]
    refused = statuses.count(429)
    assert value(families, "gateway_limits_refused_total", limit="handshakes") == refused
    assert value(families, "gateway_handshakes_total", mount="echo", status="429") == refused


async def test_without_admin_connections_are_not_metered(start_gateway: GatewayFactory) -> None:
    """No [admin] table: the same engine class (it counts for the closing log line)."""
    async with start_gateway() as running, ws_client(running, "/echo") as ws:
        await ws.send_message("x")
        assert await ws.get_message() == "x"
        (conn,) = running.app.mounts["echo"].mount.clients
        assert type(conn) is WebSocketConnection
        assert running.app.config.admin is None


async def test_with_admin_connections_are_metered(nursery: trio.Nursery) -> None:
    async with admin_gateway(nursery) as gw, ws_client(gw.running, "/echo") as ws:
        await ws.send_message("x")
        assert await ws.get_message() == "x"
        (conn,) = gw.app.mounts["echo"].mount.clients
        assert isinstance(conn, WebSocketConnection)
        assert (conn.messages_in, conn.messages_out) == (1, 1)


async def test_trio_websocket_client_is_unaffected(nursery: trio.Nursery) -> None:
    """Metering changes nothing a client sees: close codes travel as before."""
    async with admin_gateway(nursery) as gw, ws_client(gw.running, "/echo") as ws:
        await ws.aclose(code=1000)
        assert isinstance(ws.closed, trio_websocket.CloseReason)
        assert ws.closed.code == 1000

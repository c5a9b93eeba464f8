"""The admin listener over real sockets: what it serves, what it refuses, and that the public
port serves none of it."""

from __future__ import annotations

import json
from pathlib import Path

import trio
import trio_websocket

from tests.support.admin import admin_gateway, scrape, value
from tests.support.gateway_config import config_data, write_config
from tests.support.gateway_process import GatewayProcess
from tests.support.http_client import fetch
from tests.support.in_process import ws_client
from tests.support.raw_http import new_key, upgrade_headers
from tests.support.timeouts import TIMEOUT


async def test_the_status_page_and_its_headers(nursery: trio.Nursery) -> None:
    async with admin_gateway(nursery) as gw:
        page = await fetch(gw.admin_url, "/")
        assert page.status == 200
        assert page.header("content-type") == "text/html; charset=utf-8"
        assert "frame-ancestors 'none'" in (page.header("content-security-policy") or "")
        assert b"new WebSocket" in page.body and b"/live" in page.body
        head = await fetch(gw.admin_url, "/", method="HEAD")
        assert head.status == 200 and head.body == b""
        assert (await fetch(gw.admin_url, "/nope")).status == 404
        assert (await fetch(gw.admin_url, "/metrics", method="POST")).status == 405
        # The status page is not on the public port either.
        assert (await fetch(gw.running.url, "/live")).status == 404


async def test_openmetrics_when_asked(nursery: trio.Nursery) -> None:
    async with admin_gateway(nursery) as gw:
        accept = [("Accept", "application/openmetrics-text; version=1.0.0")]
        reply = await fetch(gw.admin_url, "/metrics", accept)
        assert reply.status == 200
        assert (reply.header("content-type") or "").startswith("application/openmetrics-text")
        assert reply.body.rstrip().endswith(b"# EOF")


async def test_a_foreign_host_is_refused(nursery: trio.Nursery) -> None:
    """DNS rebinding: on loopback the admin answers loopback names only."""
    async with admin_gateway(nursery) as gw:
        host, port = gw.admin_url.removeprefix("http://").rsplit(":", 1)
        with trio.fail_after(TIMEOUT):
            stream = await trio.open_tcp_stream(host, int(port))
            async with stream:
                await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: evil.example\r\n\r\n")
                data = b""
                while chunk := await stream.receive_some(65536):
                    data += chunk
        assert data.startswith(b"HTTP/1.1 400 ")
        assert b"gateway_" not in data


async def test_the_live_feed(nursery: trio.Nursery) -> None:
    async with admin_gateway(nursery) as gw:
        feed_url = "ws" + gw.admin_url.removeprefix("http") + "/live"
        own = [(b"Origin", gw.admin_url.encode())]
        async with ws_client(gw.running, "/echo") as client:
            await client.send_message("x")
            assert await client.get_message() == "x"
            async with trio_websocket.open_websocket_url(
                feed_url, extra_headers=own, connect_timeout=TIMEOUT
            ) as feed:
                with trio.fail_after(TIMEOUT):
                    first = json.loads(await feed.get_message())
                    assert first["history"], "the charts' history comes first"
                    echo = first["snapshot"]["mounts"]["echo"]
                    assert echo["path"] == "/echo"
                    assert echo["clients"] == 1
                    later = json.loads(await feed.get_message())  # a second later
                assert later["point"]["t"] > first["history"][-1]["t"] - 1
                assert later["point"]["m"]["echo"][:2] == [1, 1]


async def test_the_live_feed_refuses_other_origins(nursery: trio.Nursery) -> None:
    """Cross-site WebSocket hijacking: a page elsewhere cannot read the feed."""
    async with admin_gateway(nursery) as gw:
        handshake = upgrade_headers(new_key())
        foreign = await fetch(
            gw.admin_url, "/live", [*handshake, ("Origin", "http://evil.example")]
        )
        assert foreign.status == 403
        broken = await fetch(gw.admin_url, "/live", handshake[:2])  # no key, no version
        assert broken.status in (400, 426)
        elsewhere = await fetch(gw.admin_url, "/metrics", handshake)
        assert elsewhere.status == 404


def test_serve_without_admin_has_no_admin_listener(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", config_data())
    process = GatewayProcess.serve(config)
    try:
        url = process.wait_ready()

        async def check() -> None:
            assert (await fetch(url, "/metrics")).status == 404
            assert (await fetch(url, "/healthz")).status == 200  # served, and still no admin

        trio.run(check)
        assert not any("admin on" in line for line in process.lines)
    finally:
        process.stop()


def test_serve_with_admin(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", config_data({"admin.listen": "127.0.0.1:0"}))
    process = GatewayProcess.serve(config)
    try:
        url = process.wait_ready()

        async def check() -> None:
            for _ in range(100):  # logged just after the public address
                lines = [line for line in process.lines if "admin on http://" in line]
                if lines:
                    break
                await trio.sleep(0.05)
            admin = lines[0].split("admin on ", 1)[1].split()[0]
            assert admin != url
            families = await scrape(admin)
            assert value(families, "gateway_mount_info", mount="echo", path="/echo") == 1
            assert (await fetch(url, "/metrics")).status == 404

        trio.run(check)
    finally:
        process.stop()

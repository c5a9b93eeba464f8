"""The admin status page in the real headless Chromium: live numbers and charts over its
WebSocket, while another tab holds WebSockets on ``/echo`` and fetches through the proxy."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.support.gateway_config import config_data
from tests.support.gateway_process import GatewayProcess
from tests.support.timeouts import STARTUP_DEADLINE
from tests.support.upstream import running_upstream

pytestmark = pytest.mark.browser

ADMIN_LINE = re.compile(r"admin on (http://\S+)")


@pytest.fixture(scope="module")
def gateway_with_admin() -> Iterator[tuple[str, str]]:
    """(public URL, admin URL) of a gateway subprocess with ``[admin]`` and a proxy route."""
    with running_upstream() as upstream:
        changes = {
            "admin.listen": "127.0.0.1:0",
            "proxy.routes": [{"prefix": "/api", "upstream": upstream.url}],
        }
        with GatewayProcess.serve(config_data(changes)) as server:
            assert server.url is not None
            deadline = time.monotonic() + STARTUP_DEADLINE
            while not (found := [m[1] for line in server.lines if (m := ADMIN_LINE.search(line))]):
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.05)
            yield server.url, found[0]


def open_sockets(page: Page, count: int) -> None:
    """``count`` WebSockets on /echo from a page of the public origin, each echoing once."""
    page.evaluate(
        """async (count) => {
            window.sockets = [];
            for (let i = 0; i < count; i++) {
                const ws = new WebSocket(`ws://${location.host}/echo`);
                await new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = fail; });
                const echoed = new Promise((ok) => { ws.onmessage = (e) => ok(e.data); });
                ws.send(`hello ${i}`);
                if (await echoed !== `hello ${i}`) throw new Error("no echo");
                window.sockets.push(ws);
            }
        }""",
        count,
    )


def test_the_status_page_shows_live_traffic(
    context: BrowserContext, gateway_with_admin: tuple[str, str], tmp_path: Path
) -> None:
    public, admin = gateway_with_admin
    status = context.new_page()
    status.goto(admin + "/")
    expect(status.locator("#state")).to_have_text("live")
    echo = status.locator('#mounts tr[data-mount="echo"]')
    expect(echo.locator("td.path")).to_have_text("/echo")
    expect(echo.locator("td.clients")).to_have_text("0")

    site = context.new_page()
    site.goto(public + "/")
    open_sockets(site, 3)
    expect(echo.locator("td.clients")).to_have_text("3")
    expect(status.locator("#clients")).to_have_text("3")
    expect(echo.locator('td.handshakes span[data-code="101"]')).to_have_text("101 \u00d7 3")

    # A burst of messages shows as a rate, and on the chart.
    site.evaluate(
        "() => { for (const ws of window.sockets) for (let i = 0; i < 50; i++) ws.send('m'); }"
    )
    expect(echo.locator("td.received")).not_to_have_text("0")
    expect(status.locator("#chart-messages polyline")).to_have_count(2)

    # A close code, and the client count going down.
    site.evaluate("() => window.sockets[0].close(4001, 'done')")
    expect(echo.locator("td.clients")).to_have_text("2")
    expect(echo.locator('td.closes span[data-code="4001"]')).to_have_text("4001 \u00d7 1")

    # Proxied requests show under their route, with a latency.
    site.evaluate("async () => { for (let i = 0; i < 3; i++) await fetch('/api/items'); }")
    route = status.locator('#routes tr[data-route="/api"]')
    expect(route.locator("td.requests")).to_have_text("3")
    expect(route.locator("td.latency")).to_have_text(re.compile(r"^[0-9.]+ ms$"))
    expect(status.locator("#no-routes")).to_be_hidden()

    shot = tmp_path / "status-page.png"
    status.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    site.evaluate("() => window.sockets.forEach((ws) => ws.close())")
    expect(echo.locator("td.clients")).to_have_text("0")

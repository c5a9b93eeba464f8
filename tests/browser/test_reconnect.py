"""The pages as real clients: the gateway restarts under an open page, and the page explains
the close, clears what it no longer knows, waits (back-off with jitter) and comes back.

Each test runs its own gateway (the package's shared one must not be restarted), on a port the
OS picked for the first start and reused for the second.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import BrowserContext, expect

from tests.support.gateway_config import REPO
from tests.support.gateway_process import GatewayProcess

pytestmark = pytest.mark.browser

WAITING = re.compile(r"reconnecting in \d+ s")


def start(port: int) -> GatewayProcess:
    server = GatewayProcess.serve(REPO / "config.toml", listen=f"127.0.0.1:{port}")
    server.wait_ready()
    return server


@pytest.fixture
def restartable() -> Iterator[list[GatewayProcess]]:
    """A list holding the running gateway (tests replace it); every one is stopped at the end."""
    started = [start(0)]
    try:
        yield started
    finally:
        for server in started:
            server.stop()


def test_chat_reconnects_after_a_restart(
    context: BrowserContext, restartable: list[GatewayProcess]
) -> None:
    first = restartable[0]
    room = f"restart-{uuid.uuid4().hex[:8]}"
    page = context.new_page()
    page.goto(f"{first.url}/chat.html?room={room}")
    status, members, feed = (
        page.locator("#status"),
        page.locator("#members"),
        page.locator("#messages"),
    )
    expect(status).to_have_text("connected")
    expect(members).to_have_text("1")

    first.stop()  # SIGTERM: the gateway closes every session with 1001, then exits
    # The close is explained in words, the count is gone, and a retry is announced.
    expect(feed).to_contain_text("the server is going away (restarting or shutting down) [1001")
    expect(members).to_have_text("\u2013")  # an en dash: no count
    expect(page.locator("#send")).to_be_disabled()
    expect(status).to_have_text(WAITING)
    # Tries while the server is down fail as "connection lost", and wait again.
    expect(feed).to_contain_text("connection lost", timeout=15_000)
    expect(status).to_have_text(WAITING)

    restartable.append(start(first.port))
    expect(status).to_have_text("connected", timeout=20_000)  # back-off: at most a few s here
    expect(members).to_have_text("1")
    expect(page.locator("#send")).to_be_enabled()
    line = f"after the restart {uuid.uuid4().hex[:6]}"
    page.fill("#text", line)
    page.press("#text", "Enter")
    expect(feed.locator("li.msg").filter(has_text=line)).to_have_count(1)


def test_clock_reconnects_after_a_restart(
    context: BrowserContext, restartable: list[GatewayProcess]
) -> None:
    first = restartable[0]
    page = context.new_page()
    page.goto(f"{first.url}/clock.html")
    status = page.locator("#status")
    expect(status).to_have_text("connected")
    first.stop()
    expect(status).to_have_text(WAITING)
    expect(status).to_contain_text("disconnected:")
    expect(page.locator("#reconnect")).to_be_enabled()  # or now, by hand
    restartable.append(start(first.port))
    expect(status).to_have_text("connected", timeout=20_000)
    ticks = page.locator("#ticks")
    before = int(ticks.inner_text())
    expect(ticks).not_to_have_text(str(before))  # the new session ticks

"""The classic clients in examples/public, unchanged tutorial code, in headless Chromium.

``classic-chat.html`` is the javascript.info tutorial's client against ``/classic/chat``
(``format = "text"``); ``classic-time.html`` opens and closes a socket to ``/classic/time``.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.support.gateway_config import REPO
from tests.support.gateway_process import GatewayProcess

pytestmark = pytest.mark.browser

# config.toml keeps the tutorial's 5 s; the time test runs its own gateway with this instead,
# so it sees ticks without waiting 5 s for the first one.
FAST_INTERVAL = 0.3
TIME_TABLE = "[plugins.classic_time.options]\ninterval = 5.0"


def open_classic_chat(context: BrowserContext, base: str) -> Page:
    page = context.new_page()
    page.goto(f"{base}/classic-chat.html")
    # The tutorial's page shows no connection state; its global `socket` does.
    page.wait_for_function("() => socket.readyState === WebSocket.OPEN")
    return page


def publish(page: Page, text: str) -> None:
    """Switch to the tab, type into the tutorial's form and press Send, as a person would.
    (A background tab's animation frames are throttled, which slows Playwright's click.)"""
    page.bring_to_front()
    page.fill("form[name=publish] input[name=message]", text)
    page.click("form[name=publish] input[type=submit]")


def test_two_tabs_chat_in_plain_text_cut_to_50(context: BrowserContext, gateway_url: str) -> None:
    a = open_classic_chat(context, gateway_url)
    b = open_classic_chat(context, gateway_url)
    tag = uuid.uuid4().hex[:8]

    # Markup and JSON-looking text both arrive as the very text that was sent.
    hello = f'hello from A <b>{tag}</b> {{"type": "message"}}'
    publish(a, hello)
    for tab in (a, b):
        line = tab.locator("#messages > div").filter(has_text=tag)
        expect(line).to_have_count(1)
        expect(line).to_have_text(hello)  # plain text: no JSON envelope, no user name
        expect(line.locator("b")).to_have_count(0)  # textContent, never markup

    reply = f"reply from B {tag}"
    publish(b, reply)
    for tab in (a, b):
        # prepend(): the newest message is the first child.
        expect(tab.locator("#messages > div").first).to_have_text(reply)

    long = (tag + "0123456789" * 6)[:60]
    assert len(long) == 60
    publish(a, long)
    for tab in (a, b):
        expect(tab.locator("#messages > div").first).to_have_text(long[:50])
    # Exactly the three messages: no join/leave notices, no echo of anything else.
    expect(a.locator("#messages > div")).to_have_text([long[:50], reply, hello])


@pytest.fixture(scope="module")
def time_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, float]]:
    """(base URL, tick interval): a gateway on config.toml with only ``classic_time``'s
    interval shortened; under ``GATEWAY_TEST_CMD``, the shared server and its 5 s."""
    if os.environ.get("GATEWAY_TEST_CMD"):
        yield request.getfixturevalue("gateway_url"), 5.0
        return
    text = (REPO / "config.toml").read_text(encoding="utf-8")
    assert text.count(TIME_TABLE) == 1, "config.toml's classic_time table changed"
    text = text.replace(TIME_TABLE, f"[plugins.classic_time.options]\ninterval = {FAST_INTERVAL}")
    # The copy lives elsewhere, so the path relative to config.toml's folder is made absolute.
    static = 'static_root = "examples/public"'
    assert text.count(static) == 1
    text = text.replace(static, f"static_root = {str(REPO / 'examples' / 'public')!r}")
    config = Path(tmp_path_factory.mktemp("classic")) / "config.toml"
    config.write_text(text, encoding="utf-8")
    with GatewayProcess.serve(config) as server:
        assert server.url is not None
        yield server.url, FAST_INTERVAL


def test_time_page_opens_ticks_and_closes(page: Page, time_server: tuple[str, float]) -> None:
    base, interval = time_server
    page.goto(f"{base}/classic-time.html")
    status, items = page.locator("#status"), page.locator("#messages li")
    expect(status).to_have_text("Status: not connected")
    expect(page.locator("#close")).to_be_disabled()

    page.click("#open")
    expect(status).to_have_text("Status: open")
    expect(page.locator("#open")).to_be_disabled()
    ticks = items.filter(has_text="Server time:")
    # Two ticks: the highlight has moved at least once.
    expect(ticks.nth(1)).to_be_visible(timeout=(2 * interval + 5) * 1000)
    expect(items.first).to_contain_text("Server says:")  # the clock's greeting came first
    expect(page.locator("#messages li.latest")).to_have_count(1)
    expect(items.last).to_have_class(re.compile(r"\blatest\b"))
    expect(items.last).to_have_css("font-weight", "700")  # highlighted, not just tagged

    page.click("#close")
    expect(status).to_have_text("Status: closed (code 1000: closed by the user)")
    expect(page.locator("#open")).to_be_enabled()
    expect(page.locator("#close")).to_be_disabled()


def test_the_index_links_to_the_classic_pages(page: Page, gateway_url: str) -> None:
    page.goto(f"{gateway_url}/")
    for href in ("classic-chat.html", "classic-time.html"):
        expect(page.locator(f"main a[href='{href}']")).to_have_count(1)
    page.click("main a[href='classic-chat.html']")
    expect(page).to_have_url(f"{gateway_url}/classic-chat.html")
    expect(page.locator("form[name=publish] input[name=message]")).to_be_visible()

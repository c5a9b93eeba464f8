"""The demo pages in examples/public, driven in headless Chromium against a running gateway.

Sync Playwright in plain ``def`` tests (see conftest).  Waits are Playwright's auto-retrying
``expect`` assertions bounded by the conftest timeouts, never sleeps.
"""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.support.pages import open_chat, say, unique

pytestmark = pytest.mark.browser


def ws_base(http_url: str) -> str:
    return re.sub(r"^http", "ws", http_url)


# --- a. chat ------------------------------------------------------------------------------


def test_chat_between_two_tabs_stays_in_its_room(context: BrowserContext, gateway_url: str) -> None:
    room, other_room = unique("room"), unique("other")
    a = open_chat(context, gateway_url, room)
    b = open_chat(context, gateway_url, room)
    c = open_chat(context, gateway_url, other_room)
    expect(a.locator("#members")).to_have_text("2")  # a saw b join

    # Markup in a message must arrive as text, never as elements (XSS).
    hello = f"hello from A <b>bold</b> {uuid.uuid4().hex[:6]}"
    say(a, hello)
    for tab in (a, b):
        line = tab.locator("#messages li.msg").filter(has_text=hello)
        expect(line).to_have_count(1)
        expect(line.locator("b")).to_have_count(0)

    # c's message must not reach room: after it has echoed in c, send one more in room; once
    # that arrives in b, anything from c would have arrived before it.
    elsewhere = f"only in the other room {uuid.uuid4().hex[:6]}"
    say(c, elsewhere)
    expect(c.locator("#messages li.msg").filter(has_text=elsewhere)).to_have_count(1)
    reply = f"reply from B {uuid.uuid4().hex[:6]}"
    say(b, reply)
    expect(a.locator("#messages li.msg").filter(has_text=reply)).to_have_count(1)
    for tab in (a, b):
        expect(tab.locator("#messages li.msg").filter(has_text=elsewhere)).to_have_count(0)
    expect(c.locator("#messages")).not_to_contain_text(hello)
    expect(c.locator("#messages")).not_to_contain_text(reply)

    # b leaves: a is told and the count drops.
    b.close()
    expect(a.locator("#messages li.notice").filter(has_text="left")).to_have_count(1)
    expect(a.locator("#members")).to_have_text("1")


def test_chat_join_switches_room(context: BrowserContext, gateway_url: str) -> None:
    room, first = unique("target"), unique("first")
    a = open_chat(context, gateway_url, room)
    c = open_chat(context, gateway_url, first)
    expect(c.locator("#room-name")).to_have_text(first)

    # The new socket's URL is built from location, with the room percent-encoded.
    with c.expect_websocket() as ws_info:
        c.fill("#room", room)
        c.click("#join")
    assert ws_info.value.url == f"{ws_base(gateway_url)}/chat/{room}"
    expect(c.locator("#status")).to_have_text("connected")
    expect(c.locator("#room-name")).to_have_text(room)
    assert c.url.endswith(f"?room={room}")  # the address bar follows, so a reload rejoins

    text = f"after switching {uuid.uuid4().hex[:6]}"
    say(c, text)
    expect(a.locator("#messages li.msg").filter(has_text=text)).to_have_count(1)


def test_chat_room_name_is_percent_encoded(page: Page, gateway_url: str) -> None:
    # Only the URL the page builds is checked: whether the server accepts the name is its own
    # business (and tested at the server's level).
    page.goto(f"{gateway_url}/chat.html")
    expect(page.locator("#room")).to_have_value("lobby")  # the default room
    with page.expect_websocket() as ws_info:
        page.fill("#room", "a b&c/ü")
        page.click("#join")
    assert ws_info.value.url == f"{ws_base(gateway_url)}/chat/a%20b%26c%2F%C3%BC"


def test_chat_input_takes_the_servers_limit_and_a_cut_is_told(
    context: BrowserContext, gateway_url: str
) -> None:
    room = unique("limit")
    a = open_chat(context, gateway_url, room)
    b = open_chat(context, gateway_url, room)
    # config.toml: max_message_chars = 50, announced in the join notice.
    expect(a.locator("#text")).to_have_attribute("maxlength", "50")
    # A client that ignores maxlength (here: the attribute removed) is cut by the server, and
    # the sender alone is told so.
    a.evaluate("document.getElementById('text').removeAttribute('maxlength')")
    say(a, "x" * 60)
    for tab in (a, b):
        expect(tab.locator("#messages li.msg").filter(has_text="x" * 50)).to_have_count(1)
    cut = "your message was cut to 50 characters (10 left out)"
    expect(a.locator("#messages li.notice").filter(has_text=cut)).to_have_count(1)
    say(b, "sync")  # b's own line arrives after anything a notice for b would have
    expect(b.locator("#messages li.msg").filter(has_text="sync")).to_have_count(1)
    expect(b.locator("#messages")).not_to_contain_text("was cut")


# --- b. clock -----------------------------------------------------------------------------


def ticks(page: Page) -> int:
    return int(page.locator("#ticks").inner_text())


def test_clock_greets_ticks_and_acks(page: Page, gateway_url: str) -> None:
    page.goto(f"{gateway_url}/clock.html")
    expect(page.locator("#status")).to_have_text("connected")
    expect(page.locator("#greeting")).to_have_text(re.compile(r"\S"))

    # The default config ticks every second; wait for the count to go up twice.
    start = ticks(page)
    page.wait_for_function(
        "n => Number(document.querySelector('#ticks').textContent) >= n", arg=start + 2
    )
    shown = page.locator("#time").inner_text()
    expect(page.locator("#time")).not_to_have_text(shown)  # the next tick changes it

    ping = f"ping {uuid.uuid4().hex[:8]}"
    page.fill("#ping-text", ping)
    page.click("#ping")
    expect(page.locator("#acks li").filter(has_text=ping)).to_have_count(1)


# --- c. echo ------------------------------------------------------------------------------


def test_echo_logs_every_event(page: Page, gateway_url: str) -> None:
    with page.expect_websocket() as ws_info:
        page.goto(f"{gateway_url}/echo.html")
    assert ws_info.value.url == f"{ws_base(gateway_url)}/echo"
    state = page.locator("#state")
    log = page.locator("#log")
    expect(state).to_have_text("OPEN (1)")
    expect(log.locator("li.ev-open")).to_have_count(1)

    text = f"echo me {uuid.uuid4().hex[:6]}"
    page.fill("#message", text)
    page.click("#send")
    echoed = log.locator("li.ev-message").filter(has_text=text)
    expect(echoed).to_have_count(1)
    expect(echoed).to_have_attribute("data-kind", "text")

    page.fill("#message", "héllo")  # 6 UTF-8 bytes: é is two
    page.click("#send-binary")
    binary = log.locator("li.ev-message[data-kind=binary]")
    expect(binary).to_have_count(1)
    expect(binary).to_contain_text("6 bytes")
    expect(binary).to_contain_text("68 c3 a9 6c 6c 6f")

    page.fill("#close-code", "4000")
    page.fill("#close-reason", "bye")
    page.click("#disconnect")
    closed = log.locator("li.ev-close")
    expect(closed).to_have_count(1)
    expect(closed).to_have_attribute("data-code", "4000")
    expect(closed).to_have_attribute("data-reason", "bye")
    expect(closed).to_have_attribute("data-was-clean", "true")
    expect(closed).to_contain_text('code=4000 reason="bye" wasClean=true')
    expect(closed).to_contain_text("(closed by the application)")  # the code, in words
    expect(state).to_have_text("CLOSED (3)")
    expect(log.locator("li.ev-error")).to_have_count(0)  # a clean close fires no error

    # Connect again: a second open on the same page.
    page.click("#connect")
    expect(state).to_have_text("OPEN (1)")
    expect(log.locator("li.ev-open")).to_have_count(2)


# --- d. index -----------------------------------------------------------------------------


def test_index_links_to_the_demos(page: Page, gateway_url: str) -> None:
    page.goto(f"{gateway_url}/")
    for name in ("echo", "chat", "clock"):
        expect(page.locator(f"main a[href='{name}.html']")).to_have_count(1)
    for path in ("/foo", "/bar", "/hello", "/healthz"):
        expect(page.locator("main")).to_contain_text(path)
    expect(page.locator("head link[rel='icon']")).to_have_attribute("href", "favicon.svg")

    page.click("main a[href='clock.html']")
    expect(page).to_have_url(f"{gateway_url}/clock.html")
    expect(page.locator("#greeting")).to_have_text(re.compile(r"\S"))


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/style.css", "text/css"),
        ("/app.js", "javascript"),
        ("/echo.html", "text/html"),
        ("/favicon.svg", "image/svg+xml"),
        ("/favicon.ico", "image/"),  # what a browser asks for when a page names no icon
    ],
)
def test_assets_are_served_with_their_types(
    page: Page, gateway_url: str, path: str, content_type: str
) -> None:
    # Chromium refuses a stylesheet or script served with the wrong type, silently.
    response = page.request.get(gateway_url + path)
    assert response.status == 200
    assert content_type in response.headers.get("content-type", "")

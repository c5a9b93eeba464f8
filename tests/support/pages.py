"""The chat page as a browser test drives it (tests/browser/): a fresh room, an open page,
a line said."""

from __future__ import annotations

import uuid

from playwright.sync_api import BrowserContext, Page, expect


def unique(prefix: str) -> str:
    """A room name no other test (or earlier run against the same server) has used."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def open_chat(context: BrowserContext, base: str, room: str) -> Page:
    page = context.new_page()
    page.goto(f"{base}/chat.html?room={room}")
    expect(page.locator("#status")).to_have_text("connected")
    expect(page.locator("#room")).to_have_value(room)
    return page


def say(page: Page, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")  # Enter submits the form; no click needed
    expect(page.locator("#text")).to_have_value("")

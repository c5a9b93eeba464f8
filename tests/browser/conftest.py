"""Fixtures for the browser tests: a real gateway subprocess
(:class:`tests.support.gateway_process.GatewayProcess`) and a headless Chromium.

Playwright's *sync* API is used on purpose: the suite runs with pytest-trio's ``trio_mode``, and
plain ``def`` tests stay outside trio, so Playwright's own event loop never meets trio's.

``GATEWAY_TEST_CMD`` (optional) replaces the gateway command line, e.g. to run the pages against
another server; it must print ``listening on http://HOST:PORT`` to stderr like the gateway does.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.support.gateway_config import REPO
from tests.support.gateway_process import GatewayProcess

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # containers and CI often run as root, where the sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000  # every Playwright action and assertion; no test may hang


def start_gateway() -> GatewayProcess:
    """``GATEWAY_TEST_CMD`` split as a shell would, or ``gateway serve`` on config.toml."""
    override = os.environ.get("GATEWAY_TEST_CMD")
    if override:
        return GatewayProcess(command=shlex.split(override))
    return GatewayProcess.serve(REPO / "config.toml")


@pytest.fixture(scope="package")
def gateway() -> Iterator[GatewayProcess]:
    with start_gateway() as server:
        yield server


@pytest.fixture(scope="package")
def gateway_url(gateway: GatewayProcess) -> str:
    """Base URL of the running gateway, e.g. ``http://127.0.0.1:41234`` (no trailing slash)."""
    assert gateway.url is not None
    return gateway.url


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    # Package scope, not session: Playwright's sync API keeps an asyncio loop running in this
    # thread while it is open, which would break asyncio-based tests collected after these.
    if not CHROMIUM.exists():
        # Fail, never skip: a silently skipped browser suite looks like a green one.
        pytest.fail(
            f"{CHROMIUM} not found: the browser tests need Debian's chromium "
            "(apt-get install chromium); the project's test script installs it",
            pytrace=False,
        )
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh context (own cookies and storage) per test; page errors fail the test."""
    ctx = browser.new_context()
    ctx.set_default_timeout(TIMEOUT_MS)
    ctx.set_default_navigation_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    errors: list[str] = []
    ctx.on("weberror", lambda e: errors.append(f"{e.page.url if e.page else '?'}: {e.error}"))
    try:
        yield ctx
    finally:
        ctx.close()
    # An uncaught exception in the page's JavaScript is a bug even if the assertions passed.
    assert not errors, "uncaught JavaScript errors:\n" + "\n".join(errors)


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the gateway's log to the report of a failed browser test."""
    report = yield
    funcargs: dict[str, object] = getattr(item, "funcargs", {})
    server = funcargs.get("gateway")
    if report.failed and isinstance(server, GatewayProcess):
        report.sections.append(("gateway log", server.log()))
    return report

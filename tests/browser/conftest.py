"""Fixtures for the browser tests: a real gateway subprocess and a headless Chromium.

Playwright's *sync* API is used on purpose: the suite runs with pytest-trio's ``trio_mode``, and
plain ``def`` tests stay outside trio, so Playwright's own event loop never meets trio's.

``GATEWAY_TEST_CMD`` (optional) replaces the gateway command line, e.g. to run the pages against
another server; it must print ``listening on http://HOST:PORT`` to stderr like the gateway does.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import IO

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

REPO = Path(__file__).resolve().parents[2]
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
STARTUP_DEADLINE = 20.0  # seconds until the gateway must have logged its address
STOP_TIMEOUT = 15.0  # seconds between SIGTERM and SIGKILL
TIMEOUT_MS = 10_000  # every Playwright action and assertion; no test may hang
LISTENING = re.compile(r"listening on (http://\S+)")


class Gateway:
    """A gateway subprocess whose stderr is drained by a thread, so the pipe never fills."""

    def __init__(self, cmd: list[str]) -> None:
        self.cmd = cmd
        self.lines: list[str] = []
        self.url: str | None = None
        self._found = threading.Event()
        self._eof = False
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        assert self.proc.stderr is not None
        self._reader = threading.Thread(
            target=self._drain, args=(self.proc.stderr,), name="gateway-stderr", daemon=True
        )
        self._reader.start()

    def _drain(self, stream: IO[str]) -> None:
        # Runs until EOF (the process exited), long after the address was found.
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            if self.url is None and (m := LISTENING.search(line)):
                self.url = m.group(1).rstrip("/")
                self._found.set()
        self._eof = True
        self._found.set()  # EOF: wake the waiter so it reports the failure at once

    def wait_ready(self, timeout: float) -> str:
        """The base URL once logged; fail with the log if it is not within ``timeout``."""
        self._found.wait(timeout)
        if self.url is None:
            if self._eof:
                try:
                    why = f"exited with status {self.proc.wait(STOP_TIMEOUT)}"
                except subprocess.TimeoutExpired:
                    why = "closed its stderr without logging 'listening on http://...'"
            else:
                why = f"did not log 'listening on http://...' within {timeout:.0f} s"
            self.stop()
            pytest.fail(f"gateway {why}: {shlex.join(self.cmd)}\n{self.log()}", pytrace=False)
        return self.url

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited after ``STOP_TIMEOUT``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.lines.append(f"[conftest] no exit {STOP_TIMEOUT:.0f} s after SIGTERM: killed")
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()  # an open pipe would be a ResourceWarning, i.e. an error

    def log(self) -> str:
        return "\n".join(self.lines[-200:]) or "(no output)"


def gateway_command() -> list[str]:
    override = os.environ.get("GATEWAY_TEST_CMD")
    if override:
        return shlex.split(override)
    return [
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--config",
        str(REPO / "config.toml"),
        "--listen",
        "127.0.0.1:0",
    ]


@pytest.fixture(scope="package")
def gateway() -> Iterator[Gateway]:
    server = Gateway(gateway_command())
    try:
        server.wait_ready(STARTUP_DEADLINE)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package")
def gateway_url(gateway: Gateway) -> str:
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
    if report.failed and isinstance(server, Gateway):
        report.sections.append(("gateway log", server.log()))
    return report

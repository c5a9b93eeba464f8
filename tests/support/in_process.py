"""A gateway served inside the test's own trio run (the ``start_gateway`` and ``gateway``
fixtures of tests/integration/conftest.py are built on :func:`serve_with_shutdown`), and the
client helpers that go with it: a trio-websocket client that never leaks its socket, and a
poll for server-side state."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import trio
import trio_websocket

from gateway.app import App, build
from gateway.config.load import parse
from gateway.core.address import ListenAddress
from gateway.server import open_listeners, serve
from tests.support.gateway_config import REPO, config_data
from tests.support.timeouts import TIMEOUT


@dataclass
class Running:
    """An in-process gateway serving on ``url`` (``http://127.0.0.1:PORT``)."""

    url: str
    app: App

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def ws_url(self, path: str) -> str:
        return "ws" + self.url.removeprefix("http") + path


class GatewayFactory(Protocol):
    """The ``start_gateway`` fixture's type: ``async with start_gateway(changes) as gw:``."""

    def __call__(
        self,
        changes: Mapping[str, object] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> AbstractAsyncContextManager[Running]: ...


@dataclass
class Served:
    running: Running
    shutdown: trio.Event
    stopped: trio.Event


async def serve_with_shutdown(
    nursery: trio.Nursery,
    changes: Mapping[str, object] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Served:
    """Run a gateway (``config_data(changes)``) in ``nursery``; the caller holds the
    shutdown event (``start_gateway`` sets it when its block ends)."""
    app = build(parse(config_data(changes), base_dir=REPO), environ=environ or {})
    listeners = await open_listeners([ListenAddress("127.0.0.1", 0)])
    shutdown = trio.Event()
    stopped = trio.Event()

    async def run(*, task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await serve(app, listeners, shutdown, task_status=task_status)
        finally:
            stopped.set()

    urls: list[str] = await nursery.start(run)
    return Served(Running(urls[0], app), shutdown, stopped)


@asynccontextmanager
async def ws_client(
    running: Running, path: str
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A trio-websocket client that never leaks its socket."""
    async with trio_websocket.open_websocket_url(
        running.ws_url(path), connect_timeout=TIMEOUT, disconnect_timeout=TIMEOUT
    ) as ws:
        try:
            yield ws
        finally:
            if ws.closed is not None:
                # trio-websocket 0.12.2 leaks the client socket when the server closed first
                # (its aclose() returns early once a close reason is set, and its reader only
                # stops on EOF): close the TCP stream ourselves, or the ResourceWarning fails
                # the run under filterwarnings = error.
                await ws._stream.aclose()


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll server-side state that settles a moment after the client saw the effect (e.g. a
    mount forgets a client only after the close handshake has finished)."""
    deadline = trio.current_time() + timeout
    while not predicate():
        if trio.current_time() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await trio.sleep(0.01)  # the gateway has no event for these; poll briefly

"""The legacy example site (examples/legacy/app.py) under a real uvicorn, for integration tests.

:func:`run_legacy_site` binds a socket on 127.0.0.1 port 0 first (so the port is known before
uvicorn starts), serves a fresh :class:`LegacySite` on it from a thread
(``uvicorn.Server(config).run(sockets=[sock])``), and stops it on exit.  The site object is
returned too, so tests can look at what it saw (``ws_closes``); requests to it go through
:func:`tests.support.http_client.fetch`.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import trio
import trio_websocket
import uvicorn

from examples.legacy.app import LegacySite
from tests.support.http_client import fetch
from tests.support.timeouts import STARTUP_DEADLINE, TIMEOUT


@dataclass
class LegacyServer:
    """A running legacy site: ``http://127.0.0.1:{port}``."""

    site: LegacySite
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/echo"


@contextmanager
def run_legacy_site() -> Iterator[LegacyServer]:
    """Serve a fresh legacy site under uvicorn until the block is left (bounded in time)."""
    site = LegacySite()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        site,
        lifespan="off",
        ws="websockets-sansio",
        log_config=None,
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="legacy-site", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + STARTUP_DEADLINE
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the legacy site did not start")
            time.sleep(0.01)
        yield LegacyServer(site, sock.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(STARTUP_DEADLINE)
        sock.close()


async def login(port: int, user: str) -> str:
    """Log ``user`` in at the legacy site; the ``Cookie`` header value for the session."""
    reply = await fetch(
        f"http://127.0.0.1:{port}",
        "/login",
        [("Content-Type", "application/x-www-form-urlencoded")],
        method="POST",
        body=f"user={user}".encode(),
    )
    assert reply.status == 303, reply
    set_cookie = reply.header("set-cookie")
    assert set_cookie is not None
    return set_cookie.split(";", 1)[0]


@asynccontextmanager
async def ws_client(
    port: int,
    resource: str = "/ws/echo",
    *,
    subprotocols: Sequence[str] = (),
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A trio-websocket client to ``ws://127.0.0.1:port{resource}`` whose TCP stream is always
    closed (trio-websocket leaves it open when the server closes first)."""
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(TIMEOUT):
                ws = await trio_websocket.wrap_client_stream(
                    nursery,
                    stream,
                    f"127.0.0.1:{port}",
                    resource,
                    subprotocols=list(subprotocols) or None,
                    extra_headers=list(headers),
                )
            yield ws
            with trio.move_on_after(TIMEOUT) as scope:
                scope.shield = True
                await ws.aclose()
            nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)

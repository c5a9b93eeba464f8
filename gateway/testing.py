"""Test helpers for plugin authors: a whole gateway in memory, no sockets.

``serve()`` builds a real gateway (config validation, front door, handshake checks, auth,
the plugin's veto, the WebSocket engine) around one plugin and connects real trio-websocket
clients to it over trio memory streams, so a handler is tested exactly as it will run::

    from gateway.testing import serve

    async def test_echo() -> None:
        async with serve("plugins.echo:echo", "/echo") as gw, gw.connect("/echo") as ws:
            await ws.send_message("hi")
            assert await ws.get_message() == "hi"

Clients are :class:`trio_websocket.WebSocketConnection` objects with two conveniences added
by :class:`TestClient`: ``receive_json()`` and ``wait_closed()``.  A refused handshake raises
:class:`trio_websocket.ConnectionRejected` (with ``status_code``, ``headers`` and ``body``).
Works with pytest-trio's ``autojump_clock``: a plugin that sleeps 5 s is tested instantly.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio
import trio.testing
import trio_websocket
from trio_websocket import CloseReason, ConnectionClosed, Endpoint

from gateway.app import App, build
from gateway.config.load import parse
from gateway.core import cookies
from gateway.upgrade import serve_connection

__all__ = ["TestClient", "TestGateway", "serve"]

TEST_SECRET = "gateway-testing-secret-0123456789"
DEFAULT_TIMEOUT = 10.0


@dataclass
class TestClient:
    """A connected client: trio-websocket's connection plus test conveniences."""

    __test__ = False  # not a pytest test class

    ws: trio_websocket.WebSocketConnection
    timeout: float = DEFAULT_TIMEOUT

    async def send_message(self, message: str | bytes) -> None:
        await self.ws.send_message(message)

    async def get_message(self) -> str | bytes:
        """The next message; fails the test (``TooSlowError``) after ``timeout`` seconds."""
        with trio.fail_after(self.timeout):
            return await self.ws.get_message()

    async def receive_json(self) -> Any:
        message = await self.get_message()
        return json.loads(message)

    async def wait_closed(self) -> CloseReason:
        """Read (and drop) messages until the server closes; return its close code/reason."""
        with trio.fail_after(self.timeout):
            try:
                while True:
                    await self.ws.get_message()
            except ConnectionClosed as exc:
                return exc.reason or CloseReason(1006, None)

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        await self.ws.aclose(code, reason)

    @property
    def closed(self) -> CloseReason | None:
        return self.ws.closed

    @property
    def subprotocol(self) -> str | None:
        return self.ws.subprotocol


class TestGateway:
    """A gateway with one or more mounts, reachable in memory (see :func:`serve`)."""

    __test__ = False  # not a pytest test class

    def __init__(self, app: App, nursery: trio.Nursery) -> None:
        self.app = app
        self._nursery = nursery
        self._ports = itertools.count(40000)

    def mount(self, name: str = "test") -> Any:
        """The run-time :class:`gateway.mount.Mount` (clients, groups) of mount ``name``."""
        return self.app.mounts[name].mount

    def plugin(self, name: str = "test") -> Any:
        """The plugin mounted as ``name``: its instance (a :class:`gateway.api.Plugin`) or
        its handler function, as the gateway loaded it from the config."""
        loaded = self.app.mounts[name].plugin
        return loaded.instance if loaded.instance is not None else loaded.handler

    def sign_cookie(self, user: str) -> tuple[bytes, bytes]:
        """A ``Cookie`` header carrying a valid session cookie for ``user``."""
        assert self.app.keyring is not None, (
            'cookie auth is on only for mounts with websocket={"auth": ...} and no authenticator'
        )
        value = cookies.sign(self.app.keyring, user, time.time())
        name = self.app.config.auth.cookie_name
        return (b"cookie", f"{name}={value}".encode())

    @asynccontextmanager
    async def connect(
        self,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        subprotocols: tuple[str, ...] = (),
        host: str = "gateway.test",
        user: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> AsyncIterator[TestClient]:
        """Open a WebSocket to ``path`` (``user`` adds a signed session cookie)."""
        client_stream, server_stream = trio.testing.memory_stream_pair()
        port = next(self._ports)
        self._nursery.start_soon(
            partial(
                serve_connection,
                self.app,
                server_stream,
                remote=Endpoint("127.0.0.1", port, False),
            )
        )
        extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        if user is not None:
            extra.append(self.sign_cookie(user))
        # The client runs in a task of the gateway's background nursery, so a refused handshake
        # (or a failing test) raises as itself here, not wrapped in an ExceptionGroup.
        with trio.fail_after(timeout):
            ws: trio_websocket.WebSocketConnection = await self._nursery.start(
                _client, client_stream, host, path, subprotocols, extra
            )
        try:
            yield TestClient(ws, timeout)
        finally:
            if trio.current_effective_deadline() == -math.inf:
                # Leaving under cancellation: a closing handshake could not complete here.
                await trio.aclose_forcefully(ws)
            else:
                with trio.move_on_after(timeout) as scope:
                    scope.shield = True
                    await ws.aclose()


async def _client(
    stream: trio.abc.Stream,
    host: str,
    path: str,
    subprotocols: tuple[str, ...],
    headers: list[tuple[bytes, bytes]],
    *,
    task_status: trio.TaskStatus[trio_websocket.WebSocketConnection],
) -> None:
    """Open a trio-websocket client and keep its reader running until it is closed."""
    try:
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(
                nursery,
                stream,  # type: ignore[arg-type]  # any trio Stream works
                host,
                path,
                subprotocols=subprotocols or None,
                extra_headers=headers,
                message_queue_size=64,
                max_message_size=64 * 1024 * 1024,
            )
            task_status.started(ws)
    except trio_websocket.HandshakeError:
        raise
    except ExceptionGroup as group:
        # trio-websocket raises a refusal in its reader task: hand over the one rejection.
        rejected, rest = group.split(trio_websocket.HandshakeError)
        if rest is None and rejected is not None and len(rejected.exceptions) == 1:
            leaf = rejected.exceptions[0]
            if isinstance(leaf, trio_websocket.HandshakeError):
                raise leaf from None
        raise


@asynccontextmanager
async def serve(
    plugin: str,
    path: str = "/test",
    *,
    name: str = "test",
    options: Mapping[str, Any] | None = None,
    websocket: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    secret: str = TEST_SECRET,
) -> AsyncIterator[TestGateway]:
    """Run a gateway that mounts ``plugin`` (``"module:attr"``) at ``path``.

    ``options`` is the plugin's options table; ``websocket`` holds per-mount keys (``auth``,
    ``origins``, ``max_message_size``…); ``config`` adds whole tables (``{"auth": {...}}``,
    or more ``plugins``).  Everything is validated exactly as ``config.toml`` would be.
    The plugin's lifespan is entered and left around the block.
    """
    table: dict[str, Any] = {"path": path, "use": plugin, **(websocket or {})}
    if options:
        table["options"] = dict(options)
    data: dict[str, Any] = {key: dict(value) for key, value in (config or {}).items()}
    data.setdefault("plugins", {})[name] = table
    # No socket, no listen address: the Host a test connects with is its own choice
    # (server.hosts would otherwise default to the loopback names).
    data.setdefault("server", {}).setdefault("hosts", ["*"])
    secret_env = data.get("auth", {}).get("secret_env", "GATEWAY_SECRET")
    app = build(parse(data, source="<gateway.testing>"), environ={secret_env: secret})
    async with trio.open_nursery() as nursery:
        # Lifespans are left before the background tasks are cancelled, as in the server, so a
        # plugin's clean-up code runs un-cancelled.
        async with app.lifespans():
            yield TestGateway(app, nursery)
            app.start_draining()
        nursery.cancel_scope.cancel()

"""Plugin lifespans (background tasks, enter before serving, exit after) and the handshake
deadline (accept -> 101, authentication included)."""

from __future__ import annotations

from functools import partial

import trio
import trio.testing

from gateway.testing import serve
from gateway.upgrade import serve_connection
from tests import lifecycle_plugins
from tests.lifecycle_plugins import EVENTS


async def test_lifespan_runs_around_serving_and_its_task_reaches_clients(
    autojump_clock: trio.abc.Clock,
) -> None:
    EVENTS.clear()
    async with serve("tests.lifecycle_plugins:Ticker", "/t", options={"interval": 2.0}) as gw:
        assert EVENTS == ["enter"]  # before any connection
        async with gw.connect("/t") as ws:
            start = trio.current_time()
            assert await ws.get_message() == "tick 1"
            assert await ws.get_message() == "tick 2"
            assert 2.0 <= trio.current_time() - start <= 4.0
        assert EVENTS == ["enter", "handle"]
    assert EVENTS == ["enter", "handle", "exit"]


async def test_a_slow_authenticator_hits_the_handshake_deadline(
    autojump_clock: trio.abc.Clock,
) -> None:
    websocket = {
        "auth": "required",
        "authenticator": "tests.lifecycle_plugins:slow_auth",
        "handshake_timeout": 3.0,
    }
    async with serve("plugins.echo:echo", "/e", websocket=websocket) as gw:
        client, server = trio.testing.memory_stream_pair()
        gw._nursery.start_soon(partial(serve_connection, gw.app, server, remote=None))
        start = trio.current_time()
        await client.send_all(
            b"GET /e HTTP/1.1\r\nHost: gateway.test\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        with trio.fail_after(60):
            received = await client.receive_some()
        # Closed at the deadline, with nothing sent: no 101, no plugin code ran.
        assert received == b""
        assert 3.0 <= trio.current_time() - start < 3.5
        assert len(gw.mount()) == 0
        assert gw.mount().reserved == 0


def test_fixture_module_is_importable_by_dotted_path() -> None:
    assert callable(lifecycle_plugins.slow_auth)

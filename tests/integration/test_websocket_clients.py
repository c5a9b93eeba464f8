"""Independent WebSocket clients against a real gateway on a real port.

* ``websockets`` (asyncio): against a gateway subprocess (``gateway_process``), driven from
  plain ``def`` tests with ``asyncio.run`` so asyncio never meets trio's loop;
* ``trio-websocket``: against the in-process gateway (``gateway``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest
import trio
import trio_websocket
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
from websockets.typing import Subprotocol

from tests.support.gateway_process import GatewayProcess
from tests.support.in_process import Running, wait_until, ws_client
from tests.support.timeouts import TIMEOUT

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    """Run an asyncio client scenario with an overall deadline."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, TIMEOUT)

    return asyncio.run(bounded())


def ws_connect(url: str) -> connect:
    # No proxy from the environment, no compression offer: talk to the gateway directly.
    return connect(url, proxy=None, compression=None, open_timeout=TIMEOUT, close_timeout=TIMEOUT)


async def recv_json(ws: ClientConnection) -> dict[str, Any]:
    message = await ws.recv()
    assert isinstance(message, str), message
    value = json.loads(message)
    assert isinstance(value, dict)
    return value


# --------------------------------------------------------------------------- websockets


def test_websockets_echo_text_and_binary(gateway_process: GatewayProcess) -> None:
    async def scenario() -> None:
        async with ws_connect(gateway_process.ws_url("/echo")) as ws:
            await ws.send("héllo wörld")
            assert await ws.recv() == "héllo wörld"
            payload = bytes(range(256)) * 4
            await ws.send(payload)
            assert await ws.recv() == payload
            big = "x" * 70_000  # a 64-bit length frame
            await ws.send(big)
            assert await ws.recv() == big

    run(scenario())


def test_websockets_foo_and_bar_are_independent(gateway_process: GatewayProcess) -> None:
    async def scenario() -> None:
        async with (
            ws_connect(gateway_process.ws_url("/foo")) as foo1,
            ws_connect(gateway_process.ws_url("/foo")) as foo2,
            ws_connect(gateway_process.ws_url("/bar")) as bar,
        ):
            welcome1 = await recv_json(foo1)
            assert welcome1["type"] == "welcome"
            assert welcome1["mount"] == "foo"
            assert welcome1["label"] == "Foo server"
            welcome2 = await recv_json(foo2)
            assert welcome2["clients"] == 2
            await foo1.send("from foo1")
            reply = await recv_json(foo1)
            assert reply == {
                "type": "reply",
                "mount": "foo",
                "label": "Foo server",
                "clients": 2,
                "message": "from foo1",
            }
            # /bar has greet = false: its first message is the reply, and it counts only itself.
            await bar.send(b"\x00\x01\x02")
            assert await recv_json(bar) == {
                "type": "reply",
                "mount": "bar",
                "label": "Bar server",
                "clients": 1,
                "message": "<3 bytes>",
            }

    run(scenario())


def test_websockets_chat_broadcasts_within_one_room(gateway_process: GatewayProcess) -> None:
    async def rooms() -> None:
        async with ws_connect(gateway_process.ws_url("/chat/room-a")) as a1:
            join1 = await recv_json(a1)
            assert (join1["type"], join1["room"], join1["members"]) == ("join", "room-a", 1)
            user1 = join1["user"]
            assert isinstance(user1, str)
            assert user1.startswith("guest-")
            async with (
                ws_connect(gateway_process.ws_url("/chat/room-a")) as a2,
                ws_connect(gateway_process.ws_url("/chat/room-b")) as b1,
            ):
                join2 = await recv_json(a2)
                assert (join2["type"], join2["room"], join2["members"]) == ("join", "room-a", 2)
                assert await recv_json(a1) == join2  # a1 is told that a2 joined
                join_b = await recv_json(b1)
                assert (join_b["room"], join_b["members"]) == ("room-b", 1)

                long_text = "y" * 80  # max_message_chars = 50 in config.toml
                await a1.send(long_text)
                expected = {"type": "message", "room": "room-a", "user": user1, "text": "y" * 50}
                assert await recv_json(a1) == expected
                assert await recv_json(a2) == expected
                cut = {"type": "cut", "max_message_chars": 50, "dropped": 30}
                assert await recv_json(a1) == cut  # the sender alone is told
                # The broadcast was queued for every room-a member at once, before a2 got it;
                # b1's next message must be its own, not room-a's.
                await b1.send("only b")
                mine = await recv_json(b1)
                assert (mine["room"], mine["text"]) == ("room-b", "only b")
            # a2 (and b1) left: a1 hears a2 leave with the new member count.
            leave = await recv_json(a1)
            assert (leave["type"], leave["user"], leave["members"]) == ("leave", join2["user"], 1)

    run(rooms())


def test_websockets_clock_sends_hello_then_time(gateway_process: GatewayProcess) -> None:
    async def scenario() -> None:
        async with ws_connect(gateway_process.ws_url("/clock")) as ws:
            hello = await recv_json(ws)
            assert hello == {"type": "hello", "text": "Hello! This is the clock.", "interval": 0.2}
            tick = await recv_json(ws)
            assert tick["type"] == "time"
            assert isinstance(tick["epoch"], float)
            assert abs(tick["epoch"] - time.time()) < 5
            assert isinstance(tick["now"], str)
            assert tick["now"].startswith(time.strftime("%Y-", time.gmtime(tick["epoch"])))
            await ws.send("tock")
            # Ticks may interleave with the ack; skip them.
            while (message := await recv_json(ws))["type"] == "time":
                pass
            assert message == {"type": "ack", "received": "tock"}

    run(scenario())


def test_websockets_hello_closes_with_1000_and_reason(gateway_process: GatewayProcess) -> None:
    async def scenario() -> None:
        async with ws_connect(gateway_process.ws_url("/hello?name=Ada")) as ws:
            assert await ws.recv() == "Hello, Ada!"
            with pytest.raises(ConnectionClosedOK) as info:
                await ws.recv()
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1000
            assert info.value.rcvd.reason == "that's all, folks"

    run(scenario())


def test_websockets_no_subprotocol_header_when_none_configured(
    gateway_process: GatewayProcess,
) -> None:
    async def scenario() -> None:
        url = gateway_process.ws_url("/echo")
        async with connect(
            url, proxy=None, subprotocols=None, compression=None, open_timeout=TIMEOUT
        ) as ws:
            assert ws.response is not None
            assert ws.response.status_code == 101
            assert "Sec-WebSocket-Protocol" not in ws.response.headers
            assert ws.subprotocol is None
        # Offering one the mount does not speak: none is chosen, so no header either.
        async with connect(
            url, proxy=None, subprotocols=[Subprotocol("chat.v1")], compression=None
        ) as ws:
            assert ws.response is not None
            assert "Sec-WebSocket-Protocol" not in ws.response.headers
            assert ws.subprotocol is None

    run(scenario())


def test_websockets_crash_closes_1011_and_mount_keeps_working(
    gateway_process: GatewayProcess,
) -> None:
    async def scenario() -> None:
        async with (
            ws_connect(gateway_process.ws_url("/boom")) as doomed,
            ws_connect(gateway_process.ws_url("/boom")) as other,
        ):
            await doomed.send("boom")
            with pytest.raises(ConnectionClosed) as info:
                await doomed.recv()
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (1011, "internal error")
            await other.send("still here")
            assert await other.recv() == "still here"

    run(scenario())


# --------------------------------------------------------------------------- trio-websocket


async def _json(ws: trio_websocket.WebSocketConnection) -> dict[str, Any]:
    message = await ws.get_message()
    assert isinstance(message, str), message
    value = json.loads(message)
    assert isinstance(value, dict)
    return value


async def test_trio_websocket_echo(gateway: Running) -> None:
    with trio.fail_after(TIMEOUT):
        async with ws_client(gateway, "/echo") as ws:
            await ws.send_message("text ✓")
            assert await ws.get_message() == "text ✓"
            await ws.send_message(b"\xff\x00binary")
            assert await ws.get_message() == b"\xff\x00binary"


async def test_trio_websocket_chat(gateway: Running) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            ws_client(gateway, "/chat/lobby") as one,
            ws_client(gateway, "/chat/lobby") as two,
        ):
            assert (await _json(one))["members"] == 1
            join = await _json(two)
            assert (join["type"], join["members"]) == ("join", 2)
            assert await _json(one) == join
            async with ws_client(gateway, "/chat/elsewhere") as far:
                assert (await _json(far))["members"] == 1
                await two.send_message("hi lobby")
                for ws in (one, two):
                    message = await _json(ws)
                    assert message == {
                        "type": "message",
                        "room": "lobby",
                        "user": join["user"],
                        "text": "hi lobby",
                    }
                await far.send_message("hi elsewhere")
                assert (await _json(far))["text"] == "hi elsewhere"
            chat = gateway.app.mounts["chat"].mount
            await wait_until(lambda: chat.groups.keys() == {"lobby"}, "room 'elsewhere' dropped")
            assert len(chat.group("lobby")) == 2


async def test_trio_websocket_crash_is_1011_other_connection_unaffected(gateway: Running) -> None:
    with trio.fail_after(TIMEOUT):
        async with ws_client(gateway, "/boom") as doomed, ws_client(gateway, "/boom") as other:
            await other.send_message("before")
            assert await other.get_message() == "before"
            await doomed.send_message("boom")
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await doomed.get_message()
            closed = info.value.reason
            assert closed is not None
            assert (closed.code, closed.reason) == (1011, "internal error")
            await other.send_message("after")
            assert await other.get_message() == "after"
            boom = gateway.app.mounts["boom"].mount
            await wait_until(lambda: len(boom) == 1, "the crashed client unregistered")

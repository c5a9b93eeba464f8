"""The WebSocket limits over real sockets against the in-process gateway: message size (text in
bytes), fragment floods, keepalive, the frame rate, slow consumers in a busy room and inbound
backpressure.  Clients are trio-websocket where a well-behaved peer is enough, and raw sockets
where the test must misbehave on the wire."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import trio
import trio_websocket
from trio_websocket import Endpoint

from gateway.ws.connection import WebSocketConnection as ServerConnection
from tests.support.in_process import GatewayFactory, Running, wait_until, ws_client
from tests.support.memory import rss_bytes
from tests.support.raw_http import (
    RawClient,
    handshake,
    raw_connection,
)
from tests.support.timeouts import TIMEOUT
from tests.support.ws_frames import BINARY, CLOSE, CONT, PING, TEXT, masked_frame

MiB = 1024 * 1024
RSS_SLACK = 20 * MiB  # "memory stays flat": generous for allocator noise, far below the data

# --------------------------------------------------------------------------- helpers


async def closed_with(
    ws: trio_websocket.WebSocketConnection, last: str | bytes
) -> tuple[int, str | None]:
    """Send ``last`` and read until the server closes; its close code and reason.  (The server
    may close before the client has finished sending: then the send itself raises.)"""
    try:
        await ws.send_message(last)
        while True:
            await ws.get_message()
    except trio_websocket.ConnectionClosed as exc:
        reason = exc.reason
    assert reason is not None
    return reason.code, reason.reason


@asynccontextmanager
async def raw_websocket(running: Running, path: str) -> AsyncIterator[RawClient]:
    async with raw_connection(running) as client:
        await handshake(client, path)
        yield client


def close_payload(payload: bytes) -> tuple[int, str]:
    assert len(payload) >= 2, payload
    return int.from_bytes(payload[:2], "big"), payload[2:].decode("utf-8")


async def frames_until_close(client: RawClient) -> tuple[list[tuple[int, bytes]], int, str]:
    """Every frame before the server's Close, and that Close's code and reason."""
    before: list[tuple[int, bytes]] = []
    while True:
        opcode, fin, payload = await client.read_frame()
        assert fin
        if opcode == CLOSE:
            code, reason = close_payload(payload)
            return before, code, reason
        before.append((opcode, payload))


async def send_ignoring_reset(client: RawClient, data: bytes) -> None:
    """Send ``data``; the server may close (and reset) before it has read all of it."""
    try:
        await client.send(data)
    except trio.BrokenResourceError:
        pass


def server_side(running: Running, mount: str, port: int) -> ServerConnection:
    """The gateway's connection object for the client whose local port is ``port``."""
    found = [
        ws
        for ws in running.app.mounts[mount].mount.clients
        if isinstance(ws.remote, Endpoint) and ws.remote.port == port
    ]
    assert len(found) == 1, found
    return found[0]


# --------------------------------------------------------------------------- message size


async def test_too_big_message_is_1009_other_client_keeps_working(
    start_gateway: GatewayFactory,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with start_gateway({"plugins.echo.max_message_size": 1000}) as gw:
            echo = gw.app.mounts["echo"].mount
            async with ws_client(gw, "/echo") as other, ws_client(gw, "/echo") as big:
                await other.send_message("before")
                assert await other.get_message() == "before"
                await big.send_message(b"x" * 1000)  # exactly the limit: fine
                assert await big.get_message() == b"x" * 1000
                assert await closed_with(big, b"x" * 1001) == (1009, "message too big")
                await other.send_message("after")
                assert await other.get_message() == "after"
                await wait_until(lambda: len(echo) == 1, "the closed client unregistered")


async def test_text_limit_counts_utf8_bytes_not_characters(gateway: Running) -> None:
    # The default limit (config.toml): 1 MiB.
    assert gateway.app.mounts["echo"].mount.settings.max_message_size == MiB
    accented = "é" * 260_000  # 260 000 characters, 520 000 bytes
    emoji = "😀" * 400_000  # 400 000 characters (under 1 Mi), 1 600 000 bytes (over 1 MiB)
    assert len(emoji) < MiB < len(emoji.encode())
    with trio.fail_after(TIMEOUT):
        async with ws_client(gateway, "/echo") as ws:
            await ws.send_message(accented)
            assert await ws.get_message() == accented
            assert await closed_with(ws, emoji) == (1009, "message too big")


# --------------------------------------------------------------------------- fragments


async def test_fragment_flood_is_1008_quickly_without_memory_growth(gateway: Running) -> None:
    flood = masked_frame(TEXT, b"", fin=False) + masked_frame(CONT, b"", fin=False) * (100_001)
    before = rss_bytes()
    with trio.fail_after(TIMEOUT):
        async with raw_websocket(gateway, "/echo") as client:
            started = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_ignoring_reset, client, flood)
                frames, code, reason = await frames_until_close(client)
            elapsed = trio.current_time() - started
            assert frames == []  # no message was ever completed
            assert (code, reason) == (1008, "too many fragments")
            assert await client.read_until_eof() == b""
            assert elapsed < 2.0, elapsed
    assert rss_bytes() - before < RSS_SLACK


# --------------------------------------------------------------------------- keepalive


async def test_unanswered_ping_closes_1011_and_unregisters(
    start_gateway: GatewayFactory,
) -> None:
    changes = {"plugins.echo.ping_interval": 0.5, "plugins.echo.ping_timeout": 0.5}
    async with start_gateway(changes) as gw:
        echo = gw.app.mounts["echo"].mount
        with trio.fail_after(TIMEOUT):
            async with raw_websocket(gw, "/echo") as client:
                opened = trio.current_time()
                await wait_until(lambda: len(echo) == 1, "the client registered")
                (server_ws,) = echo.clients
                opcode, _fin, payload = await client.read_frame()
                pinged = trio.current_time()
                assert opcode == PING
                assert len(payload) == 4
                assert 0.3 < pinged - opened < 1.5
                # We never answer.  ping_timeout later: Close 1011, then TCP closes.
                opcode, _fin, payload = await client.read_frame()
                assert opcode == CLOSE
                assert close_payload(payload) == (1011, "keepalive ping timeout")
                assert trio.current_time() - pinged < 1.5
                assert await client.read_until_eof() == b""
                assert trio.current_time() - pinged < 3.0
                await wait_until(lambda: server_ws not in echo.clients, "the client forgotten")
                assert len(echo) == 0


async def test_answered_pings_keep_the_connection_open(start_gateway: GatewayFactory) -> None:
    changes = {"plugins.echo.ping_interval": 0.2, "plugins.echo.ping_timeout": 0.3}
    async with start_gateway(changes) as gw:
        with trio.fail_after(TIMEOUT):
            async with ws_client(gw, "/echo") as ws:  # trio-websocket answers every ping
                await trio.sleep(1.2)  # several ping intervals and timeouts
                await ws.send_message("alive")
                assert await ws.get_message() == "alive"
                assert ws.closed is None


# --------------------------------------------------------------------------- frame rate


async def test_frame_burst_over_the_rate_is_1008(start_gateway: GatewayFactory) -> None:
    async with start_gateway({"plugins.echo.max_frame_rate": 50}) as gw:
        burst = 50 * 5  # five seconds' worth
        with trio.fail_after(TIMEOUT):
            async with raw_websocket(gw, "/echo") as within:
                await within.send(masked_frame(TEXT, b"m") * (burst - 10))
                frames = [await within.read_frame() for _ in range(burst - 10)]
                assert frames == [(TEXT, True, b"m")] * (burst - 10)
            async with raw_websocket(gw, "/echo") as flooder:
                flood = masked_frame(TEXT, b"m") * (burst + 50)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(send_ignoring_reset, flooder, flood)
                    echoed, code, reason = await frames_until_close(flooder)
                assert (code, reason) == (1008, "too many frames")
                # The frames before the one over the limit were parsed and queued; the handler
                # had echoed all but the last few (a local close drops the inbound queue).
                inbound_queue = gw.app.mounts["echo"].mount.settings.inbound_queue
                assert burst - inbound_queue - 1 <= len(echoed) <= burst
                assert set(echoed) == {(TEXT, b"m")}


# --------------------------------------------------------------------------- slow consumer

CHAT_MESSAGE_CHARS = 8192
MIN_CHAT_MESSAGES = 500
LOCKSTEP_WINDOW = 4  # messages the sender may be ahead of its own copy (32 KiB: half a queue)


async def collect_chat(
    ws: trio_websocket.WebSocketConnection,
    numbers: list[int],
    leaves: list[str],
    arrived: trio.lowlevel.ParkingLot,
) -> None:
    """Record the sequence numbers of chat messages (not the 8 KiB texts: memory must stay
    flat) and who left; wake ``arrived`` on each message; runs until cancelled."""
    while True:
        message = await ws.get_message()
        assert isinstance(message, str)
        event = json.loads(message)
        if event["type"] == "message":
            numbers.append(int(event["text"][:6]))
            arrived.unpark_all()
        elif event["type"] == "leave":
            leaves.append(event["user"])


async def test_slow_consumer_dropped_busy_room_unaffected(start_gateway: GatewayFactory) -> None:
    changes = {
        "plugins.chat.outbound_queue_bytes": 64 * 1024,
        "plugins.chat.options.max_message_chars": CHAT_MESSAGE_CHARS + 100,
    }
    with trio.fail_after(30):
        async with start_gateway(changes) as gw, AsyncExitStack() as stack:
            chat = gw.app.mounts["chat"].mount
            fast = [await stack.enter_async_context(ws_client(gw, "/chat/busy")) for _ in range(5)]
            slow = await stack.enter_async_context(raw_connection(gw))
            await handshake(slow, "/chat/busy")  # and from now on never read
            await wait_until(lambda: len(chat.group("busy")) == 6, "six members")
            slow_ws = server_side(gw, "chat", slow.stream.socket.getsockname()[1])
            room = chat.group("busy")

            sent = 0
            numbers: list[list[int]] = [[] for _ in fast]
            leaves: list[list[str]] = [[] for _ in fast]
            own = numbers[0]
            peak = baseline = rss_bytes()
            async with trio.open_nursery() as nursery:
                arrived = trio.lowlevel.ParkingLot()
                for ws, got, heard in zip(fast, numbers, leaves, strict=True):
                    nursery.start_soon(collect_chat, ws, got, heard, arrived)
                # How much the kernel buffers toward the slow client hold depends on the
                # kernel (here: a few hundred KiB), so send until it is dropped, then as much
                # again (500 in all at least); nearly in lockstep with the sender's own copy,
                # so the fast readers are never far behind (they have the same small queue).
                after_drop = None
                while after_drop is None or sent < after_drop:
                    text = f"{sent:06d}" + "x" * (CHAT_MESSAGE_CHARS - 6)
                    sent += 1
                    await fast[0].send_message(text)
                    while len(own) < sent - LOCKSTEP_WINDOW:
                        await arrived.park()
                    peak = max(peak, rss_bytes())
                    if after_drop is None and slow_ws.closed is not None:
                        after_drop = max(2 * sent, MIN_CHAT_MESSAGES)
                    assert sent < 2000, "the slow client was never dropped"
                await wait_until(lambda: all(len(n) >= sent for n in numbers), "every copy")
                # The slow member's handler was reading its socket when the overflow came, so
                # it leaves once the 1013 close is written or, here, the grace runs out.
                await wait_until(lambda: all(leaves), "the leave")
                nursery.cancel_scope.cancel()
            assert slow_ws.closed is not None
            assert (slow_ws.closed.code, slow_ws.closed.reason) == (1013, "slow consumer")
            await wait_until(lambda: slow_ws not in room and len(room) == 5, "slow one left")
            await wait_until(lambda: slow_ws not in chat.clients, "slow one unregistered")
            for got in numbers:
                assert got == list(range(sent))  # every message, in order, to everyone
            assert len(chat.clients) == 5
            assert peak - baseline < RSS_SLACK, (baseline, peak)
            # Everyone else heard exactly one leave: the slow client's.
            assert all(len(heard) == 1 for heard in leaves), leaves
            assert len({heard[0] for heard in leaves}) == 1


# --------------------------------------------------------------------------- backpressure

TAP = {
    "plugins.tap.path": "/tap",
    "plugins.tap.use": "tests.integration.limit_plugins:Tap",
    "plugins.tap.inbound_queue": 2,
}


async def test_inbound_backpressure_stops_reading(start_gateway: GatewayFactory) -> None:
    from tests.integration.limit_plugins import Tap

    chunk = masked_frame(BINARY, b"\xab" * 65536)
    attempt = 512  # 32 MiB
    async with start_gateway(TAP) as gw:
        tap = gw.app.mounts["tap"].plugin.instance
        assert isinstance(tap, Tap)
        with trio.fail_after(30):
            async with raw_websocket(gw, "/tap") as client:
                await wait_until(lambda: tap.parked == 1, "the handler waits for the tap")
                baseline = rss_bytes()
                progress = [0]
                finished = trio.Event()

                async def flood() -> None:
                    for _ in range(attempt):
                        await client.send(chunk)
                        progress[0] += 1
                    finished.set()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(flood)
                    # Wait until the sender makes no progress for half a second.
                    last = -1
                    while progress[0] != last:
                        last = progress[0]
                        await trio.sleep(0.5)
                    blocked_at = progress[0]
                    assert not finished.is_set()
                    # The kernel buffers hold a few MiB; the gateway itself holds only its
                    # small queue: it stopped reading rather than buffer 32 MiB.
                    assert blocked_at * len(chunk) < 12 * MiB, blocked_at
                    assert rss_bytes() - baseline < RSS_SLACK
                    tap.opened.set()  # the handler reads again: the rest flows
                    await finished.wait()
                await client.send(masked_frame(TEXT, b"total?"))
                opcode, _fin, payload = await client.read_frame()
                assert (opcode, payload) == (TEXT, str(attempt * 65536).encode())

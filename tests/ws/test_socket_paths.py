"""The engine's direct socket paths (``os.read``/``os.write`` on the descriptor, trio's
``send_all`` only for what the kernel did not take), over a real socket pair with small
kernel buffers so that writes are partial and reads come in pieces."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed
from wsproto.events import BytesMessage, Ping, Pong, TextMessage

from gateway.ws.connection import Limits, WebSocketConnection
from tests.ws.peer import Peer, masked_frame

Handler = Callable[[WebSocketConnection], Awaitable[None]]
BUFFER = 4096  # bytes of kernel buffer each way: every large write is partial
DEFAULT = Limits(max_message_size=4 * 1024 * 1024)


@asynccontextmanager
async def over_a_socket(
    handler: Handler, limits: Limits = DEFAULT
) -> AsyncIterator[tuple[WebSocketConnection, Peer]]:
    a, b = trio.socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
    ws = WebSocketConnection(trio.SocketStream(a), path="/t", limits=limits)

    async def handle() -> None:
        await handler(ws)

    client = trio.SocketStream(b)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.serve, handle)
            yield ws, Peer(client)
            nursery.cancel_scope.cancel()
    finally:
        await client.aclose()


async def echo(ws: WebSocketConnection) -> None:
    while True:
        await ws.send_message(await ws.get_message())


async def slow_message(peer: Peer) -> str | bytes:
    """The next message, read in small pieces with pauses (the server's writes stall)."""
    await trio.sleep(0.05)
    return await peer.message()


async def test_a_large_message_survives_partial_writes_both_ways() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    async with over_a_socket(echo) as (_, peer):
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer.send, BytesMessage(payload))
                assert await slow_message(peer) == payload


async def test_replies_corked_behind_a_partial_write_keep_their_order() -> None:
    count, size = 40, 20_000
    async with over_a_socket(echo) as (_, peer):
        burst = b"".join(
            masked_frame(0x2, i.to_bytes(2, "big") * (size // 2)) for i in range(count)
        )
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer.raw, burst)
                for i in range(count):
                    assert await peer.message() == i.to_bytes(2, "big") * (size // 2)


async def test_send_nowait_past_the_kernel_buffer_goes_out_in_order() -> None:
    count = 2000  # 2 MB: far more than the kernel takes before the peer reads
    queued: list[int] = []

    async def broadcast(ws: WebSocketConnection) -> None:
        for i in range(count):
            assert ws.send_nowait(f"{i:04d}" + "x" * 1000)
        queued.append(ws.outbound_bytes)  # behind a partial write, left for the writer task
        await trio.sleep_forever()

    async with over_a_socket(broadcast, Limits(outbound_queue_bytes=4_000_000)) as (ws, peer):
        with trio.fail_after(20):
            for i in range(count):
                assert await peer.message() == f"{i:04d}" + "x" * 1000
            assert queued[0] > 1_000_000
            assert ws.outbound_bytes == 0


async def test_pongs_wait_for_a_message_frame_being_written() -> None:
    payload = b"m" * 300_000

    async def send_big(ws: WebSocketConnection) -> None:
        await ws.send_message(payload)
        await echo(ws)

    async with over_a_socket(send_big) as (_, peer):
        with trio.fail_after(20):
            await trio.sleep(0.1)  # the big frame is half written, the writer waits
            await peer.send(Ping(b"p1"))
            await peer.send(Ping(b"p2"))
            assert await peer.message() == payload  # whole: no pong inside it
            for expected in (b"p1", b"p2"):
                event = await peer.next_event()
                assert isinstance(event, Pong) and bytes(event.payload) == expected
            await peer.send(TextMessage("after"))
            assert await peer.message() == "after"


async def test_a_peer_that_goes_away_during_a_stalled_send_ends_it_cleanly() -> None:
    failed = trio.Event()

    async def stalled(ws: WebSocketConnection) -> None:
        with pytest.raises(ConnectionClosed):
            await ws.send_message(b"z" * 2_000_000)  # the peer never reads it
        failed.set()

    async with over_a_socket(stalled) as (ws, peer):
        with trio.fail_after(10):
            await trio.sleep(0.1)
            await peer.stream.aclose()  # the peer goes away mid-write
            await failed.wait()
            assert ws.closed is not None
            assert ws.closed.code == 1006

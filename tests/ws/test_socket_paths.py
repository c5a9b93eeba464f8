"""The engine's direct socket paths (``os.read``/``os.write`` on the descriptor, trio's
``send_all`` only for what the kernel did not take), over a real socket pair with small
kernel buffers so that writes are partial and reads come in pieces."""

from __future__ import annotations

import contextlib
import functools
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed
from wsproto.events import BytesMessage, Ping, Pong, TextMessage

from gateway.ws import reading
from gateway.ws.connection import Limits, WebSocketConnection
from gateway.ws.readiness import AVAILABLE as OWN_WATCH
from gateway.ws.readiness import readiness
from tests.support.tasks import WRITER, helper_tasks
from tests.support.ws_frames import masked_frame
from tests.support.ws_peer import Peer

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


async def test_large_frames_read_in_place_and_written_unjoined_keep_their_order() -> None:
    # Large binary frames are read into the parser's buffer and sent as header + payload
    # (os.readv / os.writev); small frames around them, in the same writes, keep their place.
    big = [bytes([i]) * (300_000 + i) for i in range(3)]
    burst = masked_frame(0x1, b"first") + b"".join(
        masked_frame(0x2, payload) + masked_frame(0x1, b"%d" % i) for i, payload in enumerate(big)
    )
    async with over_a_socket(echo) as (_, peer):
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer.raw, burst)
                assert await slow_message(peer) == "first"
                for i, payload in enumerate(big):
                    assert await peer.message() == payload
                    assert await peer.message() == str(i)


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


# -- what a review of the one-task engine found (each failed before its fix) ----------------


async def read_raw(peer: Peer, seconds: float) -> bytes:
    """Every byte the server sends within ``seconds`` (or until it closes)."""
    raw = bytearray()
    with trio.move_on_after(seconds):
        while data := await peer.stream.receive_some(65536):
            raw += data
    return bytes(raw)


def first_frame_length(raw: bytes) -> int:
    assert raw[1] & 0x7F == 127, raw[:2]  # the 64-bit length form in these tests
    return int.from_bytes(raw[2:10], "big")


async def test_a_send_cancelled_mid_write_still_sends_its_frame_whole() -> None:
    cancelled: list[bool] = []

    async def impatient(ws: WebSocketConnection) -> None:
        with trio.move_on_after(0.2) as scope:
            await ws.send_message(b"A" * 1_000_000)  # the peer does not read yet
        cancelled.append(scope.cancelled_caught)
        await ws.send_message("after")
        await trio.sleep_forever()

    async with over_a_socket(impatient) as (_, peer):
        with trio.fail_after(10):
            await trio.sleep(0.5)
            assert await peer.message() == b"A" * 1_000_000  # whole, not cut by "after"
            assert await peer.message() == "after"
            assert cancelled == [True]


async def test_a_slow_consumer_close_never_cuts_a_frame_already_started() -> None:
    async def broadcast(ws: WebSocketConnection) -> None:
        assert ws.send_nowait(b"A" * 100_000)  # partly written now, the rest queued
        assert not ws.send_nowait(b"B" * 200_000)  # over the limit: 1013
        await trio.sleep_forever()

    async with over_a_socket(broadcast, Limits(outbound_queue_bytes=250_000)) as (ws, peer):
        with trio.fail_after(10):
            await trio.sleep(0.1)
            assert await peer.message() == b"A" * 100_000
            event = await peer.close_event()
            assert (event.code, event.reason) == (1013, "slow consumer")
            assert ws.closed is not None and ws.closed.code == 1013


async def test_the_slow_consumer_limit_counts_bytes_being_written() -> None:
    accepted: list[int] = []
    limit, chunk = 100_000, b"x" * 10_000
    refused = trio.Event()

    async def broadcast(ws: WebSocketConnection) -> None:
        for _ in range(9):
            assert ws.send_nowait(chunk)
            accepted.append(len(chunk))
        await trio.sleep(0.05)  # the writer task took the batch; it is stuck in the kernel
        assert ws.outbound_bytes > 50_000  # still counted while in flight
        while ws.send_nowait(chunk):
            accepted.append(len(chunk))
        refused.set()
        await trio.sleep_forever()

    async with over_a_socket(broadcast, Limits(outbound_queue_bytes=limit)) as (ws, _):
        with trio.fail_after(10):
            await refused.wait()
        assert ws.closed is not None and ws.closed.code == 1013
    assert sum(accepted) <= limit + len(chunk)


async def test_a_send_waiting_for_frames_that_were_dropped_raises() -> None:
    outcome: list[str] = []

    async def sender(ws: WebSocketConnection) -> None:
        async def big() -> None:
            try:
                await ws.send_message(b"S" * 300_000)
                outcome.append("sent")
            except ConnectionClosed:
                outcome.append("closed")

        async with trio.open_nursery() as nursery:
            assert ws.send_nowait(b"A" * 50_000)  # starts the queue
            nursery.start_soon(big)
            await trio.sleep(0.05)
            ws.send_nowait(b"B" * 300_000)  # over the limit: the queue is dropped

    async with over_a_socket(sender, Limits(outbound_queue_bytes=200_000)) as (ws, peer):
        with trio.fail_after(10):
            await trio.sleep(0.2)
            await read_raw(peer, 1.5)
            assert outcome == ["closed"]
            assert ws.closed is not None and ws.closed.code == 1013


async def test_the_writer_task_ends_once_there_is_nothing_to_write() -> None:
    async def burst_then_idle(ws: WebSocketConnection) -> None:
        for i in range(200):
            ws.send_nowait(f"{i:04d}" + "x" * 1000)  # past the kernel buffer: the writer
        await echo(ws)

    # The writer ends at the first keepalive tick that finds it idle since the one before.
    limits = Limits(ping_interval=0.2, ping_timeout=10)
    async with over_a_socket(burst_then_idle, limits) as (_, peer):
        with trio.fail_after(10):
            for i in range(200):
                assert await peer.message() == f"{i:04d}" + "x" * 1000
            assert writer_tasks() != []
            for _ in range(3):  # answer the keepalive pings meanwhile
                event = await peer.next_event()
                assert isinstance(event, Ping)
                await peer.send(event.response())
            assert writer_tasks() == []


def writer_tasks() -> list[str]:
    return [name for name in helper_tasks() if name.endswith(WRITER)]


async def echo_until_closed(ws: WebSocketConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        await echo(ws)


async def test_invalid_utf8_fails_1007_before_the_message_ends() -> None:
    """RFC 6455 §8.1: a fragmented text message whose UTF-8 turns invalid fails as soon as
    the invalid bytes arrive, over a real socket, with the rest of the message never sent."""
    async with over_a_socket(echo_until_closed) as (_, peer):
        await peer.raw(masked_frame(0x1, "first fragment, valid: é".encode(), fin=False))
        with trio.move_on_after(0.1):
            event = await peer.next_event(timeout=1)
            raise AssertionError(f"nothing is wrong yet, got {event}")
        # The second fragment: its first bytes are invalid, and only they are sent.
        second = masked_frame(0x0, b"\xc3\x28 and much more" + b"x" * 10_000, fin=False)
        await peer.raw(second[:20])
        event = await peer.close_event()
        assert event.code == 1007
        assert await peer.read_to_eof() == b""


async def test_invalid_utf8_in_one_frame_arriving_in_pieces_fails_at_the_bad_piece() -> None:
    async with over_a_socket(echo_until_closed) as (_, peer):
        frame = masked_frame(0x1, b"abc" * 1000 + b"\xed\xa0\x80" + b"d" * 5000)  # a surrogate
        await peer.raw(frame[:2000])  # valid so far
        with trio.move_on_after(0.1):
            event = await peer.next_event(timeout=1)
            raise AssertionError(f"nothing is wrong yet, got {event}")
        await peer.raw(frame[2000:3020])  # now carries the surrogate, the frame is unfinished
        event = await peer.close_event()
        assert event.code == 1007


# -- the readiness watcher (gateway.ws.readiness): idle handlers park on one epoll set --------


@pytest.mark.skipif(not OWN_WATCH, reason="needs epoll")
async def test_idle_handlers_park_on_the_readiness_watcher_busy_ones_on_trio(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reading, "BUSY_WAIT", 0.1)
    async with over_a_socket(echo) as (_, peer):
        with trio.fail_after(10):
            await trio.testing.wait_all_tasks_blocked()
            assert len(readiness()) == 1  # a new connection waits as an idle one
            await peer.send(TextMessage("a"))  # at once: its wait was short...
            assert await peer.message() == "a"
            await trio.testing.wait_all_tasks_blocked()
            assert len(readiness()) == 0  # ...so it waits in trio's wait_readable now
            await trio.sleep(0.2)  # a long wait: idle again
            await peer.send(TextMessage("b"))
            assert await peer.message() == "b"
            await trio.testing.wait_all_tasks_blocked()
            assert len(readiness()) == 1
    await trio.testing.wait_all_tasks_blocked()
    assert len(readiness()) == 0  # nothing left parked once the connection is gone


@pytest.mark.skipif(not OWN_WATCH, reason="needs epoll")
async def test_closing_the_stream_wakes_a_handler_parked_on_it() -> None:
    # A silent peer: close_nowait's Close is never answered, so after close_timeout the
    # connection drops the stream, which must wake the handler parked in get_message.
    ended: list[str] = []
    done = trio.Event()

    async def reader(ws: WebSocketConnection) -> None:
        try:
            await ws.get_message()
        except ConnectionClosed:
            ended.append("closed")
        done.set()

    async with over_a_socket(reader, Limits(close_timeout=0.3)) as (ws, peer):
        with trio.fail_after(10):
            await trio.testing.wait_all_tasks_blocked()
            assert len(readiness()) == 1
            ws.close_nowait(1001, "going away")
            assert (await peer.close_event()).code == 1001  # ...and never answered
            assert await peer.read_to_eof(timeout=5) == b""
            await done.wait()
    assert ended == ["closed"]
    assert len(readiness()) == 0


@pytest.mark.skipif(not OWN_WATCH, reason="needs epoll")
async def test_a_cancelled_wait_leaves_nothing_parked() -> None:
    a, b = trio.socket.socketpair()
    ws = WebSocketConnection(trio.SocketStream(a), path="/t")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws.serve, functools.partial(echo, ws))
        await trio.testing.wait_all_tasks_blocked()
        assert len(readiness()) == 1
        nursery.cancel_scope.cancel()
    assert len(readiness()) == 0
    assert ws.closed is not None and ws.closed.code == 1006
    b.close()

"""The sending half of a connection (gateway/ws/outbound.py) over a real socket pair: frames
leave whole and in order whatever the kernel takes, the slow-consumer accounting, a dropped
queue, a cancelled write, a failed stream, the writer task's start, grace period and
retirement.  The owner (the WebSocket connection in the gateway) is a recorder here."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from gateway.ws.outbound import Outbound, OutboundClosed

BIG = 4 * 1024 * 1024  # far more than a socket pair's buffers hold


@dataclass
class Owner:
    """Records what the :class:`Outbound` tells its connection; runs its helper tasks."""

    nursery: trio.Nursery
    lost: int = 0
    aborted: int = 0
    spawned: list[str] = field(default_factory=list)
    abort_seen: trio.Event = field(default_factory=trio.Event)

    def _write_lost(self) -> None:
        self.lost += 1

    async def _abort(self) -> None:
        self.aborted += 1
        self.abort_seen.set()

    def _spawn(self, task: Callable[[], Awaitable[None]]) -> None:
        self.spawned.append(getattr(task, "__name__", repr(task)))
        self.nursery.start_soon(task)


@dataclass
class Pair:
    out: Outbound
    owner: Owner
    peer: trio.SocketStream  # the client's end: what it reads is what went out


@pytest.fixture
async def pair(nursery: trio.Nursery) -> AsyncIterator[Pair]:
    ours, theirs = trio.socket.socketpair()
    # Small buffers, so a few hundred KiB fill the pipe and writes become partial.
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    stream, peer = trio.SocketStream(ours), trio.SocketStream(theirs)
    owner = Owner(nursery)
    out = Outbound(stream, owner=owner)
    try:
        yield Pair(out, owner, peer)
    finally:
        out.closed = True
        out.stop()
        await stream.aclose()
        await peer.aclose()


async def read_exactly(stream: trio.SocketStream, n: int) -> bytes:
    data = bytearray()
    with trio.fail_after(10):
        while len(data) < n:
            chunk = await stream.receive_some(min(65536, n - len(data)))
            assert chunk, f"EOF after {len(data)} of {n} bytes"
            data += chunk
    return bytes(data)


async def nothing_more(stream: trio.SocketStream) -> None:
    """Nothing else arrives (checked after everything sent has been read)."""
    with trio.move_on_after(0.05):
        extra = await stream.receive_some(65536)
        raise AssertionError(f"unexpected bytes: {extra[:40]!r}")


def pattern(n: int, seed: int) -> bytes:
    """``n`` bytes that differ from any other seed's, so a reordering or a cut shows."""
    return (bytes([seed]) + os.urandom(15)) * (n // 16) + bytes([seed]) * (n % 16)


async def test_a_frame_on_an_idle_socket_goes_out_at_once(pair: Pair) -> None:
    assert pair.out.send(b"\x81\x02hi") is True
    assert pair.out.frames == []
    assert pair.owner.spawned == []  # no writer task for a frame the kernel took
    assert await read_exactly(pair.peer, 4) == b"\x81\x02hi"


async def test_what_the_kernel_did_not_take_is_queued_and_flushed_whole_in_order(
    pair: Pair,
) -> None:
    first, second, third = pattern(BIG, 1), pattern(1000, 2), pattern(300_000, 3)
    assert pair.out.send(first, buffered=True) is False  # the kernel took only a part
    queued = sum(len(f) for f in pair.out.frames)
    assert 0 < queued < len(first)
    assert pair.out.buffered == queued  # what is left counts towards the slow-consumer limit
    # Once something is queued, nothing may jump the queue by a direct write.
    assert pair.out.send(second) is False
    assert pair.out.send_parts(third[:10], third[10:]) is False
    assert pair.out.buffered == queued  # the other two were not "buffered" sends

    async with trio.open_nursery() as nursery:
        received: list[bytes] = []

        async def read() -> None:
            received.append(await read_exactly(pair.peer, len(first + second + third)))

        nursery.start_soon(read)
        with trio.fail_after(10):
            await pair.out.flush()
    assert received == [first + second + third]
    assert (pair.out.frames, pair.out.buffered) == ([], 0)
    await nothing_more(pair.peer)


async def test_nothing_overtakes_a_queued_frame_even_with_room_in_the_socket(pair: Pair) -> None:
    pair.out.queue(b"first ")  # queued by someone who must not wait; the writer has not run
    assert pair.out.send(b"second ") is False
    assert pair.out.send_parts(b"th", b"ird") is False
    await pair.out.flush()
    assert await read_exactly(pair.peer, 18) == b"first second third"


async def test_send_parts_queues_a_view_of_the_payload_not_a_copy(pair: Pair) -> None:
    header, payload = b"\x82\x7f" + (BIG).to_bytes(8, "big"), pattern(BIG, 7)
    assert pair.out.send_parts(header, payload) is False
    (rest,) = pair.out.frames
    assert isinstance(rest, memoryview)
    assert rest.obj is payload  # the unwritten rest of the payload, not joined into a copy
    async with trio.open_nursery() as nursery:
        got: list[bytes] = []

        async def read() -> None:
            got.append(await read_exactly(pair.peer, len(header) + len(payload)))

        nursery.start_soon(read)
        await pair.out.flush()
    assert got == [header + payload]


async def test_concurrent_flushes_never_interleave_frames(pair: Pair) -> None:
    frames = [pattern(200_000 + i, i) for i in range(1, 6)]

    async def send_and_flush(frame: bytes) -> None:
        pair.out.queue(frame)
        await pair.out.flush()

    async with trio.open_nursery() as nursery:
        got: list[bytes] = []

        async def read() -> None:
            got.append(await read_exactly(pair.peer, sum(map(len, frames))))

        nursery.start_soon(read)
        with trio.fail_after(10):
            async with trio.open_nursery() as senders:
                for frame in frames:
                    senders.start_soon(send_and_flush, frame)
                    await trio.testing.wait_all_tasks_blocked()  # queued in this order
    assert got == [b"".join(frames)]


async def test_drop_keeps_the_rest_of_a_started_frame(pair: Pair) -> None:
    started, waiting = pattern(BIG, 1), pattern(5000, 2)
    assert pair.out.send(started, buffered=True) is False  # partly out: must finish whole
    pair.out.queue(waiting, buffered=True)
    rest = len(pair.out.frames[0])
    pair.out.drop()  # a slow consumer is being closed
    assert [len(f) for f in pair.out.frames] == [rest]
    assert pair.out.buffered == rest
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pair.out.flush)
        got = await read_exactly(pair.peer, len(started))
    assert got == started  # the started frame went out whole, and nothing of the dropped one
    await nothing_more(pair.peer)


async def test_a_flush_waiting_for_a_dropped_frame_fails(pair: Pair) -> None:
    first, second = pattern(BIG, 1), pattern(5000, 2)
    outcomes: dict[str, str] = {}

    async def flush(name: str, frame: bytes) -> None:
        pair.out.queue(frame, buffered=True)
        try:
            await pair.out.flush()
        except OutboundClosed:
            outcomes[name] = "failed"
        else:
            outcomes[name] = "written"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(flush, "first", first)
        await trio.testing.wait_all_tasks_blocked()  # the writer, stuck: the peer reads nothing
        nursery.start_soon(flush, "second", second)
        await trio.testing.wait_all_tasks_blocked()  # waiting for the writer to cover it
        pair.out.drop()
        await trio.testing.wait_all_tasks_blocked()
        assert outcomes == {"second": "failed"}  # at once, not when the writer is done
        got = await read_exactly(pair.peer, len(first))
    assert got == first  # what was being written finishes whole; the dropped frame never goes
    await nothing_more(pair.peer)


async def test_drop_of_an_unstarted_queue_forgets_everything(pair: Pair) -> None:
    pair.out.queue(b"one", buffered=True)
    pair.out.queue(b"two", buffered=True)
    pair.out.drop()
    assert (pair.out.frames, pair.out.buffered) == ([], 0)
    assert pair.out.send(b"three") is True  # the queue is empty: direct again
    assert await read_exactly(pair.peer, 5) == b"three"
    await nothing_more(pair.peer)


async def test_a_cancelled_write_puts_the_rest_back_first_in_line(pair: Pair) -> None:
    frame, after = pattern(BIG, 1), pattern(1000, 2)
    pair.out.queue(frame)
    with trio.move_on_after(0.01):
        await pair.out.flush()  # the peer reads nothing: the write is stuck part way
    assert not pair.out.writing
    rest = pair.out.frames[0]
    assert 0 < len(rest) < len(frame)
    assert bytes(rest) == frame[-len(rest) :]  # exactly the unwritten end, first in line
    assert pair.owner.spawned == []  # not serving yet: the writer is wanted, not started
    pair.out.queue(after)
    pair.out.serving = True
    pair.out.start_if_wanted()  # the writer task finishes what was cut
    assert pair.owner.spawned == ["_writer"]
    got = await read_exactly(pair.peer, len(frame) + len(after))
    assert got == frame + after  # never cut, never overtaken


async def test_a_peer_that_is_gone_fails_the_flush_and_tells_the_owner(pair: Pair) -> None:
    await pair.peer.aclose()
    pair.out.queue(pattern(BIG, 1))
    with pytest.raises(OutboundClosed), trio.fail_after(5):
        await pair.out.flush()
    assert pair.owner.lost == 1
    assert not pair.out.writing


async def test_other_streams_are_written_with_send_all(nursery: trio.Nursery) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    owner = Owner(nursery)
    out = Outbound(ours, owner=owner)
    assert out.send(b"queued") is False  # no socket to write to directly
    assert out.send_parts(b"he", b"ad") is False
    await out.flush()
    assert await theirs.receive_some() == b"queuedhead"


async def test_a_cancelled_send_all_loses_the_connection(nursery: trio.Nursery) -> None:
    ours, _theirs = trio.testing.lockstep_stream_pair()  # send_all waits for a reader
    owner = Owner(nursery)
    out = Outbound(ours, owner=owner)
    out.queue(b"never read")
    with trio.move_on_after(0.01):
        await out.flush()
    # A TLS stream cut mid-record cannot be resumed: the connection is lost, not retried.
    assert out.closed
    assert owner.lost == 1


async def test_the_writer_task_starts_on_need_and_retires_when_idle(
    pair: Pair, autojump_clock: trio.testing.MockClock
) -> None:
    pair.out.serving = True
    pair.out.queue(b"broadcast")
    pair.out.wake()
    assert pair.owner.spawned == ["_writer"]
    assert await read_exactly(pair.peer, 9) == b"broadcast"
    pair.out.retire_if_idle()  # it wrote since the last look: it stays
    await trio.testing.wait_all_tasks_blocked()
    assert pair.out.scope is not None
    pair.out.retire_if_idle()  # nothing written since: it ends
    await trio.testing.wait_all_tasks_blocked()
    assert pair.out.scope is None
    # A later frame starts a new one.
    pair.out.queue(b"again")
    pair.out.wake()
    assert pair.owner.spawned == ["_writer", "_writer"]
    assert await read_exactly(pair.peer, 5) == b"again"


async def test_abort_after_drops_a_stuck_write_once_the_grace_is_over(
    pair: Pair, autojump_clock: trio.testing.MockClock
) -> None:
    pair.out.serving = True
    pair.out.queue(pattern(BIG, 1))
    pair.out.wake()
    await trio.testing.wait_all_tasks_blocked()  # the writer is stuck: the peer never reads
    started = trio.current_time()
    pair.out.abort_after(5.0)
    pair.out.retire_if_idle()  # an abort pending: it must not retire instead
    pair.out.retire_if_idle()
    with trio.fail_after(60):
        await pair.owner.abort_seen.wait()
    assert 5.0 <= trio.current_time() - started < 6.0
    assert pair.owner.aborted == 1


async def test_a_shorter_grace_wins_a_longer_one_does_not_extend(
    pair: Pair, autojump_clock: trio.testing.MockClock
) -> None:
    pair.out.serving = True
    pair.out.queue(pattern(BIG, 1))
    pair.out.wake()
    await trio.testing.wait_all_tasks_blocked()
    started = trio.current_time()
    pair.out.abort_after(10.0)
    pair.out.abort_after(2.0)
    pair.out.abort_after(30.0)
    with trio.fail_after(60):
        await pair.owner.abort_seen.wait()
    assert 2.0 <= trio.current_time() - started < 3.0

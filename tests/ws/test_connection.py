"""The WebSocket engine over trio memory streams, against an independent wsproto peer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.lowlevel
import trio.testing
from trio_websocket import ConnectionClosed
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from gateway.ws import frames
from gateway.ws.connection import Limits, WebSocketConnection
from tests.support.ws_frames import frame_bytes, masked_frame
from tests.support.ws_peer import Peer

DEFAULT_LIMITS = Limits()


@asynccontextmanager
async def connected(
    limits: Limits = DEFAULT_LIMITS, trailing: bytes = b"", lockstep: bool = False
) -> AsyncIterator[tuple[WebSocketConnection, Peer]]:
    client: trio.abc.Stream
    server: trio.abc.Stream
    if lockstep:
        client, server = trio.testing.lockstep_stream_pair()
    else:
        client, server = trio.testing.memory_stream_pair()
    ws = WebSocketConnection(server, path="/t", limits=limits, trailing_data=trailing)
    async with trio.open_nursery() as nursery:
        await nursery.start(ws.serve, None)
        yield ws, Peer(client)
        nursery.cancel_scope.cancel()


async def test_text_and_binary_round_trip() -> None:
    async with connected() as (ws, peer):
        await peer.send(TextMessage("héllo"))
        await peer.send(BytesMessage(b"\x00\xff"))
        assert await ws.get_message() == "héllo"
        got = await ws.get_message()
        assert got == b"\x00\xff"
        assert type(got) is bytes
        await ws.send_message("ok ✓")
        await ws.send_message(b"\x01" * 70000)  # 64-bit length form
        assert await peer.message() == "ok ✓"
        assert await peer.message() == b"\x01" * 70000


async def test_fragmented_message_with_a_ping_in_between() -> None:
    async with connected() as (ws, peer):
        await peer.send(TextMessage("ab", message_finished=False))
        await peer.send(Ping(b"p1"))  # §5.4: control frames may be interleaved
        await peer.send(TextMessage("cd", message_finished=False))
        await peer.send(TextMessage("é", message_finished=True))
        assert await ws.get_message() == "abcdé"
        pong = await peer.next_event()
        assert isinstance(pong, Pong)
        assert pong.payload == b"p1"


async def test_trailing_data_from_the_handshake_is_not_lost() -> None:
    early = masked_frame(frames.OP_TEXT, b"first") + masked_frame(frames.OP_BINARY, b"second")
    async with connected(trailing=early) as (ws, _peer):
        assert await ws.get_message() == "first"
        assert await ws.get_message() == b"second"


async def test_peer_close_is_echoed_and_ends_get_message() -> None:
    async with connected() as (ws, peer):
        await peer.send(TextMessage("last words"))
        await peer.send(CloseConnection(4000, "bye"))
        event = await peer.close_event()
        assert (event.code, event.reason) == (4000, "bye")
        assert await peer.read_to_eof() == b""  # the server closes TCP after the handshake
        assert await ws.get_message() == "last words"  # queued messages still arrive
        with pytest.raises(ConnectionClosed) as info:
            await ws.get_message()
        assert info.value.reason is not None
        assert info.value.reason.code == 4000


async def test_local_aclose_runs_the_closing_handshake() -> None:
    async with connected() as (ws, peer):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.aclose, 4001, "done")
            event = await peer.close_event()
            assert (event.code, event.reason) == (4001, "done")
            await peer.send(event.response())
        assert ws.closed is not None
        assert ws.closed.code == 4001
        with pytest.raises(ConnectionClosed):
            await ws.send_message("too late")


async def test_aclose_gives_up_after_close_timeout(autojump_clock: trio.abc.Clock) -> None:
    async with connected(Limits(close_timeout=3.0)) as (ws, peer):
        start = trio.current_time()
        await ws.aclose()  # the peer never answers
        assert 3.0 <= trio.current_time() - start < 4.0
        event = await peer.close_event()
        assert event.code == 1000
        assert await peer.read_to_eof() == b""


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (masked_frame(frames.OP_TEXT, b"\xff\xfe"), 1007),  # invalid UTF-8
        (
            masked_frame(frames.OP_TEXT, "é".encode()[:1], fin=False)
            + masked_frame(frames.OP_CONT, b"x"),
            1007,
        ),  # invalid UTF-8 split across fragments
        (frame_bytes(frames.OP_TEXT, b"x"), 1002),  # unmasked client frame
        (masked_frame(frames.OP_TEXT, b"x", rsv=1), 1002),  # RSV1 without an extension
        (masked_frame(0x3, b"x"), 1002),  # reserved opcode
        (masked_frame(frames.OP_CONT, b"x"), 1002),  # continuation with nothing to continue
        (masked_frame(frames.OP_PING, b"x", fin=False), 1002),  # fragmented control frame
        (masked_frame(frames.OP_PING, b"x" * 126), 1002),  # control frame over 125 bytes
    ],
)
async def test_protocol_errors_fail_the_connection(wire: bytes, code: int) -> None:
    async with connected() as (ws, peer):
        await peer.raw(wire)
        event = await peer.close_event()
        assert event.code == code
        with pytest.raises(ConnectionClosed):
            await ws.get_message()


async def test_message_size_limit_counts_utf8_bytes() -> None:
    async with connected(Limits(max_message_size=1000)) as (ws, peer):
        await peer.send(TextMessage("é" * 500))  # 1000 bytes: exactly the limit
        assert await ws.get_message() == "é" * 500
        await peer.send(TextMessage("😀" * 251))  # 251 characters but 1004 bytes
        event = await peer.close_event()
        assert event.code == 1009


async def test_fragmented_message_over_the_limit_is_1009() -> None:
    async with connected(Limits(max_message_size=100)) as (_ws, peer):
        for _ in range(11):
            await peer.send(BytesMessage(b"x" * 10, message_finished=False))
        event = await peer.close_event()
        assert event.code == 1009


async def test_ping_waits_for_its_pong() -> None:
    async with connected() as (ws, peer):
        done = trio.Event()

        async def ping() -> None:
            await ws.ping(b"abc")
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ping)
            event = await peer.next_event()
            assert isinstance(event, Ping)
            assert event.payload == b"abc"
            await trio.testing.wait_all_tasks_blocked()
            assert not done.is_set()
            await peer.send(event.response())
        assert done.is_set()


async def test_duplicate_ping_payload_is_refused() -> None:
    async with connected() as (ws, peer), trio.open_nursery() as nursery:
        nursery.start_soon(ws.ping, b"same")
        await peer.next_event()
        with pytest.raises(ValueError, match="already in flight"):
            await ws.ping(b"same")
        await peer.send(Pong(b"same"))


async def test_a_cancelled_ping_frees_its_payload() -> None:
    async with connected() as (ws, peer):
        with trio.move_on_after(0.05) as scope:
            await ws.ping(b"once")
        assert scope.cancelled_caught
        assert isinstance(await peer.next_event(), Ping)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.ping, b"once")  # no ValueError: the payload is free
            event = await peer.next_event()
            assert isinstance(event, Ping) and event.payload == b"once"
            await peer.send(event.response())


async def test_ping_and_pong_payloads_are_control_frame_sized() -> None:
    async with connected() as (ws, _peer):
        with pytest.raises(ValueError, match="125 bytes"):
            await ws.ping(b"x" * 126)
        with pytest.raises(ValueError, match="125 bytes"):
            await ws.pong(b"x" * 126)
        assert ws.closed is None


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 2000, 5000])
async def test_close_codes_no_endpoint_may_send_are_refused(code: int) -> None:
    async with connected() as (ws, _peer):
        with pytest.raises(ValueError, match="may not be sent"):
            await ws.aclose(code)
        with pytest.raises(ValueError, match="may not be sent"):
            ws.close_nowait(code)
        assert ws.closed is None  # nothing was sent


async def test_async_with_runs_the_closing_handshake() -> None:
    async with connected() as (ws, peer):
        assert isinstance(ws, trio.abc.AsyncResource)
        async with trio.open_nursery() as nursery:

            async def answer() -> None:
                event = await peer.close_event()
                assert event.code == 1000
                await peer.send(event.response())

            nursery.start_soon(answer)
            async with ws as entered:
                assert entered is ws
        assert ws.closed is not None and ws.closed.code == 1000
        assert await peer.read_to_eof() == b""


async def test_pending_ping_raises_when_the_connection_closes() -> None:
    async with connected() as (ws, peer), trio.open_nursery() as nursery:

        async def ping() -> None:
            with pytest.raises(ConnectionClosed):
                await ws.ping(b"x")

        nursery.start_soon(ping)
        await peer.next_event()
        await peer.send(CloseConnection(1000))


async def test_send_nowait_frames_go_out_in_order() -> None:
    async with connected() as (ws, peer):
        for i in range(50):
            assert ws.send_nowait(f"m{i}")
        await ws.send_message("last")
        got = [await peer.message() for _ in range(51)]
        assert got == [f"m{i}" for i in range(50)] + ["last"]


async def test_slow_consumer_is_closed_with_1013_then_aborted(
    autojump_clock: trio.abc.Clock,
) -> None:
    # lockstep streams: a send blocks until the peer reads, like a full TCP window.
    async with connected(Limits(outbound_queue_bytes=1000), lockstep=True) as (ws, peer):
        frame = frames.Prepared(b"x" * 100)
        accepted = 0
        for _ in range(20):
            accepted += ws.send_nowait(frame)
            await trio.lowlevel.checkpoint()
        assert accepted < 20  # the queue overflowed
        assert ws.closed is not None
        assert ws.closed.code == 1013
        assert not ws.send_nowait(frame)
        # The peer never reads: after the 1 s grace the stream is aborted.
        await trio.sleep(1.5)
        with pytest.raises(ConnectionClosed):
            await ws.get_message()
        with pytest.raises(trio.BrokenResourceError):
            await peer.stream.send_all(b"x")  # the server side of the stream is gone


async def test_inbound_queue_pushes_back_on_the_peer() -> None:
    async with connected(Limits(inbound_queue=2), lockstep=True) as (ws, peer):
        # The reader queues 2 messages, then stops reading, so the peer's next send
        # (lockstep: completes only when read) blocks.
        for i in range(2):
            await peer.send(TextMessage(f"m{i}"))
        with trio.move_on_after(0.5) as scope:
            await peer.send(TextMessage("m2"))
        assert scope.cancelled_caught
        assert await ws.get_message() == "m0"


async def test_close_nowait_sends_queued_frames_first() -> None:
    async with connected() as (ws, peer):
        ws.send_nowait("before")
        ws.close_nowait(1001, "server shutting down")
        assert await peer.message() == "before"
        event = await peer.close_event()
        assert (event.code, event.reason) == (1001, "server shutting down")
        with pytest.raises(ConnectionClosed):
            await ws.get_message()


async def test_peer_vanishing_is_1006() -> None:
    async with connected() as (ws, peer):
        await peer.stream.aclose()
        with pytest.raises(ConnectionClosed) as info:
            await ws.get_message()
        assert info.value.reason is not None
        assert info.value.reason.code == 1006


def test_close_payload_cuts_long_reasons_on_a_character_boundary() -> None:
    payload = frames.close_payload(1000, "é" * 100)
    assert len(payload) <= 125
    payload[2:].decode("utf-8")  # still valid UTF-8


def test_message_frame_refuses_other_types() -> None:
    with pytest.raises(TypeError):
        frames.message_frame(123)  # type: ignore[arg-type]


async def test_keepalive_pings_and_a_live_peer_stays(autojump_clock: trio.abc.Clock) -> None:
    limits = Limits(ping_interval=20, ping_timeout=20)
    async with connected(limits) as (ws, peer):
        for _ in range(3):
            start = trio.current_time()
            event = await peer.next_event(timeout=30)
            assert isinstance(event, Ping)
            assert 19.9 <= trio.current_time() - start <= 20.1
            await peer.send(event.response())
        assert ws.closed is None


async def test_keepalive_closes_a_silent_peer_with_1011(autojump_clock: trio.abc.Clock) -> None:
    limits = Limits(ping_interval=20, ping_timeout=10, close_timeout=10)
    async with connected(limits) as (ws, peer):
        start = trio.current_time()
        event = await peer.next_event(timeout=30)
        assert isinstance(event, Ping)  # ...and the peer never answers
        with pytest.raises(ConnectionClosed) as info:
            await ws.get_message()
        assert info.value.reason is not None
        assert info.value.reason.code == 1011
        assert 29.9 <= trio.current_time() - start <= 31.5
        event = await peer.close_event()
        assert event.code == 1011
        assert await peer.read_to_eof(timeout=5) == b""


async def test_protocol_error_delivers_the_messages_before_it() -> None:
    async with connected() as (ws, peer):
        await peer.raw(
            masked_frame(frames.OP_TEXT, b"good") + masked_frame(frames.OP_TEXT, b"\xff")
        )
        assert await ws.get_message() == "good"
        event = await peer.close_event()
        assert event.code == 1007

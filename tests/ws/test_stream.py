"""gateway.ws.stream: trio's own stream conformance checks, then the adapter's contract.

Every pair is real: a WebSocketStream over the gateway's server-side connection (handed out by
``tests.ws.stream_plugins:hand_out``) and one over a trio-websocket client, in memory.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
import trio_websocket
from trio_websocket import CloseReason, ConnectionClosed
from wsproto.frame_protocol import CloseReason as WsCloseReason

from gateway.api import WebSocketConnection
from gateway.testing import TestGateway, serve
from gateway.ws.stream import WebSocketStream
from tests.ws import stream_plugins

Raw = tuple[WebSocketConnection, trio_websocket.WebSocketConnection]
UPPER = "tests.ws.stream_plugins:upper"


async def _client(
    gw: TestGateway,
    path: str,
    done: trio.Event,
    *,
    task_status: trio.TaskStatus[trio_websocket.WebSocketConnection] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with gw.connect(path) as client:
        task_status.started(client.ws)
        # Not cancelled: gw.connect closes the client with a handshake on the way out, and
        # that needs the client's reader task, which an outer cancellation would stop too.
        await done.wait()


@asynccontextmanager
async def raw_pairs() -> AsyncIterator[Callable[[], Awaitable[Raw]]]:
    """Yield ``make()``: a new (server-side, client) connection pair on a running gateway.

    The client lives in a background task (``gw.connect`` is a context manager with its own
    nursery) and the server-side handler sleeps, so both outlive ``make()`` until the end."""
    done = trio.Event()
    async with (
        serve("tests.ws.stream_plugins:hand_out", "/pair") as gw,
        trio.open_nursery() as nursery,
    ):

        async def make() -> Raw:
            token = secrets.token_hex(8)
            client: trio_websocket.WebSocketConnection = await nursery.start(
                _client, gw, f"/pair?token={token}", done
            )
            return await stream_plugins.claim(token), client

        try:
            yield make
        finally:
            done.set()


# -- trio's conformance checker ---------------------------------------------------------------


async def test_trio_two_way_stream_conformance() -> None:
    async with raw_pairs() as make:

        async def stream_maker() -> tuple[trio.abc.Stream, trio.abc.Stream]:
            server, client = await make()
            return WebSocketStream(server), WebSocketStream(client)

        # clogged_stream_maker=None: it must return a pair whose send_all (and
        # wait_send_all_might_not_block) block until the other side calls receive_some.  A
        # WebSocket cannot be put in that state: each side's reader task drains the transport
        # into a message queue whether or not the application reads (and the in-memory
        # transport of gateway.testing is unbounded), so a send completes without any
        # receive_some.  check_half_closeable_stream does not apply either: a WebSocket has no
        # half-close (after our Close frame the peer must stop sending too).  check_two_way_stream
        # runs check_one_way_stream in both directions, then a 1 MiB duplex transfer.
        await trio.testing.check_two_way_stream(stream_maker, None)


# -- the adapter's own contract -----------------------------------------------------------------


@pytest.mark.parametrize("to_server", [True, False], ids=["to-server", "to-client"])
async def test_chunked_receive_of_a_100_kib_message_reassembles(to_server: bool) -> None:
    payload = random.Random(7).randbytes(100 * 1024)
    async with raw_pairs() as make:
        server, client = await make()
        sender, receiver = WebSocketStream(client), WebSocketStream(server)
        if not to_server:
            sender, receiver = receiver, sender
        await sender.send_all(payload)
        await sender.send_all(b"next")
        chunks: list[bytes] = []
        while sum(map(len, chunks)) < len(payload):
            chunk = await receiver.receive_some(1000)
            assert 0 < len(chunk) <= 1000
            chunks.append(chunk)
        assert b"".join(chunks) == payload
        assert len(chunks) == 103  # 102 full chunks, then the 400-byte rest of the message
        assert await receiver.receive_some(1000) == b"next"  # a chunk never spans two messages


async def test_message_boundaries_empty_messages_and_empty_sends() -> None:
    async with raw_pairs() as make:
        server, client = await make()
        stream = WebSocketStream(client)
        await server.send_message(b"")  # an empty message is not end-of-file
        await server.send_message(b"abc")
        await server.send_message(b"defg")
        assert await stream.receive_some() == b"abc"
        assert await stream.receive_some(2) == b"de"
        assert await stream.receive_some() == b"fg"
        await stream.send_all(b"")  # sends nothing
        await stream.send_all(memoryview(b"xyz"))
        await stream.send_all(bytearray(b"!"))
        assert await server.get_message() == b"xyz"
        assert await server.get_message() == b"!"


async def test_line_protocol_plugin_end_to_end() -> None:
    async with serve(UPPER, "/upper") as gw, gw.connect("/upper") as client:
        stream = WebSocketStream(client.ws)
        await stream.send_all(b"hello\nwor")
        await stream.send_all(b"ld\nlast")
        await stream.send_all(b"\n")
        got = b""
        with trio.fail_after(5):
            while got.count(b"\n") < 3:
                got += await stream.receive_some()
        assert got == b"HELLO\nWORLD\nLAST\n"
        await stream.aclose()
        assert client.closed is not None
        assert client.closed.code == 1000


async def test_text_message_is_rejected_with_1003_by_default() -> None:
    async with serve(UPPER, "/upper") as gw, gw.connect("/upper") as client:
        await client.send_message("hello\n")
        closed = await client.wait_closed()
        assert (closed.code, closed.reason) == (1003, "unsupported data")


async def test_text_message_is_encoded_with_text_accept() -> None:
    async with serve(UPPER, "/upper") as gw, gw.connect("/upper?text=accept") as client:
        stream = WebSocketStream(client.ws)
        await client.send_message("héllo\n")
        with trio.fail_after(5):
            assert await stream.receive_some() == "HéLLO\n".encode()  # bytes.upper(): ASCII


async def test_client_side_stream_rejects_text_and_the_server_sees_1003() -> None:
    async with raw_pairs() as make:
        server, client = await make()
        stream = WebSocketStream(client)
        await server.send_message("not bytes")
        with pytest.raises(trio.BrokenResourceError):
            await stream.receive_some()
        with pytest.raises(ConnectionClosed) as info:
            await server.get_message()
        assert info.value.reason is not None
        assert info.value.reason.code == 1003
        with pytest.raises(trio.BrokenResourceError):  # stays broken
            await stream.receive_some()
        with pytest.raises(trio.BrokenResourceError):
            await stream.send_all(b"x")


@pytest.mark.parametrize(
    "code", [1000, 1001, WsCloseReason.NO_STATUS_RCVD], ids=["1000", "1001", "1005"]
)
async def test_normal_close_by_the_peer_is_eof(code: int) -> None:
    async with raw_pairs() as make:
        server, client = await make()
        stream = WebSocketStream(server)
        await client.send_message(b"last")
        await client.aclose(code)
        assert await stream.receive_some() == b"last"  # sent before the close: delivered
        for _ in range(3):
            with trio.testing.assert_checkpoints():
                assert await stream.receive_some(10) == b""
        with pytest.raises(trio.BrokenResourceError):
            await stream.send_all(b"x")
        await stream.aclose()


async def test_server_stream_aclose_is_eof_for_the_client_stream() -> None:
    async with raw_pairs() as make:
        server, client = await make()
        server_stream, client_stream = WebSocketStream(server), WebSocketStream(client)
        await server_stream.send_all(b"bye")
        await server_stream.aclose()
        assert server.closed is not None
        assert server.closed.code == 1000
        assert await client_stream.receive_some() == b"bye"
        assert await client_stream.receive_some() == b""


async def test_abort_without_close_handshake_is_broken() -> None:
    async with raw_pairs() as make:
        server, client = await make()
        stream = WebSocketStream(server)
        await client._stream.aclose()  # the client vanishes: no Close frame (1006)
        with pytest.raises(trio.BrokenResourceError, match="1006"):
            await stream.receive_some()
        with pytest.raises(trio.BrokenResourceError):
            await stream.receive_some()
        with pytest.raises(trio.BrokenResourceError):
            await stream.send_all(b"x")


async def test_error_close_by_the_peer_is_broken() -> None:
    async with raw_pairs() as make:
        server, client = await make()
        stream = WebSocketStream(client)
        await server.aclose(1011, "internal error")
        with pytest.raises(trio.BrokenResourceError, match="1011"):
            await stream.receive_some()


@pytest.mark.parametrize("side", ["server", "client"])
async def test_every_method_raises_closed_after_aclose(side: str) -> None:
    async with raw_pairs() as make:
        server, client = await make()
        stream = WebSocketStream(server if side == "server" else client)
        await (client if side == "server" else server).send_message(b"unread")
        await trio.testing.wait_all_tasks_blocked()
        await stream.aclose()
        with trio.testing.assert_checkpoints():
            await stream.aclose()  # idempotent, and still a checkpoint
        for data in (b"x", b""):
            with pytest.raises(trio.ClosedResourceError):
                await stream.send_all(data)
        with pytest.raises(trio.ClosedResourceError):
            await stream.receive_some()
        with pytest.raises(trio.ClosedResourceError):
            await stream.wait_send_all_might_not_block()


async def test_aclose_wakes_a_blocked_receive_with_closed() -> None:
    async with raw_pairs() as make:
        server, _client = await make()
        stream = WebSocketStream(server)

        async def receive() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await stream.receive_some()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            await stream.aclose()


async def test_concurrent_sends_and_receives_are_busy() -> None:
    async with raw_pairs() as make:
        server, client = await make()
        stream = WebSocketStream(client)
        busy: list[str] = []

        async def run(name: str, fn: Callable[[], Awaitable[object]]) -> None:
            try:
                await fn()
            except trio.BusyResourceError:
                busy.append(name)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "send a", lambda: stream.send_all(b"a"))
            nursery.start_soon(run, "send b", lambda: stream.send_all(b"b"))
        assert len(busy) == 1
        assert await server.get_message() == (b"b" if busy == ["send a"] else b"a")

        busy.clear()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "send", lambda: stream.send_all(b"c"))
            nursery.start_soon(run, "wait", stream.wait_send_all_might_not_block)
        assert len(busy) == 1

        busy.clear()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "receive 1", stream.receive_some)
            nursery.start_soon(run, "receive 2", stream.receive_some)
            await trio.testing.wait_all_tasks_blocked()
            assert len(busy) == 1
            await server.send_message(b"for the other one")


async def test_every_method_is_a_checkpoint_even_when_immediate() -> None:
    async with raw_pairs() as make:
        server, client = await make()
        stream = WebSocketStream(client)
        await server.send_message(b"abcdef")
        with trio.testing.assert_checkpoints():
            assert await stream.receive_some(3) == b"abc"
        with trio.testing.assert_checkpoints():
            assert await stream.receive_some(3) == b"def"  # from the kept remainder
        with trio.testing.assert_checkpoints():
            await stream.send_all(b"")
        with trio.testing.assert_checkpoints():
            await stream.wait_send_all_might_not_block()
        with trio.testing.assert_checkpoints():
            await stream.aclose()


async def test_argument_validation() -> None:
    async with raw_pairs() as make:
        server, _client = await make()
        stream = WebSocketStream(server)
        for bad in (0, -1):
            with pytest.raises(ValueError, match="max_bytes"):
                await stream.receive_some(bad)
        with pytest.raises(TypeError):
            await stream.receive_some(1.5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="text"):
            WebSocketStream(server, text="maybe")  # type: ignore[arg-type]


class _Stuck:
    """A MessageConnection whose sends and receives never finish and whose aclose does not
    wake them: the stream itself must wake its blocked callers on aclose."""

    closed: CloseReason | None = None

    async def get_message(self) -> str | bytes:
        await trio.sleep_forever()

    async def send_message(self, message: str | bytes) -> None:
        await trio.sleep_forever()

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed = CloseReason(code, reason)
        await trio.lowlevel.checkpoint()


async def test_aclose_wakes_blocked_calls_on_any_connection() -> None:
    ws = _Stuck()
    stream = WebSocketStream(ws)

    async def expect_closed(fn: Callable[[], Awaitable[object]]) -> None:
        with pytest.raises(trio.ClosedResourceError):
            await fn()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(expect_closed, stream.receive_some)
        nursery.start_soon(expect_closed, lambda: stream.send_all(b"x"))
        await trio.testing.wait_all_tasks_blocked()
        await stream.aclose()
    assert ws.closed is not None
    assert ws.closed.code == 1000

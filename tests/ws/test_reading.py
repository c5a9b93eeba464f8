"""Who reads the socket: the handler inside ``get_message``, or a reader task while the handler
is busy elsewhere (gateway.ws.connection's module docstring).  Each test runs a handler under
``WebSocketConnection.serve`` against a wsproto peer over a memory stream, and counts the tasks
the connection uses where that is the point."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed
from wsproto.events import CloseConnection, Ping, Pong, TextMessage

from gateway.ws.connection import ATTEND_AFTER, Limits, WebSocketConnection
from gateway.ws.reading import Reader
from tests.support.tasks import WRITER, tasks_under
from tests.support.ws_frames import frame_bytes, masked_frame
from tests.support.ws_peer import Peer

Handler = Callable[[WebSocketConnection], Awaitable[None]]
DEFAULT = Limits()


def tasks_below(nursery: trio.Nursery) -> list[str]:
    """The short names of the tasks under ``nursery`` but the writer's (over a memory stream
    every frame goes through the writer task; on a socket most are written directly), sorted
    (the helpers run beside ``serve`` in the nursery that started it)."""
    return sorted(
        t.name.rsplit(".", 1)[-1] for t in tasks_under(nursery) if not t.name.endswith(WRITER)
    )


@asynccontextmanager
async def serving(
    handler: Handler, limits: Limits = DEFAULT
) -> AsyncIterator[tuple[WebSocketConnection, Peer, trio.Nursery]]:
    client, server = trio.testing.memory_stream_pair()
    ws = WebSocketConnection(server, path="/t", limits=limits)

    async def handle() -> None:
        await handler(ws)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws.serve, handle)
        yield ws, Peer(client), nursery
        nursery.cancel_scope.cancel()


async def echo(ws: WebSocketConnection) -> None:
    while True:
        await ws.send_message(await ws.get_message())


async def test_a_handler_waiting_for_messages_is_the_only_task() -> None:
    async with serving(echo) as (_, peer, nursery):
        for text in ("a", "b", "c"):
            await peer.send(TextMessage(text))
            assert await peer.message() == text
        await trio.sleep(ATTEND_AFTER * 3)  # past any check of the attendant's
        await trio.testing.wait_all_tasks_blocked()
        assert tasks_below(nursery) == ["serve"]
        # ... and it keeps no nursery of its own (its helpers would start beside it).
        (task,) = nursery.child_tasks
        assert task.child_nurseries == []


async def test_serve_returns_only_once_its_helper_tasks_are_done() -> None:
    left: list[list[str]] = []
    client, server = trio.testing.memory_stream_pair()
    ws = WebSocketConnection(server, path="/t", limits=DEFAULT)
    peer = Peer(client)

    async def run(scope: trio.CancelScope) -> None:
        with scope:
            await ws.serve(functools.partial(sleeper, ws))
        left.append([t.name for t in nursery.child_tasks if not t.name.endswith(".run")])

    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()
        nursery.start_soon(run, scope)
        await peer.send(Ping(b"p"))
        assert isinstance(await peer.next_event(timeout=2), Pong)  # a reader task answered
        assert any(t.name.endswith("_reader") for t in nursery.child_tasks)
        scope.cancel()
    assert left == [[]]  # no helper outlived serve()
    assert ws.closed is not None and ws.closed.code == 1006


async def test_a_helper_task_that_fails_drops_only_its_connection(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(self: Reader, handback: bool = True) -> None:
        raise RuntimeError("engine bug")

    monkeypatch.setattr(Reader, "_reader", broken)
    async with serving(sleeper) as (ws, peer, _):
        await peer.send(TextMessage("nobody reads this"))
        assert await peer.read_to_eof(timeout=2) == b""  # dropped...
        assert ws.closed is not None and ws.closed.code == 1006
        # ... and logged; the nursery (the server's, in the gateway) goes on.
        assert any("engine task" in r.getMessage() and r.exc_info for r in caplog.records)


async def sleeper(ws: WebSocketConnection) -> None:
    await trio.sleep_forever()


async def test_a_handler_that_never_reads_still_answers_pings_and_the_close() -> None:
    async with serving(sleeper) as (ws, peer, nursery):
        await peer.send(Ping(b"are you there"))
        event = await peer.next_event(timeout=2)
        assert isinstance(event, Pong) and bytes(event.payload) == b"are you there"
        assert tasks_below(nursery) == ["_reader", "serve"]  # the handler's, a reader
        await peer.send(CloseConnection(1000, "bye"))
        event = await peer.close_event()
        assert (event.code, event.reason) == (1000, "bye")
        assert await peer.read_to_eof(timeout=2) == b""  # the server closed TCP first
        assert ws.closed is not None and ws.closed.code == 1000


async def test_the_reader_task_hands_back_once_the_handler_reads_again() -> None:
    async def busy_then_echo(ws: WebSocketConnection) -> None:
        await trio.sleep(ATTEND_AFTER * 4)  # long enough for a reader task to be started
        await echo(ws)

    async with serving(busy_then_echo) as (_, peer, nursery):
        await trio.sleep(ATTEND_AFTER * 2)
        await peer.send(TextMessage("queued while busy"))
        await peer.send(Ping(b"p"))
        event = await peer.next_event(timeout=2)
        assert isinstance(event, Pong)  # answered by the reader task, the handler sleeps
        assert await peer.message() == "queued while busy"
        await peer.send(TextMessage("later"))
        assert await peer.message() == "later"
        await trio.testing.wait_all_tasks_blocked()
        assert tasks_below(nursery) == ["serve"]


async def test_a_busy_handler_does_not_delay_pongs(autojump_clock: trio.abc.Clock) -> None:
    async def slow(ws: WebSocketConnection) -> None:
        while True:
            await ws.get_message()
            await trio.sleep(100)  # a long computation per message

    async with serving(slow) as (_, peer, _nursery):
        await peer.send(TextMessage("work"))
        await trio.sleep(1)
        start = trio.current_time()
        await peer.send(Ping(b"p"))
        assert isinstance(await peer.next_event(timeout=200), Pong)
        assert trio.current_time() - start <= 2 * ATTEND_AFTER


async def test_a_cancelled_get_message_loses_nothing() -> None:
    got: list[str | bytes] = []
    done = trio.Event()

    async def impatient(ws: WebSocketConnection) -> None:
        with trio.move_on_after(0.1):
            got.append(await ws.get_message())
        got.append(await ws.get_message())
        done.set()

    async with serving(impatient) as (_, peer, _nursery):
        await trio.sleep(0.3)
        await peer.send(TextMessage("late"))
        with trio.fail_after(2):
            await done.wait()
        assert got == ["late"]


async def test_two_tasks_reading_share_the_socket() -> None:
    got: list[str | bytes] = []
    done = trio.Event()

    async def two_readers(ws: WebSocketConnection) -> None:
        async def read() -> None:
            got.append(await ws.get_message())

        async with trio.open_nursery() as inner:
            inner.start_soon(read)
            inner.start_soon(read)
        done.set()

    async with serving(two_readers) as (_, peer, _nursery):
        await trio.testing.wait_all_tasks_blocked()
        await peer.send(TextMessage("one"))
        await trio.sleep(0.05)
        await peer.send(TextMessage("two"))
        with trio.fail_after(2):
            await done.wait()
        assert sorted(map(str, got)) == ["one", "two"]


async def test_close_nowait_while_the_handler_reads_ends_once_the_peer_answers() -> None:
    ended: list[int] = []

    async def reader(ws: WebSocketConnection) -> None:
        with pytest.raises(ConnectionClosed) as info:
            await ws.get_message()
        assert info.value.reason is not None
        ended.append(info.value.reason.code)

    async with serving(reader) as (ws, peer, _nursery):
        await trio.testing.wait_all_tasks_blocked()
        ws.close_nowait(1001, "going away")
        event = await peer.close_event()
        assert event.code == 1001
        assert ended == []  # the handler reads the socket: it learns with the answer
        await peer.send(event.response())
        assert await peer.read_to_eof(timeout=2) == b""
        assert ended == [1001]


async def test_close_nowait_to_a_silent_peer_drops_it_after_close_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    ended: list[float] = []

    async def reader(ws: WebSocketConnection) -> None:
        with pytest.raises(ConnectionClosed):
            await ws.get_message()
        ended.append(trio.current_time())

    async with serving(reader, Limits(close_timeout=5)) as (ws, peer, _nursery):
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        ws.close_nowait(1001, "going away")
        assert (await peer.close_event()).code == 1001  # ...and never answered
        assert await peer.read_to_eof(timeout=10) == b""
        await trio.testing.wait_all_tasks_blocked()
        assert len(ended) == 1
        assert 4.9 <= ended[0] - start <= 5.5


async def test_a_handler_returning_early_leaves_the_reading_to_serve() -> None:
    async def leave(ws: WebSocketConnection) -> None:
        return  # without closing: serve goes on until the peer closes

    async with serving(leave) as (_, peer, nursery):
        await peer.send(Ping(b"still here"))
        assert isinstance(await peer.next_event(timeout=2), Pong)
        await peer.send(CloseConnection(1000))
        assert (await peer.close_event()).code == 1000
        assert await peer.read_to_eof(timeout=2) == b""
        await trio.testing.wait_all_tasks_blocked()
        assert tasks_below(nursery) == []


# -- what a review of the one-task engine found (each failed before its fix) ----------------


async def test_ping_after_a_protocol_failure_raises_instead_of_hanging() -> None:
    outcome: list[object] = []

    async def handler(ws: WebSocketConnection) -> None:
        outcome.append(await ws.get_message())
        with pytest.raises(ConnectionClosed):
            await ws.ping(b"x")
        outcome.append("raised")

    async with serving(handler) as (_, peer, _nursery):
        with trio.fail_after(5):
            # A good message, then an unmasked frame (1002), in one segment.
            await peer.raw(masked_frame(0x1, b"hello") + frame_bytes(0x1, b"bad"))
            assert (await peer.close_event()).code == 1002
            await trio.testing.wait_all_tasks_blocked()
            assert outcome == ["hello", "raised"]


async def test_a_ping_from_another_task_leaves_no_reader_behind() -> None:
    async def handler(ws: WebSocketConnection) -> None:
        async def heartbeat() -> None:
            await trio.sleep(0.1)
            await ws.ping()

        async with trio.open_nursery() as inner:
            inner.start_soon(heartbeat)
            await echo(ws)

    for _ in range(5):  # the order the scheduler picks matters: try a few
        async with serving(handler) as (_, peer, nursery):
            with trio.fail_after(5):
                await peer.send(TextMessage("a"))
                assert await peer.message() == "a"
                event = await peer.next_event()
                assert isinstance(event, Ping)
                await peer.send(event.response())
                await trio.sleep(ATTEND_AFTER * 4)
                assert "_reader" not in tasks_below(nursery)


@pytest.mark.parametrize("frame", [b"close", b"bad"])
async def test_a_close_sent_with_the_handshake_is_finished_without_the_handler(
    frame: bytes,
) -> None:
    trailing = (
        masked_frame(0x8, (1000).to_bytes(2, "big"))
        if frame == b"close"
        else frame_bytes(0x1, b"x")
    )
    client, server = trio.testing.memory_stream_pair()
    ws = WebSocketConnection(server, path="/t", trailing_data=trailing)

    async def busy() -> None:
        await trio.sleep(3)  # never reads

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws.serve, busy)
        peer = Peer(client)
        with trio.fail_after(2):
            event = await peer.close_event()
            assert event.code == (1000 if frame == b"close" else 1002)
            assert await peer.read_to_eof() == b""  # and the server closed TCP
        nursery.cancel_scope.cancel()


async def test_serve_ends_when_the_handler_returns_with_messages_unread() -> None:
    async def leave(ws: WebSocketConnection) -> None:
        await trio.sleep(0.2)  # meanwhile more than inbound_queue messages arrive

    async with serving(leave, Limits(inbound_queue=2)) as (ws, peer, nursery):
        with trio.fail_after(5):
            for i in range(5):
                await peer.send(TextMessage(f"m{i}"))
            await trio.sleep(0.3)
            await peer.send(CloseConnection(1000))
            assert (await peer.close_event()).code == 1000
            await trio.testing.wait_all_tasks_blocked()
            assert tasks_below(nursery) == []
            assert ws.closed is not None


async def test_closed_says_1006_after_serve_is_cancelled() -> None:
    async with serving(echo) as (ws, _, nursery):
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert ws.closed is not None and ws.closed.code == 1006
    assert not ws.send_nowait("too late")

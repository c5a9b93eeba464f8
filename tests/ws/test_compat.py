"""trio-websocket's documented connection API, run against trio-websocket and against ours.

The gateway promises handlers written for trio-websocket run unchanged.  Each test here is a
server-side scenario written against trio-websocket's documentation (every public method and
property of its ``WebSocketConnection``, its exceptions and ``CloseReason``) and run twice:
once on trio-websocket's own server connection, once on the gateway's engine, both over real
loopback TCP with trio-websocket as the client.  The first run proves the scenario states
trio-websocket's behaviour; the second that ours matches it.
"""

from __future__ import annotations

import base64
import contextvars
import hashlib
from collections.abc import Awaitable, Callable
from functools import partial
from types import TracebackType
from typing import Any, Protocol

import h11
import pytest
import trio
import trio_websocket
from trio_websocket import CloseReason, ConnectionClosed, Endpoint

from gateway.errors import MessageTypeError
from gateway.ws.connection import WebSocketConnection

IMPLEMENTATIONS = ("trio-websocket", "gateway")
TARGET = "/compat/room?id=7"
PORT: contextvars.ContextVar[int] = contextvars.ContextVar("PORT")  # the server's, per test
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3


class ServerSide(Protocol):
    """What both server connections offer (trio-websocket's documented interface)."""

    @property
    def closed(self) -> CloseReason | None: ...
    @property
    def is_client(self) -> bool: ...
    @property
    def is_server(self) -> bool: ...
    @property
    def path(self) -> str | None: ...
    @property
    def subprotocol(self) -> str | None: ...
    @property
    def local(self) -> Endpoint | str | None: ...
    @property
    def remote(self) -> Endpoint | str | None: ...
    @property
    def handshake_headers(self) -> tuple[tuple[bytes, bytes], ...]: ...
    async def get_message(self) -> str | bytes: ...
    async def send_message(self, message: str | bytes) -> None: ...
    async def ping(self, payload: bytes | None = None) -> None: ...
    async def pong(self, payload: bytes | None = None) -> None: ...
    async def aclose(self, code: int = 1000, reason: str | None = None) -> None: ...
    async def __aenter__(self) -> Any: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


Scenario = Callable[[ServerSide, trio_websocket.WebSocketConnection], Awaitable[None]]


async def _handshake(stream: trio.SocketStream) -> tuple[str, list[tuple[bytes, bytes]], bytes]:
    """Answer the client's upgrade with a 101 (the gateway's front door does this in
    production; the engine starts after it).  Returns target, headers, trailing bytes."""
    conn = h11.Connection(h11.SERVER)
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
            continue
        assert isinstance(event, h11.Request), event
        break
    headers = [(bytes(name), bytes(value)) for name, value in event.headers]
    key = dict(headers)[b"sec-websocket-key"]
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    await stream.send_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\nSec-WebSocket-Protocol: chat\r\n\r\n"
    )
    trailing, _closed = conn.trailing_data
    return event.target.decode("ascii"), headers, bytes(trailing)


async def _serve(
    kind: str, stream: trio.SocketStream, scenario: Callable[[ServerSide], Awaitable[None]]
) -> None:
    if kind == "trio-websocket":
        async with trio.open_nursery() as nursery:
            request = await trio_websocket.wrap_server_stream(nursery, stream)
            ws = await request.accept(subprotocol="chat")
            try:
                await scenario(ws)
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    await ws.aclose()
            nursery.cancel_scope.cancel()
    else:
        target, headers, trailing = await _handshake(stream)
        ours = WebSocketConnection(
            stream,
            path=target,
            subprotocol="chat",
            handshake_headers=headers,
            trailing_data=trailing,
        )

        async def handler() -> None:
            try:
                await scenario(ours)
            finally:
                await ours.aclose()  # what the gateway's handler contract does

        await ours.serve(handler)


async def run(kind: str, scenario: Scenario) -> None:
    """Run ``scenario`` as the server-side handler of ``kind``, with a trio-websocket client
    connected over loopback TCP."""
    with trio.fail_after(10):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        listener = listeners[0]
        port = listener.socket.getsockname()[1]
        PORT.set(port)
        async with trio.open_nursery() as nursery:
            connected: list[trio_websocket.WebSocketConnection] = []
            client_streams: list[trio.SocketStream] = []
            got_client = trio.Event()

            async def connect() -> None:
                client_streams.append(await trio.open_tcp_stream("127.0.0.1", port))
                client = await trio_websocket.wrap_client_stream(
                    nursery,
                    client_streams[0],
                    "127.0.0.1",
                    TARGET,
                    subprotocols=["chat"],
                    extra_headers=[(b"X-Compat", b"yes")],
                )
                connected.append(client)
                got_client.set()

            nursery.start_soon(connect)
            stream = await listener.accept()
            await listener.aclose()

            async def with_client(server: ServerSide) -> None:
                await got_client.wait()
                await scenario(server, connected[0])

            try:
                await _serve(kind, stream, with_client)
            finally:
                for own in [*client_streams, stream]:
                    await trio.aclose_forcefully(own)
            nursery.cancel_scope.cancel()


each = pytest.mark.parametrize("kind", IMPLEMENTATIONS)


@each
async def test_the_connection_is_an_async_resource(kind: str) -> None:
    async def scenario(ws: ServerSide, client: trio_websocket.WebSocketConnection) -> None:
        assert isinstance(ws, trio.abc.AsyncResource)
        async with ws as entered:
            assert entered is ws
            assert ws.closed is None
            await ws.send_message("inside")
        # Leaving the block closed it (aclose(): 1000).
        assert ws.closed is not None
        assert await client.get_message() == "inside"
        with pytest.raises(ConnectionClosed) as info:
            await client.get_message()
        assert info.value.reason is not None and info.value.reason.code == 1000
        with pytest.raises(ConnectionClosed):
            await ws.send_message("after")

    await run(kind, scenario)


@each
async def test_async_with_closes_on_an_exception_too(kind: str) -> None:
    async def scenario(ws: ServerSide, client: trio_websocket.WebSocketConnection) -> None:
        with pytest.raises(KeyError):
            async with ws:
                raise KeyError("handler bug")
        with pytest.raises(ConnectionClosed) as info:
            await client.get_message()
        assert info.value.reason is not None and info.value.reason.code == 1000

    await run(kind, scenario)


@each
async def test_messages_keep_their_type_both_ways(kind: str) -> None:
    async def scenario(ws: ServerSide, client: trio_websocket.WebSocketConnection) -> None:
        await client.send_message("héllo ✓")
        await client.send_message(b"\x00\xff")
        await client.send_message("")
        await client.send_message(b"x" * 70000)
        assert await ws.get_message() == "héllo ✓"
        got = await ws.get_message()
        assert got == b"\x00\xff" and type(got) is bytes
        assert await ws.get_message() == ""
        assert await ws.get_message() == b"x" * 70000
        await ws.send_message("text")
        await ws.send_message(b"bin")
        assert await client.get_message() == "text"
        assert await client.get_message() == b"bin"

    await run(kind, scenario)


@each
async def test_send_message_refuses_other_types_with_value_error(kind: str) -> None:
    async def scenario(ws: ServerSide, client: trio_websocket.WebSocketConnection) -> None:
        with pytest.raises(ValueError, match="str or bytes"):
            await ws.send_message(42)  # type: ignore[arg-type]
        assert ws.closed is None  # nothing was sent, the connection goes on
        await ws.send_message("still open")
        assert await client.get_message() == "still open"

    await run(kind, scenario)


@each
async def test_read_only_properties(kind: str) -> None:
    async def scenario(ws: ServerSide, client: trio_websocket.WebSocketConnection) -> None:
        assert ws.is_server is True and ws.is_client is False
        assert ws.path == TARGET
        assert ws.subprotocol == "chat"
        assert ws.closed is None
        local, remote = ws.local, ws.remote
        assert isinstance(local, Endpoint) and isinstance(remote, Endpoint)
        assert (str(local.address), local.port, local.is_ssl) == ("127.0.0.1", PORT.get(), False)
        client_end = client.local
        assert isinstance(client_end, Endpoint)
        assert (str(remote.address), remote.port) == (str(client_end.address), client_end.port)
        headers = ws.handshake_headers
        assert isinstance(headers, tuple)
        assert all(name == name.lower() for name, _ in headers)
        if kind == "gateway":
            # Documented as "the headers sent by the remote during the handshake";
            # trio-websocket 0.12's server keeps () (it records them on clients only).
            assert (b"x-compat", b"yes") in headers
            assert dict(headers)[b"sec-websocket-protocol"] == b"chat"

    await run(kind, scenario)


@each
async def test_peer_close_delivers_what_came_before_then_raises(kind: str) -> None:
    async def scenario(ws: ServerSide, client: trio_websocket.WebSocketConnection) -> None:
        await client.send_message("one")
        await client.send_message("two")
        async with trio.open_nursery() as nursery:
            # (In the background: trio-websocket's reader stops at its one-message queue.)
            nursery.start_soon(client.aclose, 4001, "bye")
            assert await ws.get_message() == "one"
            assert await ws.get_message() == "two"
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
        assert client.closed is not None and client.closed.code == 4001
        reason = info.value.reason
        assert isinstance(reason, CloseReason)
        assert (reason.code, reason.name, reason.reason) == (4001, "PRIVATE_RESERVED", "bye")
        assert ws.closed is not None and ws.closed.code == 4001
        calls = (partial(ws.send_message, "x"), partial(ws.ping), partial(ws.pong))
        for call in calls:
            with pytest.raises(ConnectionClosed):
                await call()
        await ws.aclose()  # idempotent after the peer's close

    await run(kind, scenario)


@each
async def test_local_close_discards_pending_and_every_call_raises(kind: str) -> None:
    async def scenario(ws: ServerSide, client: trio_websocket.WebSocketConnection) -> None:
        await client.send_message("first")
        await client.send_message("second")
        assert await ws.get_message() == "first"
        await trio.sleep(0.1)  # "second" is queued on the server by now
        await ws.aclose(4002, "done")
        with pytest.raises(ConnectionClosed) as info:
            await client.get_message()
        assert info.value.reason is not None
        assert (info.value.reason.code, info.value.reason.reason) == (4002, "done")
        assert isinstance(ws.closed, CloseReason)
        with pytest.raises(ConnectionClosed):
            await ws.get_message()  # "second" was dropped: pending messages are discarded
        calls = (partial(ws.send_message, "x"), partial(ws.ping, b"p"), partial(ws.pong))
        for call in calls:
            with pytest.raises(ConnectionClosed) as raised:
                await call()
            assert raised.value.reason is ws.closed
        await ws.aclose()  # idempotent
        await ws.aclose(1001, "again")

    await run(kind, scenario)


@each
async def test_ping_waits_for_the_pong(kind: str) -> None:
    async def scenario(ws: ServerSide, client: trio_websocket.WebSocketConnection) -> None:
        with trio.fail_after(2):
            await ws.ping(b"abc")
            await ws.ping()  # a random payload
            await ws.ping(b"abc")  # answered: the payload is free again
        assert ws.closed is None

    await run(kind, scenario)


@each
async def test_a_payload_already_in_flight_is_a_value_error(kind: str) -> None:
    async def scenario(ws: ServerSide, client: trio_websocket.WebSocketConnection) -> None:
        outcomes: list[str] = []

        async def ping() -> None:
            try:
                await ws.ping(b"same")
                outcomes.append("pong")
            except ValueError:
                outcomes.append("ValueError")

        with trio.fail_after(2):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ping)
                nursery.start_soon(ping)
        assert sorted(outcomes) == ["ValueError", "pong"]

    await run(kind, scenario)


@each
async def test_unsolicited_pong_keeps_the_connection_open(kind: str) -> None:
    async def scenario(ws: ServerSide, client: trio_websocket.WebSocketConnection) -> None:
        await ws.pong(b"heartbeat")
        await ws.pong()
        await ws.send_message("after")
        assert await client.get_message() == "after"
        assert ws.closed is None

    await run(kind, scenario)


@each
async def test_a_cancelled_get_message_loses_nothing(kind: str) -> None:
    async def scenario(ws: ServerSide, client: trio_websocket.WebSocketConnection) -> None:
        with trio.move_on_after(0.1) as scope:
            await ws.get_message()
        assert scope.cancelled_caught
        await client.send_message("late")
        assert await ws.get_message() == "late"

    await run(kind, scenario)


@each
async def test_a_vanished_peer_is_1006(kind: str) -> None:
    async def scenario(ws: ServerSide, client: trio_websocket.WebSocketConnection) -> None:
        await client.send_message("last")
        await client._stream.aclose()  # TCP closes with no Close frame (a test-only reach in)
        assert await ws.get_message() == "last"
        with pytest.raises(ConnectionClosed) as info:
            await ws.get_message()
        assert info.value.reason is not None
        assert (info.value.reason.code, info.value.reason.name) == (1006, "ABNORMAL_CLOSURE")
        with pytest.raises(ConnectionClosed):
            await ws.send_message("nobody there")

    await run(kind, scenario)


async def test_close_reason_and_connection_closed_are_trio_websockets() -> None:
    # Not parametrised: the engine raises trio-websocket's own classes, so `except` clauses
    # and isinstance checks written for trio-websocket match.
    assert issubclass(MessageTypeError, ValueError) and issubclass(MessageTypeError, TypeError)
    assert WebSocketConnection.closed.__doc__  # documented, as every public member
    public = {name for name in dir(trio_websocket.WebSocketConnection) if not name.startswith("_")}
    ours = {name for name in dir(WebSocketConnection) if not name.startswith("_")}
    assert public - {"CONNECTION_ID"} <= ours
    # Engine callbacks are not part of the handler's interface.
    assert not {"on_timer", "on_write_lost", "abort", "run"} & ours
    slot_docs = WebSocketConnection.__slots__  # a dict: its values document the counters
    assert isinstance(slot_docs, dict)
    for name in ours:
        doc = getattr(WebSocketConnection, name).__doc__ or slot_docs.get(name)
        assert doc, f"{name} has no docstring"

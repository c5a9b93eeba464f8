"""The upstream connection (gateway/proxy/client.py) through whole exchanges, against a raw
socket playing the upstream (a socket pair, or a real listener on loopback for
:func:`connect`): responses read as h11 events, the deadlines between reads and for a
request the upstream does not take, and every failure leaving as a 502 (UpstreamError) or 504
(UpstreamTimeout) that marks the connection broken.  How the request head and body go out is
in test_client.py, the pool's reuse rules in test_pool.py."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import h11
import pytest
import trio
import trio.lowlevel
import trio.testing

from gateway.core.upstream import Upstream
from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.proxy.client import Surplus, UpstreamConnection, connect, request_state
from tests.support.ports import free_port

UP = Upstream("127.0.0.1", 9)
READ_TIMEOUT = 2.0
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def head(method: str = "GET", *fields: str) -> bytes:
    """A request head as the proxy serialises it."""
    return "\r\n".join([f"{method} /x HTTP/1.1", "Host: up", *fields, "", ""]).encode()


@pytest.fixture
def pair() -> Iterator[tuple[UpstreamConnection, socket.socket]]:
    """An :class:`UpstreamConnection` and the raw (blocking, bounded) socket playing the
    upstream."""
    ours, theirs = socket.socketpair()
    theirs.settimeout(5.0)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
    yield UpstreamConnection(stream, UP, read_timeout=READ_TIMEOUT), theirs
    theirs.close()
    ours.close()


def received_now(sock: socket.socket) -> bytes:
    """Everything the upstream has been sent so far, without waiting."""
    sock.setblocking(False)
    data = bytearray()
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(5.0)
    return bytes(data)


async def events_until_end(conn: UpstreamConnection, timeout: float = 5.0) -> list[h11.Event]:
    events: list[h11.Event] = []
    with trio.fail_after(timeout):
        while not isinstance(event := await conn.next_event(), h11.EndOfMessage):
            events.append(event)
    return [*events, event]


def body_of(events: list[h11.Event]) -> bytes:
    return b"".join(bytes(e.data) for e in events if isinstance(e, h11.Data))


# --------------------------------------------------------------------------- sending


async def test_a_body_shorter_than_announced_cannot_end(
    pair: tuple[UpstreamConnection, socket.socket],
) -> None:
    conn, _upstream = pair
    await conn.send_request(head("POST", "Content-Length: 9"), request_state(b"POST", 9, False))
    await conn.send(h11.Data(data=b"short"))
    with pytest.raises(UpstreamError, match="could not be framed"):
        await conn.send(h11.EndOfMessage())
    assert conn.broken


async def test_an_upstream_gone_before_the_request_is_a_502(
    pair: tuple[UpstreamConnection, socket.socket],
) -> None:
    conn, upstream = pair
    upstream.close()
    with pytest.raises(UpstreamError, match="broken while sending"):
        await conn.send_request(head(), request_state(b"GET", None, False), end=True)
    assert conn.broken


async def test_an_upstream_that_never_reads_the_request_is_a_504(
    pair: tuple[UpstreamConnection, socket.socket], autojump_clock: trio.testing.MockClock
) -> None:
    conn, _upstream = pair
    size = 16 * 1024 * 1024  # far more than the socket buffers hold
    started = trio.current_time()
    with pytest.raises(UpstreamTimeout, match="did not read the request in time"):
        await conn.send_request(
            head("POST", f"Content-Length: {size}"),
            request_state(b"POST", size, False),
            bytes(size),
            end=True,
        )
    assert trio.current_time() - started == pytest.approx(READ_TIMEOUT)
    assert conn.broken


# --------------------------------------------------------------------------- receiving


async def test_a_response_is_read_as_events_and_the_exchange_can_be_reused(
    pair: tuple[UpstreamConnection, socket.socket],
) -> None:
    conn, upstream = pair
    await conn.send_request(head(), request_state(b"GET", None, False), end=True)
    upstream.sendall(OK)
    response, *rest = await events_until_end(conn)
    assert isinstance(response, h11.Response)
    assert response.status_code == 200
    assert body_of(rest) == b"ok"
    assert conn.received == len(OK)
    assert conn.reusable
    conn.start_next_cycle()
    assert (conn.exchanges, conn.received) == (1, 0)
    # The same connection carries the next exchange.
    await conn.send_request(head(), request_state(b"GET", None, False), end=True)
    upstream.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
    (second, _end) = await events_until_end(conn)
    assert isinstance(second, h11.Response)
    assert second.status_code == 204


async def test_a_chunked_response_split_anywhere_arrives_the_same(
    pair: tuple[UpstreamConnection, socket.socket],
) -> None:
    conn, upstream = pair
    await conn.send_request(head(), request_state(b"GET", None, False), end=True)
    wire = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )

    async def dribble() -> None:
        for i in range(len(wire)):
            upstream.sendall(wire[i : i + 1])
            await trio.lowlevel.checkpoint()  # let the reader see each byte on its own

    async with trio.open_nursery() as nursery:
        nursery.start_soon(dribble)
        events = await events_until_end(conn)
    assert body_of(events) == b"hello world"
    assert conn.reusable


async def test_an_interim_response_comes_before_the_final_one(
    pair: tuple[UpstreamConnection, socket.socket],
) -> None:
    conn, upstream = pair
    await conn.send_request(
        head("POST", "Content-Length: 2", "Expect: 100-continue"),
        request_state(b"POST", 2, False),
    )
    upstream.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    with trio.fail_after(5):
        interim = await conn.next_event()
    assert isinstance(interim, h11.InformationalResponse)
    assert interim.status_code == 100
    await conn.send(h11.Data(data=b"ok"), h11.EndOfMessage())
    upstream.sendall(OK)
    final, *_ = await events_until_end(conn)
    assert isinstance(final, h11.Response)
    assert final.status_code == 200


async def test_connection_close_from_the_upstream_forbids_reuse(
    pair: tuple[UpstreamConnection, socket.socket],
) -> None:
    conn, upstream = pair
    await conn.send_request(head(), request_state(b"GET", None, False), end=True)
    upstream.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
    await events_until_end(conn)
    assert not conn.reusable


async def test_an_unfinished_request_forbids_reuse(
    pair: tuple[UpstreamConnection, socket.socket],
) -> None:
    conn, upstream = pair
    await conn.send_request(head("POST", "Content-Length: 9"), request_state(b"POST", 9, False))
    upstream.sendall(OK)  # an early answer: the upload never finished
    await events_until_end(conn)
    assert not conn.reusable  # the rest of the body would be read as the next request


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"not http at all\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
    ],
)
async def test_a_malformed_response_is_a_502(
    pair: tuple[UpstreamConnection, socket.socket], answer: bytes
) -> None:
    conn, upstream = pair
    await conn.send_request(head(), request_state(b"GET", None, False), end=True)
    upstream.sendall(answer)
    with pytest.raises(UpstreamError, match="malformed response"), trio.fail_after(5):
        await events_until_end(conn)
    assert conn.broken


async def test_an_oversized_response_head_is_a_502(
    pair: tuple[UpstreamConnection, socket.socket],
) -> None:
    conn, upstream = pair
    await conn.send_request(head(), request_state(b"GET", None, False), end=True)
    upstream.sendall(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (32 * 1024))
    with pytest.raises(UpstreamError, match="malformed response"), trio.fail_after(5):
        await conn.next_event()
    assert conn.broken


async def test_an_upstream_hanging_up_mid_response_is_a_502(
    pair: tuple[UpstreamConnection, socket.socket],
) -> None:
    conn, upstream = pair
    await conn.send_request(head(), request_state(b"GET", None, False), end=True)
    upstream.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
    upstream.shutdown(socket.SHUT_WR)
    with pytest.raises(UpstreamError), trio.fail_after(5):
        await events_until_end(conn)
    assert conn.broken
    assert not conn.reusable


async def test_a_silent_upstream_is_a_504_after_the_read_timeout(
    pair: tuple[UpstreamConnection, socket.socket], autojump_clock: trio.testing.MockClock
) -> None:
    conn, _upstream = pair
    await conn.send_request(head(), request_state(b"GET", None, False), end=True)
    started = trio.current_time()
    with pytest.raises(UpstreamTimeout, match="read timed out"):
        await conn.next_event()
    assert trio.current_time() - started == pytest.approx(READ_TIMEOUT)
    assert conn.broken


async def test_the_read_timeout_is_between_reads_not_for_the_whole_response(
    pair: tuple[UpstreamConnection, socket.socket], autojump_clock: trio.testing.MockClock
) -> None:
    conn, upstream = pair
    await conn.send_request(head(), request_state(b"GET", None, False), end=True)
    pieces = [b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n", b"a", b"b", b"c", b"d"]

    async def slow_upstream() -> None:
        for piece in pieces:
            await trio.sleep(READ_TIMEOUT * 0.75)  # each within the timeout, all far beyond
            upstream.sendall(piece)

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_upstream)
        events = await events_until_end(conn, timeout=60)
    assert body_of(events) == b"abcd"
    assert trio.current_time() - started > 3 * READ_TIMEOUT


async def test_a_slow_upload_still_moving_is_not_a_stalled_upstream(
    pair: tuple[UpstreamConnection, socket.socket], autojump_clock: trio.testing.MockClock
) -> None:
    conn, upstream = pair
    await conn.send_request(head("POST", "Content-Length: 9"), request_state(b"POST", 9, False))
    sent = [0]

    async def uploader() -> None:
        for _ in range(4):  # the client's body trickles in: progress every 1.5 s
            await trio.sleep(READ_TIMEOUT * 0.75)
            sent[0] += 1
        upstream.sendall(OK)  # the upstream answers only once it has it all

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(uploader)
        with trio.fail_after(60):
            response = await conn.next_event(progress=lambda: sent[0])
    assert isinstance(response, h11.Response)
    assert trio.current_time() - started > 2 * READ_TIMEOUT  # waited past one read_timeout


async def test_an_upload_that_stopped_moving_is_a_stall(
    pair: tuple[UpstreamConnection, socket.socket], autojump_clock: trio.testing.MockClock
) -> None:
    conn, _upstream = pair
    await conn.send_request(head("POST", "Content-Length: 9"), request_state(b"POST", 9, False))
    started = trio.current_time()
    with pytest.raises(UpstreamTimeout, match="read timed out"):
        await conn.next_event(progress=lambda: 4)  # 4 bytes sent, and no more since
    assert trio.current_time() - started == pytest.approx(READ_TIMEOUT)
    assert conn.broken


# --------------------------------------------------------------------------- surplus


async def test_surplus_sees_bytes_in_h11s_buffer_and_on_the_socket(
    pair: tuple[UpstreamConnection, socket.socket],
) -> None:
    conn, upstream = pair
    await conn.send_request(head(), request_state(b"GET", None, False), end=True)
    upstream.sendall(OK)
    await events_until_end(conn)
    assert conn.surplus() is None
    upstream.sendall(b"HTTP/1.1 200 OK\r\n")  # an answer nobody asked for, arriving late
    assert conn.surplus(poll=False) is None  # not looking at the socket: not seen
    assert conn.surplus() is Surplus.DATA  # in the kernel's buffer (a socket pair: at once)


async def test_surplus_in_the_same_segment_is_seen_without_a_poll(
    pair: tuple[UpstreamConnection, socket.socket],
) -> None:
    conn, upstream = pair
    await conn.send_request(head(), request_state(b"GET", None, False), end=True)
    upstream.sendall(OK + b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON")
    await events_until_end(conn)
    assert conn.surplus(poll=False) is Surplus.DATA


# --------------------------------------------------------------------------- connect


async def test_connect_reaches_a_real_upstream_on_loopback() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    upstream = Upstream("127.0.0.1", listener.getsockname()[1])
    with listener:
        conn = await connect(upstream, connect_timeout=5.0, read_timeout=5.0)
        accepted, _ = await listener.accept()
        with accepted:
            await conn.send_request(head(), request_state(b"GET", None, False), end=True)
            with trio.fail_after(5):
                got = await accepted.recv(65536)
            assert got == head()
            await accepted.send(OK)
            events = await events_until_end(conn)
            assert body_of(events) == b"ok"
            assert conn.upstream is upstream
        await conn.aclose()
    assert conn.broken  # closed: never reused


async def test_connect_to_a_closed_port_is_a_502_at_once() -> None:
    with pytest.raises(UpstreamError, match="refused or unreachable"), trio.fail_after(5):
        await connect(Upstream("127.0.0.1", free_port()), connect_timeout=5.0, read_timeout=5.0)

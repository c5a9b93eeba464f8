"""The upstream connection (gateway/proxy/client.py) over a real socket pair: the request head
the proxy serialised goes out as is, while h11's client state machine learns the request from
:func:`request_state` and still parses (and frames) everything that follows."""

from __future__ import annotations

import socket

import h11
import pytest
import trio

from gateway.core.upstream import Upstream
from gateway.errors import UpstreamError
from gateway.proxy.client import UpstreamConnection, request_state

UP = Upstream("127.0.0.1", 9)
HEAD = b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n"


async def events(conn: UpstreamConnection) -> list[type[h11.Event]]:
    out: list[type[h11.Event]] = []
    while not out or out[-1] is not h11.EndOfMessage:
        out.append(type(await conn.next_event()))
    return out


async def test_the_head_goes_out_as_given_and_the_response_is_read_after_waiting(
    pair: tuple[UpstreamConnection, socket.socket],
) -> None:
    conn, upstream = pair
    await conn.send_request(HEAD, request_state(b"GET", None, False), end=True)
    assert upstream.recv(65536) == HEAD

    async def answer_later() -> None:
        await trio.sleep(0.05)  # the read waits (no answer can be there at once)
        upstream.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer_later)
        assert await events(conn) == [h11.Response, h11.Data, h11.EndOfMessage]
    assert conn.reusable


async def test_a_head_request_frames_its_response_without_a_body(
    pair: tuple[UpstreamConnection, socket.socket],
) -> None:
    conn, upstream = pair
    await conn.send_request(
        b"HEAD / HTTP/1.1\r\nhost: a\r\n\r\n", request_state(b"HEAD", None, False), end=True
    )
    upstream.recv(65536)
    # RFC 9110 §9.3.2: the Content-Length describes the GET; no body follows.
    upstream.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    assert await events(conn) == [h11.Response, h11.EndOfMessage]
    assert conn.reusable


async def test_a_body_goes_with_the_head_in_one_write(
    pair: tuple[UpstreamConnection, socket.socket],
) -> None:
    conn, upstream = pair
    head = b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\n"
    await conn.send_request(head, request_state(b"POST", 3, False), b"abc", end=True)
    assert upstream.recv(65536) == head + b"abc"


async def test_h11_holds_the_body_to_the_announced_length(
    pair: tuple[UpstreamConnection, socket.socket],
) -> None:
    conn, upstream = pair
    head = b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\n"
    with pytest.raises(UpstreamError, match="framed"):
        await conn.send_request(head, request_state(b"POST", 3, False), b"abcd", end=True)
    assert conn.broken
    upstream.setblocking(False)
    with pytest.raises(BlockingIOError):
        upstream.recv(65536)  # nothing went out


async def test_a_chunked_body_is_framed_by_h11_after_the_head(
    pair: tuple[UpstreamConnection, socket.socket],
) -> None:
    conn, upstream = pair
    head = b"PUT / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n"
    await conn.send_request(head, request_state(b"PUT", None, True))
    await conn.send(h11.Data(data=b"hello"), h11.EndOfMessage())
    assert upstream.recv(65536) == head + b"5\r\nhello\r\n0\r\n\r\n"


def test_request_state_knows_the_method_and_framing() -> None:
    assert request_state(b"GET", None, False) is request_state(b"GET", None, False)  # built once
    odd = request_state(b"PROPFIND", None, False)
    assert odd.method == b"PROPFIND"
    sized = request_state(b"POST", 12, False)
    assert (b"content-length", b"12") in list(sized.headers)
    assert (b"transfer-encoding", b"chunked") in list(request_state(b"POST", None, True).headers)

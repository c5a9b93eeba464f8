"""The upstream pool's reuse rules (gateway/proxy/pool.py) over real socket pairs: a
connection goes back only after a clean exchange with nothing beyond the response, and an
upstream that ever sent a surplus makes the pool strict."""

from __future__ import annotations

import socket

import h11
import pytest
import trio

from gateway.core.upstream import Upstream
from gateway.errors import UpstreamError
from gateway.proxy.client import Surplus, UpstreamConnection
from gateway.proxy.pool import UpstreamPool

UP = Upstream("127.0.0.1", 9)


def pool() -> UpstreamPool:
    return UpstreamPool(UP, max_idle=4, connect_timeout=1.0, read_timeout=1.0)


async def exchange(
    conn: UpstreamConnection, upstream: socket.socket, answer: bytes, *, body: bytes = b""
) -> None:
    """One GET (or POST with ``body``) whose response is ``answer``, read to its end."""
    headers = [("Host", "a"), ("Content-Length", str(len(body)))]
    events: list[h11.Event] = [h11.Request(method="POST", target="/", headers=headers)]
    if body:
        events.append(h11.Data(data=body))
        conn.carried_body = True
    await conn.send(*events, h11.EndOfMessage())
    upstream.recv(65536)
    upstream.sendall(answer)
    while not isinstance(await conn.next_event(), h11.EndOfMessage):
        pass


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def test_a_clean_exchange_is_reused(
    pair: tuple[UpstreamConnection, socket.socket],
) -> None:
    conn, upstream = pair
    p = pool()
    await exchange(conn, upstream, OK)
    assert conn.surplus() is None
    await p.release(conn, completed=True)
    assert p.idle == [conn]
    assert await p.acquire() is conn
    assert p.reused == 1


async def test_bytes_in_h11s_buffer_condemn_it(
    pair: tuple[UpstreamConnection, socket.socket],
) -> None:
    conn, upstream = pair
    p = pool()
    await exchange(conn, upstream, OK + b"HTTP/1.1 200 OK\r\n")
    assert conn.surplus() is Surplus.DATA
    await p.release(conn, completed=True)
    assert (p.idle, p.surplus, p.strict) == ([], 1, True)


async def test_bytes_arriving_while_idle_condemn_it_when_taken(
    pair: tuple[UpstreamConnection, socket.socket],
) -> None:
    conn, upstream = pair
    p = pool()
    await exchange(conn, upstream, OK)
    await p.release(conn, completed=True)
    upstream.sendall(b"HTTP/1.1 200 OK\r\nX-Poison: 1\r\n")
    await trio.sleep(0.01)
    # Condemned when taken; the fresh connection that replaces it is refused (port 9).
    with pytest.raises(UpstreamError):
        await p.acquire()
    assert (p.idle, p.surplus, p.reused) == ([], 1, 0)


async def test_an_upstream_closing_an_idle_connection_is_not_a_surplus(
    pair: tuple[UpstreamConnection, socket.socket],
) -> None:
    conn, upstream = pair
    await exchange(conn, upstream, OK)
    upstream.shutdown(socket.SHUT_WR)
    await trio.sleep(0.01)
    assert conn.surplus() is Surplus.EOF


async def test_a_strict_pool_keeps_no_connection_that_carried_a_body(
    pair: tuple[UpstreamConnection, socket.socket],
) -> None:
    conn, upstream = pair
    p = pool()
    p.strict = True
    await exchange(conn, upstream, OK, body=b"abc")
    await p.release(conn, completed=True)
    assert p.idle == []
    assert conn.broken  # closed


async def test_an_unfinished_exchange_is_never_reused(
    pair: tuple[UpstreamConnection, socket.socket],
) -> None:
    conn, upstream = pair
    p = pool()
    await conn.send(h11.Request(method="GET", target="/", headers=[("Host", "a")]))
    upstream.recv(65536)
    upstream.sendall(OK)
    await conn.next_event()  # the response head, but we never finished sending
    assert not conn.reusable
    await p.release(conn, completed=True)
    assert p.idle == []

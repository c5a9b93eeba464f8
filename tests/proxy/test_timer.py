"""The upstream read timer (gateway/proxy/timer.py): every waiting read of a trio run under one
timer task instead of a cancel scope each, over real socket pairs with trio's mock clock.  The
timeouts as an exchange sees them (504, progress) are in test_client_exchange.py."""

from __future__ import annotations

import math
import socket
from collections.abc import Iterator

import h11
import pytest
import trio
import trio.testing

from gateway.core.upstream import Upstream
from gateway.errors import UpstreamTimeout
from gateway.proxy.client import UpstreamConnection, request_state
from gateway.proxy.timer import read_timer

UP = Upstream("127.0.0.1", 9)
HEAD = b"GET / HTTP/1.1\r\nhost: up\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.fixture
def sockets() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    pairs = [socket.socketpair() for _ in range(3)]
    yield pairs
    for a, b in pairs:
        a.close()
        b.close()


def connection(pair: tuple[socket.socket, socket.socket], timeout: float) -> UpstreamConnection:
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(pair[0]))
    return UpstreamConnection(stream, UP, read_timeout=timeout)


async def ask(conn: UpstreamConnection) -> None:
    await conn.send_request(HEAD, request_state(b"GET", None, False), end=True)


async def test_each_wait_ends_at_its_own_deadline(
    sockets: list[tuple[socket.socket, socket.socket]], autojump_clock: trio.testing.MockClock
) -> None:
    # A shorter timeout registered after a longer one: the timer, asleep until the longer
    # deadline, is woken for the shorter (a config reload can change read_timeout).
    conns = [connection(sockets[0], 10.0), connection(sockets[1], 1.0), connection(sockets[2], 4.0)]
    ended: dict[int, float] = {}
    start = trio.current_time()

    async def wait(i: int) -> None:
        await ask(conns[i])
        with pytest.raises(UpstreamTimeout):
            await conns[i].next_event()
        ended[i] = trio.current_time() - start
        assert conns[i].broken and conns[i].timed_out

    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(wait, i)
            await trio.testing.wait_all_tasks_blocked()  # registered in this order
    assert ended == pytest.approx({0: 10.0, 1: 1.0, 2: 4.0})
    assert read_timer().waits == {}


async def test_an_answered_wait_leaves_nothing_and_the_timer_sleeps_on(
    sockets: list[tuple[socket.socket, socket.socket]], autojump_clock: trio.testing.MockClock
) -> None:
    conn = connection(sockets[0], 60.0)
    timer = read_timer()
    looks: list[float] = []
    expire = timer.expire

    def counted(now: float) -> float:
        looks.append(now)
        return expire(now)

    timer.expire = counted  # type: ignore[method-assign]
    await trio.testing.wait_all_tasks_blocked()
    for _ in range(50):  # steady traffic
        await ask(conn)
        sockets[0][1].recv(65536)

        async def answer() -> None:
            await trio.sleep(0.01)
            sockets[0][1].sendall(OK)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer)
            while not isinstance(await conn.next_event(), h11.EndOfMessage):
                pass
        conn.start_next_cycle()
        assert timer.waits == {}
    # The timer looked once at start and once for the first wait (it had nothing to time
    # until then), then slept on: a wait costs a dict entry, not a wake-up of its own.
    assert len(looks) <= 2
    await trio.sleep(61)
    assert len(looks) <= 3
    assert timer.wake_at == math.inf  # nothing left to time: asleep until the next wait
    assert not conn.timed_out and not conn.broken


async def test_a_cancelled_wait_is_forgotten(
    sockets: list[tuple[socket.socket, socket.socket]], autojump_clock: trio.testing.MockClock
) -> None:
    conn = connection(sockets[0], 5.0)
    await ask(conn)
    with trio.move_on_after(1.0):
        await conn.next_event()
    assert read_timer().waits == {}
    await trio.sleep(10)
    assert not conn.timed_out  # its deadline passed with nobody waiting: nothing happened


async def test_progress_gives_another_window(
    sockets: list[tuple[socket.socket, socket.socket]], autojump_clock: trio.testing.MockClock
) -> None:
    conn = connection(sockets[0], 2.0)
    await ask(conn)
    sent = [0]

    async def feed() -> None:
        for _ in range(3):
            await trio.sleep(1.5)
            sent[0] += 1

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed)
        with pytest.raises(UpstreamTimeout):
            await conn.next_event(progress=lambda: sent[0])
    # windows end at 2, 4 and 6 s (progress in each), and at 8 s with none since 4.5 s
    assert trio.current_time() - start == pytest.approx(8.0)

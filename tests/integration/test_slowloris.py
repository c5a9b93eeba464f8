"""Slow and idle clients against the head and keep-alive deadlines, over real sockets.

A slowloris client opens a connection and sends its request head a byte at a time so that
it never completes; the gateway must keep serving everyone else, and end each such
connection with 408 once ``head_timeout`` has passed since its accept.  A connection that
says nothing is closed at the same deadline without a byte (there is nothing to answer), and
an idle keep-alive connection is closed after ``keepalive_timeout``.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import pytest
import trio

from tests.support.in_process import GatewayFactory, Running, wait_until
from tests.support.raw_http import raw_connection, request
from tests.support.raw_ws import errors, open_echo, rest_until_closed
from tests.support.timeouts import TIMEOUT
from tests.support.ws_frames import CLOSE, TEXT, masked_frame

HEAD_TIMEOUT = 1.0
KEEPALIVE_TIMEOUT = 0.4  # well below HEAD_TIMEOUT, so the two deadlines cannot be confused
GRACE = 0.5  # how late after its deadline the gateway may act
EARLY = 0.001  # float slack: we time from before connect(), and the server's accept follows
CONFIG: dict[str, object] = {
    "http.head_timeout": HEAD_TIMEOUT,
    "http.keepalive_timeout": KEEPALIVE_TIMEOUT,
    "server.max_connections": 1000,
}

SLOW_CLIENTS = 50
TRICKLE_INTERVAL = 0.2
# Long enough never to be complete before the deadline at one byte per TRICKLE_INTERVAL.
SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"z" * 100
PROMPT = 1.0  # each normal client's whole exchange


@dataclass
class Slow:
    connected: float
    sent: int = 0
    closed: float = math.inf
    received: bytes = b""


async def slowloris(gw: Running, clients: list[Slow]) -> None:
    """Trickle :data:`SLOW_HEAD` until the server closes; record what it sent and when."""
    slow = Slow(connected=trio.current_time())  # before connect(), so before the accept
    async with raw_connection(gw) as client:
        clients.append(slow)

        async def trickle() -> None:
            try:
                for i in range(len(SLOW_HEAD)):
                    await client.send(SLOW_HEAD[i : i + 1])
                    slow.sent += 1
                    await trio.sleep(TRICKLE_INTERVAL)
            except trio.BrokenResourceError:
                pass  # the server closed first

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle)
            slow.received = await rest_until_closed(client)
            slow.closed = trio.current_time()
            nursery.cancel_scope.cancel()


def status_and_headers(data: bytes) -> tuple[int, dict[str, str]]:
    head, separator, _ = data.partition(b"\r\n\r\n")
    assert separator, f"no complete response: {data!r}"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, status, _ = status_line.split(" ", 2)
    assert version == "HTTP/1.1", status_line
    fields = {}
    for line in lines:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return int(status), fields


async def healthz(gw: Running) -> None:
    async with raw_connection(gw) as client:
        await client.send(request("GET", "/healthz"))
        response = await client.read_response()
        assert (response.status, response.body) == (200, b"ok\n")


async def echo_round_trip(gw: Running) -> None:
    """Handshake, one echo, and the closing handshake (the server then closes TCP)."""
    async with open_echo(gw) as client:
        await client.send(masked_frame(TEXT, b"hello under siege"))
        assert await client.read_frame() == (TEXT, True, b"hello under siege")
        await client.send(masked_frame(CLOSE, struct.pack("!H", 1000)))
        assert await client.read_frame() == (CLOSE, True, struct.pack("!H", 1000))
        assert await rest_until_closed(client) == b""


async def test_slowloris_clients_get_408_and_do_not_starve_others(
    start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async with start_gateway(CONFIG) as gw:
        slow: list[Slow] = []
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                for _ in range(SLOW_CLIENTS):
                    nursery.start_soon(slowloris, gw, slow)
                await wait_until(
                    lambda: len(slow) == SLOW_CLIENTS and all(s.sent > 0 for s in slow),
                    "every slowloris client connected and trickling",
                )
                assert all(s.closed == math.inf for s in slow), "nobody answered yet"
                # Normal clients, while all of them trickle.
                for _ in range(10):
                    with trio.fail_after(PROMPT):
                        await healthz(gw)
                with trio.fail_after(PROMPT):
                    await echo_round_trip(gw)
                assert trio.current_time() < min(s.connected for s in slow) + HEAD_TIMEOUT, (
                    "the normal clients must have been served while the slow ones trickled"
                )
        assert len(slow) == SLOW_CLIENTS
        for s in slow:
            status, fields = status_and_headers(s.received)
            assert status == 408, s.received
            assert fields.get("connection") == "close", s.received
            lifetime = s.closed - s.connected
            assert HEAD_TIMEOUT - EARLY <= lifetime <= HEAD_TIMEOUT + GRACE, lifetime
            assert s.sent < len(SLOW_HEAD), "the head was still incomplete"
    assert errors(caplog) == []


async def test_silent_connection_is_closed_at_the_head_deadline_without_a_byte(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(CONFIG) as gw:
        with trio.fail_after(TIMEOUT):
            connected = trio.current_time()
            async with raw_connection(gw) as client:
                assert await rest_until_closed(client) == b"", "no 408: nothing had arrived"
                lifetime = trio.current_time() - connected
        assert HEAD_TIMEOUT - EARLY <= lifetime <= HEAD_TIMEOUT + GRACE, lifetime


async def test_idle_keep_alive_connection_is_closed_after_keepalive_timeout(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(CONFIG) as gw:
        with trio.fail_after(TIMEOUT):
            async with raw_connection(gw) as client:
                asked = trio.current_time()  # the idle deadline starts after the answer
                await client.send(request("GET", "/healthz"))
                response = await client.read_response()
                assert (response.status, response.header("connection")) == (200, None)
                assert await rest_until_closed(client) == b"", "closed without a response"
                idle = trio.current_time() - asked
        # Not HEAD_TIMEOUT: the keep-alive deadline replaces the head deadline between requests.
        assert KEEPALIVE_TIMEOUT - EARLY <= idle <= KEEPALIVE_TIMEOUT + GRACE, idle
        assert idle < HEAD_TIMEOUT


async def test_a_started_second_request_gets_head_timeout_from_its_first_byte(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(CONFIG) as gw:
        with trio.fail_after(TIMEOUT):
            async with raw_connection(gw) as client:
                await client.send(request("GET", "/healthz"))
                assert (await client.read_response()).status == 200
                await trio.sleep(KEEPALIVE_TIMEOUT / 2)
                first_byte = trio.current_time()
                await client.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                response = await client.read_response()
                waited = trio.current_time() - first_byte
                assert (response.status, response.header("connection")) == (408, "close")
                assert await rest_until_closed(client) == b""
        # The head deadline, counted from the first byte, not the keep-alive deadline.
        assert HEAD_TIMEOUT - EARLY <= waited <= HEAD_TIMEOUT + GRACE, waited

"""Capacity and shutdown over real sockets: the connection caps (server-wide and per mount),
surviving EMFILE in the accept loop (a subprocess with a low ``RLIMIT_NOFILE``), and the
details of a graceful shutdown."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AsyncExitStack

import pytest
import trio
import trio_websocket

from tests.support.gateway_config import config_data
from tests.support.gateway_process import GatewayProcess
from tests.support.in_process import GatewayFactory, serve_with_shutdown, wait_until, ws_client
from tests.support.raw_http import (
    RawClient,
    handshake,
    new_key,
    raw_connection,
    request,
    upgrade_headers,
)
from tests.support.timeouts import TIMEOUT
from tests.support.ws_frames import CLOSE, TEXT

# --------------------------------------------------------------------------- helpers


async def health(client: RawClient, path: str = "/healthz") -> int:
    await client.send(request("GET", path))
    return (await client.read_response()).status


# --------------------------------------------------------------------------- caps


async def test_server_max_connections_refuses_with_503_then_recovers(
    start_gateway: GatewayFactory,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            start_gateway({"server.max_connections": 5}) as gw,
            AsyncExitStack() as stack,
        ):
            idle = [await stack.enter_async_context(raw_connection(gw)) for _ in range(5)]
            await wait_until(lambda: gw.app.connections == 5, "5 connections accepted")

            async with raw_connection(gw) as sixth:
                response = await sixth.read_response()
                assert (response.status, response.header("retry-after")) == (503, "1")
                assert response.header("connection") == "close"
                assert response.body == b"server at capacity.\n"
                assert await sixth.read_until_eof() == b""  # and it was closed
            assert gw.app.connections == 5  # the refused one never counted

            # The five were not disturbed: one of them is served now.
            assert await health(idle[0]) == 200
            await idle[4].stream.aclose()
            await wait_until(lambda: gw.app.connections == 4, "a slot freed")
            async with raw_connection(gw) as newcomer:
                assert await health(newcomer) == 200
                assert await health(newcomer, "/readyz") == 200


async def test_mount_max_connections_refuses_handshake_other_mounts_accept(
    start_gateway: GatewayFactory,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with start_gateway({"plugins.echo.max_connections": 2}) as gw:
            echo = gw.app.mounts["echo"].mount
            async with ws_client(gw, "/echo") as one:
                async with ws_client(gw, "/echo") as two:
                    await wait_until(lambda: len(echo) == 2, "two echo clients registered")
                    async with raw_connection(gw) as third:
                        await third.send(request("GET", "/echo", upgrade_headers(new_key())))
                        response = await third.read_response()
                        assert (response.status, response.header("retry-after")) == (503, "1")
                        assert response.body == b"endpoint at capacity\n"
                        assert await third.read_until_eof() == b""
                    assert len(echo) == 2
                    async with ws_client(gw, "/foo") as foo:  # another mount: its own cap
                        welcome = await foo.get_message()
                        assert isinstance(welcome, str)
                        assert '"mount": "foo"' in welcome
                    for ws in (one, two):
                        await ws.send_message("still here")
                        assert await ws.get_message() == "still here"
                await wait_until(lambda: len(echo) == 1, "a slot freed on /echo")
                async with ws_client(gw, "/echo") as three:
                    await three.send_message("third")
                    assert await three.get_message() == "third"


async def test_mount_cap_holds_for_concurrent_handshakes(start_gateway: GatewayFactory) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            start_gateway({"plugins.echo.max_connections": 2}) as gw,
            AsyncExitStack() as stack,
        ):
            clients = [await stack.enter_async_context(raw_connection(gw)) for _ in range(6)]
            await wait_until(lambda: gw.app.connections == 6, "six connections accepted")
            # Six handshakes arriving together (a reconnect storm after a deploy).
            async with trio.open_nursery() as nursery:
                for client in clients:
                    handshake_bytes = request("GET", "/echo", upgrade_headers(new_key()))
                    nursery.start_soon(client.send, handshake_bytes)
            statuses = sorted([(await client.read_response()).status for client in clients])
            assert statuses == [101, 101, 503, 503, 503, 503]
            assert len(gw.app.mounts["echo"].mount) == 2


# --------------------------------------------------------------------------- EMFILE

FD_LIMIT = 64
EMFILE_LOG = re.compile(r"accept failed \(EMFILE\); retrying in 0\.1s")


async def _wait_for(
    predicate: Callable[[], bool], what: str, timeout: float, log: GatewayProcess
) -> None:
    deadline = trio.current_time() + timeout
    while not predicate():
        if trio.current_time() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}\n{log.log()}")
        await trio.sleep(0.02)


async def test_accept_loop_survives_emfile() -> None:
    gateway = GatewayProcess.serve(config_data({"http.head_timeout": 60.0}), fd_limit=FD_LIMIT)
    try:
        await trio.to_thread.run_sync(gateway.wait_ready)
        host, port = gateway.host, gateway.port
        with trio.fail_after(30):
            async with AsyncExitStack() as stack:
                clients: list[RawClient] = []
                # More connections than the server has descriptors: the kernel completes the
                # TCP handshakes (the backlog), the server's accept() runs out.
                for _ in range(FD_LIMIT + 16):
                    stream = await trio.open_tcp_stream(host, port)
                    await stack.enter_async_context(stream)
                    clients.append(RawClient(stream))
                await _wait_for(
                    lambda: gateway.count(EMFILE_LOG) >= 2, "accept failed (EMFILE)", 10, gateway
                )
                assert gateway.poll() is None, gateway.log()
                # Out of descriptors, the connections it already has are still served.
                assert await health(clients[0]) == 200
                assert gateway.count(EMFILE_LOG) >= 2
            # Every client closed: the server gets its descriptors back.
            started = trio.current_time()
            async with await trio.open_tcp_stream(host, port) as stream:
                fresh = RawClient(stream)
                with trio.fail_after(3):
                    assert await health(fresh) == 200
                    assert await health(fresh, "/readyz") == 200
            assert trio.current_time() - started < 3
            assert gateway.poll() is None, gateway.log()
            assert not any("Traceback" in line for line in gateway.lines), gateway.log()
    finally:
        code = await trio.to_thread.run_sync(gateway.stop)
    assert code == 0, gateway.log()


# --------------------------------------------------------------------------- shutdown


async def read_frames_until_eof(client: RawClient) -> list[tuple[int, bytes]]:
    frames: list[tuple[int, bytes]] = []
    while True:
        if not client.buffer and not await client._fill():
            return frames
        opcode, _fin, payload = await client.read_frame()
        frames.append((opcode, payload))


async def test_graceful_shutdown(nursery: trio.Nursery) -> None:
    shutdown_timeout = 2.0
    served = await serve_with_shutdown(nursery, {"server.shutdown_timeout": shutdown_timeout})
    gw, app = served.running, served.running.app
    echo = app.mounts["echo"].mount
    with trio.fail_after(TIMEOUT):
        async with (
            raw_connection(gw) as keep,
            raw_connection(gw) as late,
            raw_connection(gw) as stuck,
            ws_client(gw, "/echo") as ws,
        ):
            assert await health(keep, "/readyz") == 200  # keep-alive: stays open
            await handshake(stuck, "/echo")  # a WebSocket that will never answer the Close
            await ws.send_message("before")
            assert await ws.get_message() == "before"
            await wait_until(lambda: len(echo) == 2, "both WebSockets registered")

            # A handshake in progress when the drain starts: half of its head has arrived.
            key = new_key()
            late_request = request("GET", "/echo", upgrade_headers(key))
            await late.send(late_request[:20])
            await trio.sleep(0.05)

            # Messages queued for every client, then the shutdown, in the same tick.
            for i in range(3):
                assert echo.broadcast(f"queued {i}") == 2
            served.shutdown.set()
            started = trio.current_time()
            await wait_until(lambda: app.draining, "the drain started")

            # Open WebSockets: the queued messages first, then 1001.
            assert [await ws.get_message() for _ in range(3)] == [f"queued {i}" for i in range(3)]
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason is not None
            assert (info.value.reason.code, info.value.reason.reason) == (
                1001,
                "server shutting down",
            )

            # An idle keep-alive connection is closed at once, without a response (with no
            # drain_delay; test_drain.py covers readiness during a delay).
            assert await keep.read_until_eof() == b""

            # The handshake that was in progress completes and is refused.
            await late.send(late_request[20:])
            refused = await late.read_response()
            assert (refused.status, refused.header("retry-after")) == (503, "5")
            assert await late.read_until_eof() == b""

            # The listener is closed: no new connections.
            with pytest.raises(OSError, match="connect"):
                await trio.open_tcp_stream(gw.host, gw.port)

            # The WebSocket that never answers holds the drain open until shutdown_timeout,
            # no longer.
            await served.stopped.wait()
            elapsed = trio.current_time() - started
            assert elapsed < shutdown_timeout + 1.0, elapsed
            assert app.connections == 0

            frames = await read_frames_until_eof(stuck)
            assert frames[:3] == [(TEXT, f"queued {i}".encode()) for i in range(3)]
            assert frames[3:] == [(CLOSE, b"\x03\xe9server shutting down")]


async def test_drain_delay_keeps_accepting_but_refuses(nursery: trio.Nursery) -> None:
    served = await serve_with_shutdown(nursery, {"server.drain_delay": 1.0})
    gw, app = served.running, served.running.app
    with trio.fail_after(TIMEOUT):
        async with ws_client(gw, "/echo") as ws:
            served.shutdown.set()
            started = trio.current_time()
            await wait_until(lambda: app.draining, "the drain started")
            # During drain_delay new connections are still accepted, for the load balancer
            # to see /readyz fail; new handshakes are refused; open WebSockets still work.
            async with raw_connection(gw) as probe:
                await probe.send(request("GET", "/readyz"))
                response = await probe.read_response()
                assert (response.status, response.header("connection")) == (503, "close")
            async with raw_connection(gw) as late:
                await late.send(request("GET", "/echo", upgrade_headers(new_key())))
                refused = await late.read_response()
                assert (refused.status, refused.header("retry-after")) == (503, "5")
            await ws.send_message("during the delay")
            assert await ws.get_message() == "during the delay"
            assert not served.stopped.is_set()
            # Then: 1001, and the listener closes.
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason is not None
            assert info.value.reason.code == 1001
            assert trio.current_time() - started >= 0.9
            await served.stopped.wait()
            with pytest.raises(OSError, match="connect"):
                await trio.open_tcp_stream(gw.host, gw.port)


async def test_idle_connections_do_not_delay_shutdown(nursery: trio.Nursery) -> None:
    served = await serve_with_shutdown(nursery, {"server.shutdown_timeout": 2.5})
    gw = served.running
    with trio.fail_after(TIMEOUT):
        async with raw_connection(gw) as keep, raw_connection(gw) as fresh:
            assert await health(keep) == 200  # now idle between requests (keep-alive)
            await wait_until(lambda: gw.app.connections == 2, "both connections accepted")
            served.shutdown.set()
            started = trio.current_time()
            await served.stopped.wait()
            # Nobody is in the middle of a request: nothing to wait for.
            assert trio.current_time() - started < 1.0
            assert await keep.read_until_eof() == b""
            assert await fresh.read_until_eof() == b""

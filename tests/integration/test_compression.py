"""permessage-deflate on the wire: interop with the `websockets` client, RSV1 frames read by
hand, and a compression bomb stopped at the message limit."""

from __future__ import annotations

import tracemalloc
import zlib
from contextlib import AsyncExitStack

import pytest
import trio
from websockets.sync.client import connect

from tests.support.in_process import GatewayFactory, Running, wait_until
from tests.support.raw_http import RawClient, new_key, raw_connection, request, upgrade_headers
from tests.support.timeouts import TIMEOUT
from tests.support.ws_frames import BINARY, RSV1, TEXT, masked_frame
from tests.support.ws_upstream import scripted_upstream

MiB = 1024 * 1024
# README, "Limits and security", at the defaults: the engine holds at most
# inbound_queue_bytes + 4 x max_message_size + 128 KiB of what a client sent; the relay adds
# the message it is sending upstream and its encoded frame (2 x max_message_size).
PER_CONNECTION = 1 * MiB + 4 * MiB + 128 * 1024 + 2 * MiB
DEFLATE_ECHO = {"plugins.echo.compression": "deflate", "plugins.echo.max_message_size": 100_000}


def deflate(data: bytes) -> bytes:
    z = zlib.compressobj(wbits=-15)
    return (z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH))[:-4]


async def test_websockets_client_negotiates_and_round_trips(start_gateway: GatewayFactory) -> None:
    async with start_gateway(DEFLATE_ECHO) as gw:

        def client() -> tuple[str | None, str, bytes]:
            with connect(gw.ws_url("/echo"), compression="deflate", open_timeout=TIMEOUT) as ws:
                assert ws.response is not None
                extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
                ws.send("hello " * 2000)
                text = ws.recv(timeout=TIMEOUT)
                ws.send(bytes(range(256)) * 10)
                data = ws.recv(timeout=TIMEOUT)
                assert isinstance(text, str)
                assert isinstance(data, bytes)
                return extensions, text, data

        extensions, text, data = await trio.to_thread.run_sync(client)
    assert extensions is not None
    assert extensions.startswith("permessage-deflate")
    assert text == "hello " * 2000
    assert data == bytes(range(256)) * 10


async def test_compression_is_off_unless_the_mount_opts_in(start_gateway: GatewayFactory) -> None:
    async with start_gateway() as gw:

        def client() -> str | None:
            with connect(gw.ws_url("/echo"), compression="deflate", open_timeout=TIMEOUT) as ws:
                assert ws.response is not None
                return ws.response.headers.get("Sec-WebSocket-Extensions")

        assert await trio.to_thread.run_sync(client) is None


async def test_server_frames_are_compressed_with_rsv1(start_gateway: GatewayFactory) -> None:
    async with start_gateway(DEFLATE_ECHO) as gw, raw_connection(gw) as client:
        key = new_key()
        headers = [*upgrade_headers(key), ("Sec-WebSocket-Extensions", "permessage-deflate")]
        with trio.fail_after(TIMEOUT):
            await client.send(request("GET", "/echo", headers))
            response = await client.read_response()
            assert response.status == 101
            assert response.header("sec-websocket-extensions") == "permessage-deflate"
            message = b"compress me " * 500
            await client.send(masked_frame(BINARY, deflate(message), rsv=RSV1))
            b0, b1 = await client.receive_exactly(2)
            assert b0 == 0xC2  # the echo comes back compressed
            length = b1 & 0x7F
            if length == 126:
                length = int.from_bytes(await client.receive_exactly(2), "big")
            body = await client.receive_exactly(length)
            assert len(body) < len(message) // 10
            assert zlib.decompressobj(-15).decompress(body + b"\x00\x00\xff\xff") == message


async def test_a_compression_bomb_is_closed_with_1009(start_gateway: GatewayFactory) -> None:
    async with start_gateway(DEFLATE_ECHO) as gw, raw_connection(gw) as client:
        headers = [*upgrade_headers(new_key()), ("Sec-WebSocket-Extensions", "permessage-deflate")]
        with trio.fail_after(TIMEOUT):
            await client.send(request("GET", "/echo", headers))
            assert (await client.read_response()).status == 101
            bomb = deflate(b"\x00" * 50_000_000)  # ~50 KB on the wire, 50 MB inflated
            assert len(bomb) < 60_000
            await client.send(masked_frame(BINARY, bomb, rsv=RSV1))
            opcode, _fin, payload = await client.read_frame()
            assert opcode == 0x8
            assert int.from_bytes(payload[:2], "big") == 1009


# -- issue 9, item 4: what compression lets a client make us do is bounded -------------------

BOMB = deflate(b"\x00" * 1_000_000)  # ~1 KB on the wire, ~1 MB inflated
STREAM = deflate(b'{"type": "state", "x": 1, "y": 2, "entities": []}' * 1200)  # ~60 KB inflated


async def open_deflate(client: RawClient, path: str) -> None:
    headers = [*upgrade_headers(new_key()), ("Sec-WebSocket-Extensions", "permessage-deflate")]
    await client.send(request("GET", path, headers))
    response = await client.read_response()
    assert response.status == 101
    assert response.header("sec-websocket-extensions") is not None


async def close_code(client: RawClient) -> int | None:
    """Read (and drop) server frames until its Close; its code (``None``: EOF first)."""
    try:
        while True:
            opcode, _fin, payload = await client.read_frame()
            if opcode == 0x8:
                return int.from_bytes(payload[:2], "big")
    except AssertionError:  # EOF
        return None


async def health_latency(gw: Running, stop: trio.Event) -> float:
    """Poll ``/healthz`` on a fresh connection each time until ``stop``; the slowest answer."""
    worst = 0.0
    while not stop.is_set():
        start = trio.current_time()
        async with raw_connection(gw) as client:
            await client.send(request("GET", "/healthz", [("Connection", "close")]))
            assert (await client.read_response()).status == 200
        worst = max(worst, trio.current_time() - start)
        await trio.sleep(0.02)
    return worst


@pytest.mark.parametrize("payload", [BOMB, STREAM], ids=["bombs", "stream"])
async def test_a_client_inflating_too_fast_is_closed_1008_and_others_stay_served(
    start_gateway: GatewayFactory, payload: bytes
) -> None:
    code: list[int | None] = []
    worst: list[float] = []
    sent = 0
    async with (
        start_gateway({"plugins.echo.compression": "deflate"}) as gw,
        raw_connection(gw) as attacker,
    ):
        with trio.fail_after(TIMEOUT):
            await open_deflate(attacker, "/echo")
            stop = trio.Event()
            async with trio.open_nursery() as nursery:

                async def watch() -> None:
                    code.append(await close_code(attacker))
                    stop.set()

                async def probe() -> None:
                    worst.append(await health_latency(gw, stop))

                nursery.start_soon(watch)
                nursery.start_soon(probe)
                frame = masked_frame(BINARY, payload, rsv=RSV1)
                # 300 MB inflated (bombs) or 30 MB (stream): far past any sane budget.
                for sent in range(1, 301):  # noqa: B007  (reported on failure)
                    if stop.is_set():
                        break
                    try:
                        await attacker.send(frame)
                    except trio.BrokenResourceError:
                        break  # closed (and the rest refused): the watcher has the code
                    await trio.lowlevel.checkpoint()
                with trio.move_on_after(3):
                    await stop.wait()
                stop.set()
    assert code == [1008], f"after {sent} messages"
    assert worst and worst[0] < 1.0, f"/healthz took {worst[0]:.2f} s during the attack"


def relay_deflate(url: str, **websocket: object) -> dict[str, object]:
    table: dict[str, object] = {
        "path": "/up",
        "use": "plugins.relay:Relay",
        "options": {"url": url},
        "compression": "deflate",
    }
    table.update(websocket)
    return {"plugins.up": table}


async def test_memory_stays_bounded_when_a_relay_upstream_stops_reading(
    start_gateway: GatewayFactory,
) -> None:
    """Clients of a relay + deflate mount whose upstream never reads send compression bombs
    (40 KB on the wire, 40 MB inflated each): what the gateway holds for them stays under the
    documented per-connection figure (README, "Limits and security"): the queues fill, TCP
    pushes back, or the inflate budget closes them (1008); nothing grows."""
    clients = 4
    codes: list[int | None] = []
    async with (
        scripted_upstream("stalled") as upstream,
        start_gateway(relay_deflate(upstream.url)) as gw,
        AsyncExitStack() as stack,
    ):
        attackers = [await stack.enter_async_context(raw_connection(gw)) for _ in range(clients)]
        with trio.fail_after(TIMEOUT):
            for attacker in attackers:
                await open_deflate(attacker, "/up")
            await wait_until(lambda: upstream.connections == clients, "the relays connected")
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]

            async def attack(client: RawClient) -> None:
                with trio.move_on_after(1.5):
                    for _ in range(40):  # 40 MB inflated, 40 KB on the wire
                        await client.send(masked_frame(BINARY, BOMB, rsv=RSV1))
                    codes.append(await close_code(client))
                    return
                codes.append(None)  # still open after 1.5 s: pushed back, not closed

            async with trio.open_nursery() as nursery:
                for attacker in attackers:
                    nursery.start_soon(attack, attacker)
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
    print(f"peak per connection: {peak / clients / 1024:.0f} KiB, codes {codes}")
    assert peak < clients * PER_CONNECTION
    assert set(codes) <= {None, 1008}


async def test_a_handler_that_does_not_read_holds_inbound_queue_bytes_not_what_inflates(
    start_gateway: GatewayFactory,
) -> None:
    """200 compressed 100 KB messages in one burst (20 MB inflated, ~20 KB on the wire) to a
    handler that reads nothing yet: the gateway inflates only up to ``inbound_queue_bytes``
    (the rest waits compressed, then unread in the kernel); once the handler reads, every
    message arrives, in order."""
    from tests.integration.limit_plugins import Tap

    count, size, room = 200, 100_000, 300_000
    changes = {
        "plugins.tap.path": "/tap",
        "plugins.tap.use": "tests.integration.limit_plugins:Tap",
        "plugins.tap.compression": "deflate",
        "plugins.tap.inbound_queue": 1000,  # the byte bound is the one that matters here
        "plugins.tap.inbound_queue_bytes": room,
        "plugins.tap.max_inflate_rate": 0,
    }
    z = zlib.compressobj(wbits=-15)
    burst = b""
    for i in range(count):
        body = z.compress(bytes([i]) * size) + z.flush(zlib.Z_SYNC_FLUSH)
        burst += masked_frame(BINARY, body[:-4], rsv=RSV1)
    async with start_gateway(changes) as gw, raw_connection(gw) as client:
        tap = gw.app.mounts["tap"].plugin.instance
        assert isinstance(tap, Tap)
        with trio.fail_after(TIMEOUT):
            await open_deflate(client, "/tap")
            await wait_until(lambda: tap.parked == 1, "the handler waits for the tap")
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                await client.send(burst)
                await trio.sleep(0.5)  # the reader task fills the inbox, then stops
                held = tracemalloc.get_traced_memory()[1] - base
            finally:
                tracemalloc.stop()
            tap.opened.set()
            await client.send(masked_frame(TEXT, b"total?"))
            opcode, _fin, payload = await client.read_frame()
    assert (opcode, payload) == (0x1, str(count * size).encode())
    # inbound_queue_bytes + one message crossing it + one being inflated, and the burst's
    # compressed bytes: far from the 20 MB it inflates to.
    assert held < room + 2 * size + len(burst) + 256 * 1024, held

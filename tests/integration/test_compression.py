"""permessage-deflate on the wire: interop with the `websockets` client, RSV1 frames read by
hand, and a compression bomb stopped at the message limit."""

from __future__ import annotations

import zlib

import trio
from websockets.sync.client import connect

from tests.integration.conftest import (
    TIMEOUT,
    GatewayFactory,
    new_key,
    raw_connection,
    request,
    upgrade_headers,
)

DEFLATE_ECHO = {"plugins.echo.compression": "deflate", "plugins.echo.max_message_size": 100_000}


def deflate(data: bytes) -> bytes:
    z = zlib.compressobj(wbits=-15)
    return (z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH))[:-4]


def masked(first: int, payload: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    n = len(payload)
    head = bytes([first]) + (
        bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    )
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


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
            await client.send(masked(0xC2, deflate(message)))  # FIN + RSV1 + binary
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
            await client.send(masked(0xC2, bomb))
            opcode, _fin, payload = await client.read_frame()
            assert opcode == 0x8
            assert int.from_bytes(payload[:2], "big") == 1009

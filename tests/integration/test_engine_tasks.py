"""The engine's reading paths over real sockets (gateway.ws.connection's module docstring):
an idle handler reads its socket itself, straight from the file descriptor; a handler that
never reads gets a reader task; many frames in one segment and frames cut anywhere arrive the
same (the byte-by-byte cases of the frame corpus are in test_malformed_frames.py)."""

from __future__ import annotations

import struct

import trio
import trio.testing

from gateway.ws.connection import ATTEND_AFTER
from tests.support.in_process import GatewayFactory, Running
from tests.support.raw_http import new_key, raw_connection, request, upgrade_headers
from tests.support.raw_ws import close_code, open_echo, rest_until_closed
from tests.support.tasks import helper_tasks
from tests.support.timeouts import TIMEOUT
from tests.support.ws_frames import BINARY, CLOSE, PING, PONG, TEXT, masked_frame


async def test_idle_echo_connections_have_no_helper_tasks(gateway: Running) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_echo(gateway) as a, open_echo(gateway) as b:
            for client in (a, b):
                await client.send(masked_frame(TEXT, b"hello"))
                assert await client.read_frame() == (TEXT, True, b"hello")
            await trio.sleep(ATTEND_AFTER * 4)  # past the attendant's checks
            assert helper_tasks() == []


async def test_many_frames_and_pings_in_one_segment(gateway: Running) -> None:
    burst = b"".join(
        masked_frame(TEXT, f"m{i}".encode())
        + (masked_frame(PING, f"p{i}".encode()) if i % 5 == 0 else b"")
        for i in range(60)
    )
    with trio.fail_after(TIMEOUT):
        async with open_echo(gateway) as client:
            await client.send(burst)  # one write: the server reads it all at once
            got = [await client.read_frame() for _ in range(60 + 12)]
            # Pongs go out as soon as a batch is parsed, echoes as the handler sends them:
            # each kind stays in order.
            assert [p for op, _, p in got if op == TEXT] == [f"m{i}".encode() for i in range(60)]
            assert [p for op, _, p in got if op == PONG] == [
                f"p{i}".encode() for i in range(0, 60, 5)
            ]


async def test_a_frame_cut_across_segments_is_reassembled(gateway: Running) -> None:
    frame = masked_frame(TEXT, "é, cut anywhere".encode())
    with trio.fail_after(TIMEOUT):
        async with open_echo(gateway) as client:
            for cut in (1, 2, 6, len(frame) - 1):
                await client.send(frame[:cut])
                await trio.sleep(0.02)  # the server waits for the rest on its socket
                await client.send(frame[cut:])
                assert await client.read_frame() == (TEXT, True, "é, cut anywhere".encode())


async def test_a_handler_that_never_reads_answers_pings_and_close(
    start_gateway: GatewayFactory,
) -> None:
    changes = {
        "plugins.deaf.path": "/deaf",
        "plugins.deaf.use": "tests.integration.wire_plugins:deaf",
    }
    async with start_gateway(changes) as gw, raw_connection(gw) as client:
        with trio.fail_after(TIMEOUT):
            await client.send(request("GET", "/deaf", upgrade_headers(new_key())))
            assert (await client.read_response()).status == 101
            await client.send(masked_frame(PING, b"hi"))
            while (frame := await client.read_frame())[0] != PONG:
                assert frame == (TEXT, True, b"tick")
            assert frame == (PONG, True, b"hi")
            assert any(name.endswith("_reader") for name in helper_tasks())
            await client.send(masked_frame(CLOSE, struct.pack("!H", 1000)))
            while (frame := await client.read_frame())[0] == TEXT:
                pass
            assert frame[0] == CLOSE and struct.unpack("!H", frame[2][:2]) == (1000,)
            assert await rest_until_closed(client) == b""  # the server closed TCP


async def test_the_reader_task_goes_once_the_handler_reads_again(gateway: Running) -> None:
    """/boom's handler reads like an echo: a reader task may appear while it is busy sending,
    never stays once it waits again."""
    with trio.fail_after(TIMEOUT):
        async with open_echo(gateway) as client:
            big = b"x" * (900 * 1024)  # under max_message_size; 8 of them fill the buffers
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.send, masked_frame(BINARY, big) * 8)
                await trio.sleep(ATTEND_AFTER * 6)  # the handler is stuck in send_message
                assert [n for n in helper_tasks() if n.endswith("_reader")] != []
                for _ in range(8):
                    opcode, fin, payload = await client.read_frame()
                    assert (opcode, fin, len(payload)) == (0x2, True, len(big))
            await client.send(masked_frame(TEXT, b"again"))
            assert await client.read_frame() == (TEXT, True, b"again")
            await trio.sleep(ATTEND_AFTER * 2)
            assert [n for n in helper_tasks() if n.endswith("_reader")] == []
            await client.send(masked_frame(CLOSE, struct.pack("!H", 1000)))
            assert await close_code(client) == 1000

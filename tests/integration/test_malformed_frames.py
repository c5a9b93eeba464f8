"""The malformed-frame corpus of tests/ws/test_parser.py, through the real server.

Each entry goes over a real socket to ``/echo``: a raw handshake (the 101 checked), one valid
echo (the connection is live), then the bad bytes, in one write and one byte per write.  The
server must answer with a Close frame carrying the corpus's code and then close TCP.
"""

from __future__ import annotations

import struct
from contextlib import AsyncExitStack

import pytest
import trio

from tests.support.in_process import Running, wait_until
from tests.support.raw_http import RawClient
from tests.support.raw_ws import MODES, Mode, close_code, errors, open_echo, rest_until_closed, send
from tests.support.timeouts import TIMEOUT
from tests.support.ws_frames import BINARY, CLOSE, CORPUS, TEXT, masked_frame


async def echo(client: RawClient, opcode: int, payload: bytes) -> None:
    """One round trip: the echo plugin sends the message back, unmasked, in one frame."""
    await client.send(masked_frame(opcode, payload))
    assert await client.read_frame() == (opcode, True, payload)


def _params() -> list[object]:
    return [
        pytest.param(data, code, mode, id=f"{name}-{mode}")
        for name, data, code in CORPUS
        for mode in MODES
    ]


def test_the_corpus_is_there() -> None:
    assert len(CORPUS) >= 30
    assert {code for _, _, code in CORPUS} == {1002, 1007, 1009}


@pytest.mark.parametrize(("data", "code", "mode"), _params())
async def test_malformed_frame_fails_the_connection(
    gateway: Running, caplog: pytest.LogCaptureFixture, data: bytes, code: int, mode: Mode
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_echo(gateway) as client:
            await echo(client, TEXT, b"before")
            await send(client, data, mode)
            assert await close_code(client) == code
            # §7.1.7: after failing the connection the server closes TCP, sending nothing more.
            assert await rest_until_closed(client) == b""
    assert errors(caplog) == []


async def test_echo_works_while_other_connections_are_failed(
    gateway: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """Every corpus entry on its own connection, each stopped one byte short (most are then
    still undecided); then a good connection is opened, and it echoes while the last bytes go
    out and the bad ones fail."""
    codes: dict[str, int] = {}
    echoed: list[int] = []

    async def fail(name: str, client: RawClient, last: bytes) -> None:
        await send(client, last, "one write")
        codes[name] = await close_code(client)
        assert await rest_until_closed(client) == b""

    async def chat(client: RawClient) -> None:
        for i in range(20):
            opcode = TEXT if i % 2 else BINARY
            await echo(client, opcode, f"message {i}".encode())
            echoed.append(i)

    with trio.fail_after(TIMEOUT):
        async with AsyncExitStack() as stack:
            bad = [await stack.enter_async_context(open_echo(gateway)) for _ in CORPUS]
            for client, (_, data, _) in zip(bad, CORPUS, strict=True):
                await send(client, data[:-1], "one write")
            good = await stack.enter_async_context(open_echo(gateway))
            await echo(good, TEXT, b"opened while the others are half-sent")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(chat, good)
                for client, (name, data, _) in zip(bad, CORPUS, strict=True):
                    nursery.start_soon(fail, name, client, data[-1:])
            assert codes == {name: code for name, _, code in CORPUS}
            assert echoed == list(range(20))
            await echo(good, TEXT, "still here: é".encode())
            await good.send(masked_frame(CLOSE, struct.pack("!H", 1000) + b"bye"))
            assert await close_code(good) == 1000
            assert await rest_until_closed(good) == b""
    assert errors(caplog) == []


async def test_a_peer_that_drops_tcp_without_a_close_frame_is_not_a_crash(
    gateway: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """The rudest end a frame stream can have: EOF with no Close frame (1006, §7.1.5)."""
    echo_mount = gateway.app.mounts["echo"].mount
    with trio.fail_after(TIMEOUT):
        async with open_echo(gateway) as client:
            await echo(client, TEXT, b"and now I vanish")
            assert len(echo_mount) == 1
        await wait_until(lambda: len(echo_mount) == 0, "the mount forgot the vanished client")
        # The server counts a connection closed only after its task is done (and has logged).
        await wait_until(lambda: gateway.app.connections == 0, "the connection task ended")
    assert errors(caplog) == []

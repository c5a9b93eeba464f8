"""A raw client's side of the hostile-input tests (tests/integration/test_malformed_*.py,
test_slowloris.py, test_engine_tasks.py): bytes sent in one write or byte by byte, what the
server still sends before it closes, a checked raw WebSocket to ``/echo`` and its Close code,
and the ERROR lines the gateway logged (there must be none)."""

from __future__ import annotations

import logging
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

import pytest
import trio

from tests.support.in_process import Running
from tests.support.raw_http import (
    RawClient,
    expected_accept,
    new_key,
    raw_connection,
    request,
    upgrade_headers,
)
from tests.support.ws_frames import CLOSE

Mode = Literal["one write", "byte by byte"]
MODES: tuple[Mode, ...] = ("one write", "byte by byte")


async def send(client: RawClient, data: bytes, mode: Mode) -> None:
    """Send ``data`` in one write or one byte per write.  The server may answer and close
    before the last byte (a line that is already too long): then the rest cannot be sent."""
    try:
        if mode == "one write":
            await client.send(data)
        else:
            for i in range(len(data)):
                await client.send(data[i : i + 1])
    except trio.BrokenResourceError:
        pass


async def rest_until_closed(client: RawClient) -> bytes:
    """What the server still sends before it closes.  A reset counts as a close: when the
    server closes with bytes of ours unread, the kernel sends RST instead of FIN."""
    try:
        return await client.read_until_eof()
    except trio.BrokenResourceError:
        rest = bytes(client.buffer)
        client.buffer.clear()
        return rest


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the gateway logged at ERROR or above (a traceback means it thinks it crashed)."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@asynccontextmanager
async def open_echo(gw: Running) -> AsyncIterator[RawClient]:
    """A raw WebSocket connection to ``/echo`` whose 101 has been checked."""
    key = new_key()
    async with raw_connection(gw) as client:
        await client.send(request("GET", "/echo", upgrade_headers(key)))
        response = await client.read_response()
        assert response.status == 101, response
        assert (response.header("upgrade") or "").lower() == "websocket", response
        assert "upgrade" in (response.header("connection") or "").lower(), response
        assert response.header("sec-websocket-accept") == expected_accept(key), response
        assert response.header("sec-websocket-extensions") is None, response
        assert client.buffer == b"", "nothing may follow the 101 before we speak"
        yield client


async def close_code(client: RawClient) -> int:
    """The server's next frame must be a Close; its status code (the reason is UTF-8)."""
    opcode, fin, payload = await client.read_frame()
    assert (opcode, fin) == (CLOSE, True), (opcode, fin, payload)
    assert len(payload) >= 2, payload
    payload[2:].decode("utf-8")
    code: int = struct.unpack("!H", payload[:2])[0]
    return code

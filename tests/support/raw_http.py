"""HTTP/1.1 and the WebSocket handshake by hand, over a real TCP connection: request bytes
built as a test wants them (malformed included), responses and server frames parsed off the
wire, and the RFC 6455 handshake values computed independently of the gateway.

For responses the gateway relays from a legacy site (chunked, close-delimited, cut short),
:class:`tests.support.proxy_http.HTTPReader` is the reader.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import trio

from tests.support.timeouts import TIMEOUT

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3


class Address(Protocol):
    """Anything serving on ``host:port`` (an in-process or a subprocess gateway)."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


@dataclass
class Response:
    """One HTTP response read off the wire; header names lowercased, in order."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n == name.lower()), None)

    def header_values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name.lower()]


@dataclass
class RawClient:
    """A TCP connection we write bytes to and parse responses from by hand."""

    stream: trio.SocketStream
    buffer: bytearray = field(default_factory=bytearray)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(65536)
        self.buffer += data
        return bool(data)

    async def read_response(self, *, head_request: bool = False) -> Response:
        """Read one response (head and Content-Length body; none for HEAD/1xx/204/304)."""
        while b"\r\n\r\n" not in self.buffer:
            if not await self._fill():
                raise AssertionError(f"EOF before a complete response head: {bytes(self.buffer)!r}")
        end = self.buffer.index(b"\r\n\r\n")
        head = bytes(self.buffer[:end]).decode("latin-1")
        del self.buffer[: end + 4]
        status_line, *lines = head.split("\r\n")
        version, status, reason = [*status_line.split(" ", 2), ""][:3]
        assert version == "HTTP/1.1", status_line
        headers = []
        for line in lines:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        response = Response(int(status), reason, headers)
        code = response.status
        if head_request or code < 200 or code in (204, 304):
            return response
        length = int(response.header("content-length") or "0")
        assert response.header("transfer-encoding") is None, "the gateway never sends chunked"
        response.body = await self.receive_exactly(length)
        return response

    async def receive_exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if not await self._fill():
                raise AssertionError(f"EOF after {len(self.buffer)} of {n} bytes")
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    async def read_until_eof(self) -> bytes:
        """Everything until the server closes (what is already buffered included)."""
        while await self._fill():
            pass
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    async def read_frame(self) -> tuple[int, bool, bytes]:
        """One unmasked server frame: ``(opcode, fin, payload)``."""
        b0, b1 = await self.receive_exactly(2)
        assert not b1 & 0x80, "server frames must not be masked (RFC 6455 §5.1)"
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.receive_exactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.receive_exactly(8))
        return b0 & 0x0F, bool(b0 & 0x80), await self.receive_exactly(length)


@asynccontextmanager
async def raw_connection(server: Address) -> AsyncIterator[RawClient]:
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(server.host, server.port)
    async with stream:
        yield RawClient(stream)


def request(
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    *,
    host: str = "127.0.0.1",
    version: str = "HTTP/1.1",
    body: bytes = b"",
) -> bytes:
    """A request's bytes: the request line, ``Host`` (unless ``host`` is empty), headers, body."""
    lines = [f"{method} {target} {version}"]
    if host:
        lines.append(f"Host: {host}")
    lines.extend(f"{n}: {v}" for n, v in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# --------------------------------------------------------------------------- WebSocket handshake


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode("ascii")


def expected_accept(key: str) -> str:
    """RFC 6455 §4.2.2 step 5.4, computed independently of the gateway."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + WS_GUID).digest()).decode("ascii")


def upgrade_headers(key: str, *, version: str = "13") -> list[tuple[str, str]]:
    return [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", version),
    ]


async def handshake(client: RawClient, path: str) -> None:
    """A WebSocket handshake by hand whose 101 and accept value are checked; the client is
    then a WebSocket peer."""
    key = new_key()
    await client.send(request("GET", path, upgrade_headers(key)))
    response = await client.read_response()
    assert response.status == 101, response
    assert response.header("sec-websocket-accept") == expected_accept(key)

"""A WebSocket upstream that misbehaves on purpose, for the relay's tests (plugins/relay.py).

An in-process trio TCP server that reads a client's handshake request and then follows a
script: a well-formed 101 followed by garbage, a malformed 101, something that is not HTTP at
all, or a good 101 after which it never reads again (so the relay's sends back up).  It writes
exactly the bytes a mode names, so each shape of upstream fault is deterministic.

Modes (``ScriptedUpstream.mode``):

* ``"opcode"``: a good 101, then a frame with the reserved opcode 0xF;
* ``"utf8"``: a good 101, then a text frame that is not UTF-8;
* ``"masked"``: a good 101, then a masked frame (servers must not mask, RFC 6455 §5.1);
* ``"oversized"``: a good 101, then a binary frame of ``big`` bytes;
* ``"close-1002"``: a good 101, then a Close frame with 1002 (a protocol error on its leg);
* ``"bad-accept"``: a 101 whose ``Sec-WebSocket-Accept`` is wrong;
* ``"no-upgrade"``: a 101 without ``Upgrade``/``Connection``;
* ``"not-http"``: bytes that are not an HTTP response;
* ``"stalled"``: a good 101, then the connection is held open and never read again.
"""

from __future__ import annotations

import base64
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from tests.support.raw_http import expected_accept
from tests.support.ws_frames import BINARY, CLOSE, TEXT, frame_bytes


def switching(key: bytes, *, accept_value: bytes | None = None, upgrade: bool = True) -> bytes:
    lines = [b"HTTP/1.1 101 Switching Protocols"]
    if upgrade:
        lines += [b"Upgrade: websocket", b"Connection: Upgrade"]
    lines.append(
        b"Sec-WebSocket-Accept: " + (accept_value or expected_accept(key.decode()).encode())
    )
    return b"\r\n".join(lines) + b"\r\n\r\n"


@dataclass
class ScriptedUpstream:
    mode: str
    port: int = 0
    big: int = 4096
    connections: int = 0
    # "stalled": every accepted stream, held open (and never read) until the server stops
    held: list[trio.SocketStream] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        head = b""
        with trio.move_on_after(10):
            while b"\r\n\r\n" not in head:
                data = await stream.receive_some(4096)
                if not data:
                    return
                head += data
        key = b""
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value.strip()
        reply = {
            "opcode": switching(key) + frame_bytes(0xF, b""),
            "utf8": switching(key) + frame_bytes(TEXT, b"\xff\xfe\xfd"),
            "masked": switching(key) + frame_bytes(TEXT, b"hi", key=b"\x01\x02\x03\x04"),
            "oversized": switching(key) + frame_bytes(BINARY, b"x" * self.big),
            "close-1002": switching(key) + frame_bytes(CLOSE, b"\x03\xeaframing"),
            "bad-accept": switching(key, accept_value=base64.b64encode(b"0" * 20)),
            "no-upgrade": switching(key, upgrade=False),
            "not-http": b"\x00\xffthis is not HTTP\r\n\r\n",
            "stalled": switching(key),
        }[self.mode]
        try:
            await stream.send_all(reply)
            if self.mode == "stalled":
                self.held.append(stream)
            await trio.sleep_forever()  # the gateway closes first; we never read again
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


@asynccontextmanager
async def scripted_upstream(mode: str, *, big: int = 4096) -> AsyncIterator[ScriptedUpstream]:
    upstream = ScriptedUpstream(mode, big=big)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    for listener in listeners:
        # Small kernel buffers (inherited by accepted sockets), so a stalled upstream pushes
        # back after a few KiB instead of the megabytes loopback autotuning allows.
        listener.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, upstream.handle, listeners)
        upstream.port = listeners[0].socket.getsockname()[1]
        try:
            yield upstream
        finally:
            nursery.cancel_scope.cancel()
            for stream in upstream.held:
                await trio.aclose_forcefully(stream)

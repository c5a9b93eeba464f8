"""Server-to-client frame encoding (RFC 6455 §5.2), pure and allocation-light.

Frames a server sends are never masked (§5.1), so the bytes of a message frame do not depend
on the connection: :func:`message_frame` is built once per broadcast and the same ``bytes``
object is queued for every client.  Parsing client frames stays with wsproto.
"""

from __future__ import annotations

import struct

from gateway.errors import MessageTypeError

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_FIN = 0x80
_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def frame_header(opcode: int, length: int, *, rsv1: bool = False) -> bytes:
    """The header of a final (FIN) unmasked frame; RSV1 marks a compressed message."""
    first = _FIN | opcode | (0x40 if rsv1 else 0)
    if length < 126:
        return _SHORT.pack(first, length)
    if length < 65536:
        return _MEDIUM.pack(first, 126, length)
    return _LONG.pack(first, 127, length)


def frame(opcode: int, payload: bytes) -> bytes:
    """One final (FIN) unmasked frame carrying ``payload``."""
    return frame_header(opcode, len(payload)) + payload


def message_frame(message: str | bytes | bytearray | memoryview) -> bytes:
    """A text frame for ``str``, a binary frame for bytes-like data."""
    if isinstance(message, str):
        return frame(OP_TEXT, message.encode("utf-8"))
    if isinstance(message, bytes | bytearray | memoryview):
        return frame(OP_BINARY, bytes(message))
    raise MessageTypeError(f"a WebSocket message is str or bytes, not {type(message).__name__}")


def close_payload(code: int | None, reason: str = "") -> bytes:
    """§5.5.1: two-byte code then UTF-8 reason, at most 125 bytes in all.  ``None`` (or 1005,
    "no status") sends an empty body.  The reason is cut on a character boundary."""
    if code is None or code == 1005:
        return b""
    data = reason.encode("utf-8")
    if len(data) > 123:
        data = data[:123].decode("utf-8", "ignore").encode("utf-8")
    return struct.pack("!H", code) + data


class Prepared:
    """A message to send to many connections: its plain frame is encoded once, on first use,
    and shared; a connection that compresses encodes ``message`` itself."""

    __slots__ = ("_frame", "message")

    def __init__(self, message: str | bytes) -> None:
        self.message = message
        self._frame: bytes | None = None

    @property
    def frame(self) -> bytes:
        if self._frame is None:
            self._frame = message_frame(self.message)
        return self._frame

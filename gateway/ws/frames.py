"""Server-to-client frame encoding (RFC 6455 §5.2), pure and allocation-light.

Frames a server sends are never masked (§5.1), so the bytes of a message frame do not depend
on the connection: :func:`message_frame` is built once per broadcast and the same ``bytes``
object is queued for every client.  Client frames are parsed by :mod:`gateway.ws.parser`.
:class:`Opcode` and :class:`CloseCode` are the engine's one definition of both.
"""

from __future__ import annotations

import struct
from enum import IntEnum

from gateway.errors import MessageTypeError


class Opcode(IntEnum):
    """Frame opcodes (RFC 6455 §5.2, §11.8)."""

    CONT = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(IntEnum):
    """Close codes (RFC 6455 §7.4.1, §11.7) the engine sends or reports.  Names as
    trio-websocket's (wsproto's) ``CloseReason.name``."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005  # reported only: the peer's Close had no code
    ABNORMAL_CLOSURE = 1006  # reported only: the stream ended without a Close
    INVALID_FRAME_PAYLOAD_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXT = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014


# Plain-name aliases for the hot paths (a module global is one dict lookup).
OP_CONT, OP_TEXT, OP_BINARY = Opcode.CONT, Opcode.TEXT, Opcode.BINARY
OP_CLOSE, OP_PING, OP_PONG = Opcode.CLOSE, Opcode.PING, Opcode.PONG

_FIN = 0x80
_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def payload_size(message: str | bytes | bytearray | memoryview) -> int:
    """The bytes ``message`` takes as a payload (UTF-8 for text).  ``str.isascii`` is O(1) in
    CPython, so only non-ASCII text is encoded to be measured."""
    if type(message) is str and not message.isascii():
        return len(message.encode("utf-8", "surrogatepass"))
    return len(message)


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
    if code is None or code == CloseCode.NO_STATUS_RCVD:
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

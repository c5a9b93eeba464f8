"""WebSocket frames built by hand (RFC 6455 §5.2), the tests' one frame encoder, and a
corpus of malformed client frames, for tests of the engine with or without trio (this module
imports none).

:func:`masked_frame` is what a client sends; :func:`frame_bytes` builds any frame, masked or
not (a server's frame, or a client breaking §5.1).  The masking is computed here, not by the
gateway's code, so a test checks the gateway's unmasking against someone else's.
"""

from __future__ import annotations

import os
import struct

from gateway.ws.frames import Opcode

TEXT, BINARY, CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT
CLOSE, PING, PONG = Opcode.CLOSE, Opcode.PING, Opcode.PONG
RSV1 = 4  # the ``rsv`` bits of a compressed message's first frame (RFC 7692 §6)


def frame_bytes(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, key: bytes | None = None
) -> bytes:
    """One frame: FIN, the three RSV bits (``rsv``, 0-7), the opcode, the shortest length
    encoding, and the payload masked with ``key`` (4 bytes) or, without one, unmasked."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    mask_bit = 0x80 if key is not None else 0
    if n < 126:
        head = struct.pack("!BB", first, mask_bit | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, n)
    if key is None:
        return head + payload
    assert len(key) == 4, key
    return head + key + mask(payload, key)


def masked_frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, key: bytes | None = None
) -> bytes:
    """A client frame: masked (§5.3) with ``key``, or with a fresh random key as a browser
    does."""
    return frame_bytes(opcode, payload, fin=fin, rsv=rsv, key=os.urandom(4) if key is None else key)


def mask(payload: bytes, key: bytes) -> bytes:
    """``payload`` XOR the repeated 4-byte ``key`` (§5.3), as one big-integer XOR: fast
    enough for the megabyte frames of the limit tests."""
    n = len(payload)
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload) ^ int.from_bytes(repeated)).to_bytes(n)


def header_only(opcode: int, declared: int, *, fin: bool = True) -> bytes:
    """A masked frame header declaring ``declared`` bytes, with no payload following."""
    first = (0x80 if fin else 0) | opcode
    if declared < 126:
        head = struct.pack("!BB", first, 0x80 | declared)
    elif declared < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, declared)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, declared)
    return head + os.urandom(4)


# The malformed-frame corpus: (name, bytes, close code).
CORPUS = [
    ("unmasked frame", frame_bytes(TEXT, b"x"), 1002),
    ("rsv1 without extension", masked_frame(TEXT, b"x", rsv=4), 1002),
    ("rsv2", masked_frame(TEXT, b"x", rsv=2), 1002),
    ("rsv3", masked_frame(BINARY, b"x", rsv=1), 1002),
    ("opcode 3", masked_frame(0x3, b"x"), 1002),
    ("opcode 7", masked_frame(0x7, b"x"), 1002),
    ("opcode 0xB", masked_frame(0xB, b"x"), 1002),
    ("opcode 0xF", masked_frame(0xF, b""), 1002),
    ("continuation first", masked_frame(CONT, b"x"), 1002),
    (
        "text inside fragmented",
        masked_frame(TEXT, b"a", fin=False) + masked_frame(TEXT, b"b"),
        1002,
    ),
    (
        "binary inside fragmented",
        masked_frame(BINARY, b"a", fin=False) + masked_frame(BINARY, b""),
        1002,
    ),
    ("fragmented ping", masked_frame(PING, b"x", fin=False), 1002),
    ("fragmented close", masked_frame(CLOSE, b"", fin=False), 1002),
    ("ping 126 bytes", masked_frame(PING, b"x" * 126), 1002),
    ("pong 200 bytes", masked_frame(PONG, b"x" * 200), 1002),
    ("ping with rsv1", masked_frame(PING, b"", rsv=4), 1002),
    ("close 1 byte", masked_frame(CLOSE, b"\x03"), 1002),
    ("close code 999", masked_frame(CLOSE, struct.pack("!H", 999)), 1002),
    ("close code 1004", masked_frame(CLOSE, struct.pack("!H", 1004)), 1002),
    ("close code 1005", masked_frame(CLOSE, struct.pack("!H", 1005)), 1002),
    ("close code 1006", masked_frame(CLOSE, struct.pack("!H", 1006)), 1002),
    ("close code 1015", masked_frame(CLOSE, struct.pack("!H", 1015)), 1002),
    ("close code 2000", masked_frame(CLOSE, struct.pack("!H", 2000)), 1002),
    ("close code 5000", masked_frame(CLOSE, struct.pack("!H", 5000)), 1002),
    ("close bad utf-8 reason", masked_frame(CLOSE, struct.pack("!H", 1000) + b"\xff"), 1007),
    ("text bad utf-8", masked_frame(TEXT, b"\xff"), 1007),
    ("text overlong utf-8", masked_frame(TEXT, b"\xc0\xaf"), 1007),
    ("text surrogate", masked_frame(TEXT, b"\xed\xa0\x80"), 1007),
    ("text truncated utf-8", masked_frame(TEXT, "é".encode()[:1]), 1007),
    (
        "bad utf-8 split across fragments",
        masked_frame(TEXT, b"ok\xe2", fin=False) + masked_frame(CONT, b"\x28\xa1"),
        1007,
    ),
    (
        "64-bit length with top bit",
        bytes([0x82, 0xFF, 0x80]) + bytes(7) + os.urandom(4),
        1002,
    ),
    ("declared 2**40 bytes", header_only(BINARY, 2**40), 1009),
    ("declared over the limit", header_only(TEXT, 1024 * 1024 + 1), 1009),
]

"""Parsing client frames (RFC 6455 §5), sans-I/O, with the gateway's limits built in.

Why not wsproto's parser: it streams payloads without bounding them, so a frame header that
declares 2^40 bytes raises nothing, it keeps no fragment count, counts nothing per second, and
inflates permessage-deflate data without a bound (../LIMITS.md).  This parser checks the
*declared* length against ``max_message_size`` before buffering a byte of payload, counts
fragments, rate-limits frames, validates UTF-8 as it arrives (RFC 6455 §8.1: invalid text
fails with 1007 at the feed that brings the first bad byte, even inside a frame whose end has
not arrived, and compressed text is inflated and checked fragment by fragment), and never
inflates past the message limit.

Compression (RFC 7692) is bounded twice, since a few bytes on the wire can inflate to a
megabyte: in CPU, by a per-connection budget of bytes inflated per second (:class:`Inflater`,
close 1008 past it), and in memory, by :attr:`FrameParser.room`: once the messages inflated by
one ``feed`` reach it the parser *pauses*, leaving the frames after them compressed in its
buffer (``paused``), until the next ``feed`` (``b""`` if no bytes came since).  Uncompressed
frames never touch either.

Use: ``feed(data, now)`` then iterate ``events()``; a violation raises :class:`ProtocolError`
carrying the close code to send (§7.4.1).  The parser holds at most one frame's payload plus one
message's fragments, both bounded by ``max_message_size``, plus the rest of the last ``feed``.

Large frames are received in place: once the header of an uncompressed binary frame (or
fragment of a binary message) of at least ``LARGE_FRAME`` bytes is in, and its limits are
checked, the parser allocates that frame's payload once and :meth:`FrameParser.read_buffer`
hands out the part still missing, for the shell to read the socket straight into
(``os.readv``; then :meth:`FrameParser.feed_into`).  A 1 MiB message is then copied twice
(kernel to that buffer, unmasked into the message) instead of four times (a read's ``bytes``,
the growing receive buffer, the unmask, the buffer's compaction).  Text stays on the common
path, where its UTF-8 is checked as the bytes arrive.
"""

from __future__ import annotations

import codecs
import sys
import threading
import zlib
from dataclasses import dataclass
from typing import Any

from gateway.errors import WebSocketProtocolError, is_sendable_close_code
from gateway.ws.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    CloseCode,
    Opcode,
)

_DATA_OPS = frozenset({Opcode.CONT, Opcode.TEXT, Opcode.BINARY})
_CONTROL_OPS = frozenset({Opcode.CLOSE, Opcode.PING, Opcode.PONG})

PROTOCOL_ERROR = CloseCode.PROTOCOL_ERROR
INVALID_DATA = CloseCode.INVALID_FRAME_PAYLOAD_DATA
POLICY = CloseCode.POLICY_VIOLATION
TOO_BIG = CloseCode.MESSAGE_TOO_BIG

_DEFLATE_TAIL = b"\x00\x00\xff\xff"  # RFC 7692 §7.2.2: removed by the sender, re-added here


# The peer broke the protocol or a limit (the one tree: gateway.errors).
ProtocolError = WebSocketProtocolError


@dataclass(frozen=True, slots=True)
class Ping:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """A Close frame; ``code`` is 1005 when the frame had no body (§7.1.5)."""

    code: int
    reason: str


Event = str | bytes | Ping | Pong | Close  # str/bytes: a complete text/binary message


@dataclass(frozen=True, slots=True)
class ParserLimits:
    max_message_size: int = 1024 * 1024
    max_fragments: int = 1024
    max_frame_rate: float = 1000.0  # frames per second, sustained; 0 disables
    frame_burst: float = 5000.0


# Uncompressed binary payloads from this size on are read into a buffer of their own (module
# docstring); below it, one read's bytes usually hold whole frames anyway.
LARGE_FRAME = 128 * 1024


class _Spare(threading.local):
    """One large-frame buffer kept per thread (per trio run) between frames: allocating and
    freeing a megabyte per message costs the allocator more (fresh pages, zeroing) than the
    copy it saves.  At most the largest frame a mount's ``max_message_size`` let in."""

    buffer: bytearray | None = None

    def take(self, size: int) -> bytearray:
        buffer = self.buffer
        if buffer is not None and len(buffer) >= size:
            self.buffer = None
            return buffer
        return bytearray(size)

    def give_back(self, buffer: bytearray) -> None:
        if self.buffer is None or len(self.buffer) < len(buffer):
            self.buffer = buffer


_spare = _Spare()


def _unmask_int(payload: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``mask`` (§5.3), as one big-integer operation: far
    faster in CPython than a byte loop, for small and large payloads alike."""
    n = len(payload)
    if n == 0:
        return b""
    key = (mask * ((n >> 2) + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


try:
    # The `websockets` library's C routine: ~10x faster than the big-integer XOR on 1 MiB
    # (docs/performance.md: unmasking was most of the large-message CPU).  Pure-Python
    # fallback where the compiled wheel is not available.
    from websockets.speedups import apply_mask as _apply_mask

    def unmask(payload: bytes | bytearray | memoryview, mask: bytes) -> bytes:
        """XOR ``payload`` with the 4-byte ``mask`` (§5.3)."""
        return _apply_mask(payload, mask)

except ImportError:  # pragma: no cover - depends on the platform's wheel
    unmask = _unmask_int


class Inflater:
    """permessage-deflate receive side (RFC 7692), bounded by the message limit and by a
    budget of ``rate`` bytes inflated per second (a token bucket holding ``burst`` bytes at
    most; ``rate`` 0 disables it).  The budget is checked *while* inflating: zlib is never
    asked for more output than the tokens left, so a bomb costs at most the budget."""

    __slots__ = ("_burst", "_last", "_rate", "_reset", "_tokens", "_window_bits", "_z")

    def __init__(
        self,
        window_bits: int = 15,
        no_context_takeover: bool = False,
        *,
        rate: float = 0.0,
        burst: float = 0.0,
    ) -> None:
        self._window_bits = window_bits
        self._reset = no_context_takeover
        self._z = zlib.decompressobj(-window_bits)
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._last = 0.0

    def inflate(self, data: bytes, limit: int, now: float = 0.0) -> bytes:
        """Inflate one whole compressed message: :class:`ProtocolError` 1009 past ``limit``,
        1008 past the inflate budget."""
        return self.inflate_part(data, limit, now, final=True)

    def inflate_part(self, data: bytes, limit: int, now: float = 0.0, *, final: bool) -> bytes:
        """Inflate the next fragment of a compressed message (``final``: its last), as it
        arrives, so the text inside can be checked fragment by fragment; ``limit`` is what is
        left of the message limit.  Errors as :meth:`inflate`."""
        budget = limit
        if self._rate:
            if now > self._last:
                self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
                self._last = now
            budget = min(limit, max(int(self._tokens), 0))
        try:
            out = self._z.decompress(data + _DEFLATE_TAIL if final else data, budget + 1)
        except zlib.error:
            raise ProtocolError(INVALID_DATA, "invalid compressed data") from None
        if len(out) > budget or self._z.unconsumed_tail:
            if budget < limit:
                raise ProtocolError(POLICY, "inflating too fast")
            raise ProtocolError(TOO_BIG, "message too big")
        if self._rate:
            self._tokens -= len(out)
        if final and self._reset:
            self._z = zlib.decompressobj(-self._window_bits)
        return out


class FrameParser:
    """Turns the bytes a client sends into messages and control events."""

    __slots__ = (
        "_buf",
        "_compressed",
        "_decoder",
        "_events",
        "_fragments",
        "_halt",
        "_inflated",
        "_inflater",
        "_large_filled",
        "_large_head",
        "_last",
        "_message_inflated",
        "_now",
        "_opcode",
        "_pieces",
        "_probe",
        "_probed",
        "_size",
        "_tokens",
        "closed",
        "inflating",
        "large",
        "limits",
        "paused",
        "room",
    )

    def __init__(
        self, limits: ParserLimits = ParserLimits(), inflater: Inflater | None = None
    ) -> None:
        self.limits = limits
        self._inflater = inflater
        self._buf = bytearray()
        # A large frame being received in place (module docstring): its payload buffer (public:
        # the shell checks it before asking for read_buffer()), how much of it is filled, and
        # its first header byte and mask.
        self.large: bytearray | None = None
        self._large_filled = 0
        self._large_head: tuple[int, bytes, int] = (0, b"", 0)  # b0, mask, payload length
        self._events: list[Event] = []
        # The message being assembled from fragments.
        self._opcode: int | None = None
        self._compressed = False
        # The fragments so far (decoded text, or payloads), while a message is in fragments.
        # (str pieces when ``_decoder`` is set, else bytes: one slot, one list, made on need.)
        self._pieces: list[Any] | None = None
        self._size = 0
        self._fragments = 0
        self._decoder: codecs.IncrementalDecoder | None = None
        self._message_inflated = 0  # bytes the compressed message in progress inflated to
        # A text frame that has only partly arrived: its payload so far is checked as UTF-8
        # (RFC 6455 §8.1: fail as soon as the bytes are invalid, not when the frame ends).
        self._probe: codecs.IncrementalDecoder | None = None
        self._probed = 0  # payload bytes of that frame checked so far
        # Token bucket for the frame rate.
        self._tokens = limits.frame_burst
        self._last = 0.0
        self.closed = False
        # Compressed messages: once one feed has inflated ``room`` bytes the parser pauses
        # (``paused``), keeping the rest compressed until the next feed (see the docstring).
        self.room = sys.maxsize  # the connection sets it from its inbox's room
        self.paused = False
        self._inflated = 0
        self._halt = False  # stop parsing: closed or paused (one check per frame for both)
        # permessage-deflate was agreed (a plain attribute: read once per receive)
        self.inflating = inflater is not None
        self._now = 0.0

    def feed(self, data: bytes | bytearray, now: float = 0.0) -> None:
        """Add received bytes (``b""``: none, resume after a pause) and parse every complete
        frame in them, or until the inflated messages reach :attr:`room`."""
        if self.closed:
            return
        if self.large is not None and data:
            # (A stream without a socket, e.g. TLS: the bytes arrive as ``bytes`` all the same.)
            large = self.large
            take = min(len(data), self._large_head[2] - self._large_filled)
            large[self._large_filled : self._large_filled + take] = data[:take]
            self._large_filled += take
            data = data[take:]
        self._buf += data
        if self._halt:
            self._halt = self.paused = False
        self._inflated = 0
        self._now = now
        if self.large is not None:
            if self._large_filled < self._large_head[2]:
                return
            self._finish_large(now)
        self._parse(now)

    def read_buffer(self) -> memoryview | None:
        """Where the missing part of a large frame goes (read the socket into it, then call
        :meth:`feed_into` with the count); ``None`` when no large frame is in progress."""
        large = self.large
        if large is None or self.closed:
            return None
        return memoryview(large)[self._large_filled : self._large_head[2]]

    def feed_into(self, count: int, now: float = 0.0) -> None:
        """``count`` bytes were written into the last :meth:`read_buffer` (and nowhere else):
        parse on as :meth:`feed` does."""
        self._large_filled += count
        if self.large is not None and self._large_filled >= self._large_head[2]:
            self._inflated = 0
            self._now = now
            self._halt = self.paused = False
            self._finish_large(now)
            self._parse(now)

    def _finish_large(self, now: float) -> None:
        large, self.large = self.large, None
        assert large is not None
        self._large_filled = 0
        b0, mask, length = self._large_head
        with memoryview(large) as view:
            payload = unmask(view[:length], mask)
        _spare.give_back(large)
        self._rate(now)
        self._frame(b0, payload)

    def events(self) -> list[Event]:
        """The events parsed so far (and forget them)."""
        events, self._events = self._events, []
        return events

    # -- frames -----------------------------------------------------------------------------

    def _parse(self, now: float) -> None:
        buf = self._buf
        pos = 0
        end = len(buf)
        try:
            while end - pos >= 2:
                b0 = buf[pos]
                b1 = buf[pos + 1]
                length = b1 & 0x7F
                head = 2
                if length == 126:
                    head = 4
                    if end - pos < head:
                        break
                    length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                elif length == 127:
                    head = 10
                    if end - pos < head:
                        break
                    length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                    if length >> 63:
                        raise ProtocolError(PROTOCOL_ERROR, "invalid frame length")
                self._check_header(b0, b1, length)
                total = head + 4 + length
                if end - pos < total:
                    if (
                        length >= LARGE_FRAME
                        and end - pos >= head + 4
                        and not b0 & 0x40  # uncompressed
                        and (
                            b0 & 0x0F == OP_BINARY
                            or (b0 & 0x0F == OP_CONT and self._decoder is None)
                        )
                        and not self._compressed
                    ):
                        # Received in place from here on (module docstring); its limits are
                        # checked, so the allocation is bounded by max_message_size.
                        start = pos + head + 4
                        self.large = large = _spare.take(length)
                        large[: end - start] = buf[start:end]
                        self._large_filled = end - start
                        self._large_head = (b0, bytes(buf[pos + head : start]), length)
                        pos = end
                        break
                    if end - pos > head + 4 and (
                        b0 & 0x4F == OP_TEXT  # an uncompressed text frame, or a fragment of one
                        or (
                            b0 & 0x0F == OP_CONT
                            and self._decoder is not None
                            and not self._compressed
                        )
                    ):
                        self._check_partial(buf, pos + head, end, b0 & 0x0F == OP_CONT)
                    break
                if self._probed:
                    self._probe = None  # the frame is whole: checked with the rest below
                    self._probed = 0
                mask = bytes(buf[pos + head : pos + head + 4])
                with memoryview(buf) as view:  # released before the buffer is resized
                    payload = unmask(view[pos + head + 4 : pos + total], mask)
                pos += total
                self._rate(now)
                self._frame(b0, payload)
                if self._halt:
                    break
        finally:
            del buf[:pos]

    def _check_partial(self, buf: bytearray, start: int, end: int, continuation: bool) -> None:
        """Check the UTF-8 of a text frame's payload received so far (``buf[start:start+4]``
        is its mask, the payload follows, ``end`` is where the bytes stop).  Only the bytes
        not checked by an earlier call are decoded, so a frame arriving in many pieces is
        checked once over; when it is whole it is decoded as usual."""
        begin = start + 4 + self._probed
        if end <= begin:
            return
        probe = self._probe
        if probe is None:
            probe = self._probe = codecs.getincrementaldecoder("utf-8")()
            if continuation and self._decoder is not None:
                probe.setstate(self._decoder.getstate())  # a character may span fragments
        shift = self._probed & 3
        mask = bytes(buf[start + shift : start + 4]) + bytes(buf[start : start + shift])
        with memoryview(buf) as view:
            chunk = unmask(view[begin:end], mask)
        self._probed += end - begin
        try:
            probe.decode(chunk, False)
        except UnicodeDecodeError:
            raise ProtocolError(INVALID_DATA, "invalid UTF-8") from None

    def _check_header(self, b0: int, b1: int, length: int) -> None:
        """Everything that can be refused before the payload is buffered."""
        opcode = b0 & 0x0F
        if not b1 & 0x80:
            raise ProtocolError(PROTOCOL_ERROR, "client frames must be masked")  # §5.1
        rsv = b0 & 0x70
        if opcode in _CONTROL_OPS:
            if rsv:
                raise ProtocolError(PROTOCOL_ERROR, "reserved bits set")
            if not b0 & 0x80:
                raise ProtocolError(PROTOCOL_ERROR, "fragmented control frame")  # §5.5
            if length > 125:
                raise ProtocolError(PROTOCOL_ERROR, "control frame too long")
            return
        if opcode not in _DATA_OPS:
            raise ProtocolError(PROTOCOL_ERROR, "reserved opcode")
        # RSV1 marks a compressed message (RFC 7692 §6), only on its first frame.
        if rsv and not (rsv == 0x40 and opcode != OP_CONT and self._inflater is not None):
            raise ProtocolError(PROTOCOL_ERROR, "reserved bits set")
        if opcode == OP_CONT:
            if self._opcode is None:
                raise ProtocolError(PROTOCOL_ERROR, "continuation without a message")
            if self._fragments >= self.limits.max_fragments:
                raise ProtocolError(POLICY, "too many fragments")
        elif self._opcode is not None:
            raise ProtocolError(PROTOCOL_ERROR, "new message inside a fragmented one")
        # The declared length is checked before any payload is buffered.
        size = (self._size if opcode == OP_CONT else 0) + length
        if size > self.limits.max_message_size:
            raise ProtocolError(TOO_BIG, "message too big")

    def _rate(self, now: float) -> None:
        rate = self.limits.max_frame_rate
        if not rate:
            return
        if now > self._last:
            self._tokens = min(self.limits.frame_burst, self._tokens + (now - self._last) * rate)
            self._last = now
        self._tokens -= 1
        if self._tokens < 0:
            raise ProtocolError(POLICY, "too many frames")

    def _frame(self, b0: int, payload: bytes) -> None:
        opcode = b0 & 0x0F
        fin = b0 & 0x80
        if opcode == OP_PING:
            self._events.append(Ping(payload))
        elif opcode == OP_PONG:
            self._events.append(Pong(payload))
        elif opcode == OP_CLOSE:
            self._events.append(_close(payload))
            self.closed = self._halt = True
        elif opcode != OP_CONT and fin and not b0 & 0x40:
            # The common case: a whole, uncompressed message in one frame.
            if opcode == OP_TEXT:
                self._events.append(_utf8(payload))
            else:
                self._events.append(payload)
        else:
            self._fragment(opcode, bool(fin), bool(b0 & 0x40), payload)

    def _fragment(self, opcode: int, fin: bool, rsv1: bool, payload: bytes) -> None:
        if opcode != OP_CONT:
            self._opcode = opcode
            self._compressed = rsv1
            self._fragments = 0
            self._size = 0
            self._message_inflated = 0
            self._pieces = []
            if opcode == OP_TEXT:
                self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._fragments += 1
        self._size += len(payload)
        if self._compressed:
            # Inflated fragment by fragment, so compressed text is checked as it arrives too.
            assert self._inflater is not None
            payload = self._inflater.inflate_part(
                payload, self.limits.max_message_size - self._message_inflated, self._now, final=fin
            )
            self._message_inflated += len(payload)
        pieces = self._pieces
        assert pieces is not None  # (a continuation without a message is refused earlier)
        if self._decoder is not None:
            try:
                pieces.append(self._decoder.decode(payload, fin))
            except UnicodeDecodeError:
                raise ProtocolError(INVALID_DATA, "invalid UTF-8") from None
        else:
            pieces.append(payload)
        if fin:
            self._events.append(self._finish())

    def _finish(self) -> str | bytes:
        message: str | bytes
        pieces = self._pieces or []
        message = "".join(pieces) if self._decoder is not None else b"".join(pieces)
        if self._compressed:
            self._inflated += self._message_inflated
            if self._inflated >= self.room:
                self.paused = self._halt = True
        self._opcode = None
        self._compressed = False
        self._decoder = None
        self._pieces = None
        self._size = 0
        return message


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(INVALID_DATA, "invalid UTF-8") from None


def _close(payload: bytes) -> Close:
    """§5.5.1: empty, or a 2-byte code plus a UTF-8 reason; the code must be one a peer may
    send (§7.4)."""
    if not payload:
        return Close(CloseCode.NO_STATUS_RCVD, "")
    if len(payload) == 1:
        raise ProtocolError(PROTOCOL_ERROR, "invalid close frame")
    code = int.from_bytes(payload[:2], "big")
    if not is_sendable_close_code(code):
        raise ProtocolError(PROTOCOL_ERROR, "invalid close code")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(INVALID_DATA, "invalid UTF-8 in close reason") from None
    return Close(code, reason)

"""permessage-deflate (RFC 7692): negotiation (pure) and the send-side compressor.

Off by default; a mount opts in with ``compression = "deflate"``.  Memory per connection, by
zlib's formulas: the compressor uses a 4 KiB window (12 bits; a smaller window than the client
allows is always valid, §7.1.2.1) at memLevel 5: (1 << 14) + (1 << 14) = 32 KiB, kept between
messages (context takeover) unless the client asks for ``server_no_context_takeover``.  The
decompressor needs its window plus ~7 KiB: a client that offers ``client_max_window_bits`` is
told to use 12 bits (≈11 KiB); one that does not may use 15 bits (≈39 KiB).  The receive side
(:class:`gateway.ws.parser.Inflater`) never inflates past ``max_message_size``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from gateway.errors import MessageTypeError
from gateway.ws.frames import OP_BINARY, OP_TEXT, frame_header

NAME = "permessage-deflate"
CLIENT_WINDOW_BITS = 12  # what we ask of clients that let us choose (smaller inflate windows)
SERVER_WINDOW_BITS = 12  # what our compressor uses at most
MEM_LEVEL = 5
MIN_SIZE = 64  # smaller messages are sent uncompressed (RSV1 is per message, §6)
_TAIL = b"\x00\x00\xff\xff"


@dataclass(frozen=True)
class DeflateParams:
    """What was agreed for one connection."""

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_window_bits: int = 15
    client_window_bits: int = 15
    client_window_bits_sent: bool = False  # whether the response names client_max_window_bits

    def header(self) -> str:
        """The ``Sec-WebSocket-Extensions`` response value (§7.1)."""
        parts = [NAME]
        if self.server_no_context_takeover:
            parts.append("server_no_context_takeover")
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self.server_window_bits != 15:
            parts.append(f"server_max_window_bits={self.server_window_bits}")
        if self.client_window_bits_sent:
            parts.append(f"client_max_window_bits={self.client_window_bits}")
        return "; ".join(parts)


def negotiate(header_values: tuple[str, ...]) -> DeflateParams | None:
    """Accept the first permessage-deflate offer we can honour (§5: offers are in the
    client's preference order); ``None`` declines compression.  Never raises."""
    for value in header_values:
        for offer in value.split(","):
            params = _accept(offer)
            if params is not None:
                return params
    return None


def _accept(offer: str) -> DeflateParams | None:
    name, *raw = (p.strip() for p in offer.split(";"))
    if name.lower() != NAME:
        return None
    seen: dict[str, str | None] = {}
    for item in raw:
        raw_key, eq, raw_val = item.partition("=")
        name = raw_key.strip().lower()
        if name in seen:
            return None  # §7: a parameter may appear once
        seen[name] = raw_val.strip().strip('"') if eq else None
    result = DeflateParams()
    for key, val in seen.items():
        if key in ("server_no_context_takeover", "client_no_context_takeover"):
            if val is not None:
                return None
            result = _replace(result, key)
        elif key == "server_max_window_bits":
            bits = _bits(val)
            if bits is None:
                return None
            result = DeflateParams(
                result.server_no_context_takeover,
                result.client_no_context_takeover,
                bits,
                result.client_window_bits,
                result.client_window_bits_sent,
            )
        elif key == "client_max_window_bits":
            # The client can honour a limit; we pick ours, capped by any value it offered.
            offered = 15 if val is None else _bits(val)
            if offered is None:
                return None
            result = DeflateParams(
                result.server_no_context_takeover,
                result.client_no_context_takeover,
                result.server_window_bits,
                min(offered, CLIENT_WINDOW_BITS),
                True,
            )
        else:
            return None  # an unknown parameter: decline this offer (§7)
    return result


def _replace(params: DeflateParams, flag: str) -> DeflateParams:
    return DeflateParams(
        params.server_no_context_takeover or flag == "server_no_context_takeover",
        params.client_no_context_takeover or flag == "client_no_context_takeover",
        params.server_window_bits,
        params.client_window_bits,
        params.client_window_bits_sent,
    )


def _bits(value: str | None) -> int | None:
    if value is None or not value.isdigit() or not 8 <= int(value) <= 15:
        return None
    return int(value)


class Deflater:
    """Compresses outgoing messages for one connection (§7.2.1)."""

    def __init__(self, params: DeflateParams) -> None:
        # zlib cannot make raw deflate streams with an 8-bit window; 9 is compatible (§7.1.2.1
        # only bounds the window from above, so a smaller one is always fine).
        self._bits = max(min(params.server_window_bits, SERVER_WINDOW_BITS), 9)
        self._reset = params.server_no_context_takeover
        self._z = self._new()

    def _new(self) -> zlib._Compress:
        return zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -self._bits, MEM_LEVEL)

    def frame(self, message: str | bytes) -> bytes:
        """A whole frame for ``message``: compressed with RSV1 set, or plain if it is small."""
        if isinstance(message, str):
            data, opcode = message.encode("utf-8"), OP_TEXT
        elif isinstance(message, bytes | bytearray | memoryview):
            data, opcode = bytes(message), OP_BINARY
        else:
            raise MessageTypeError(
                f"a WebSocket message is str or bytes, not {type(message).__name__}"
            )
        if len(data) < MIN_SIZE:
            return frame_header(opcode, len(data)) + data
        body = self._z.compress(data) + self._z.flush(zlib.Z_SYNC_FLUSH)
        if body.endswith(_TAIL):
            body = body[:-4]
        if self._reset:
            self._z = self._new()
        return frame_header(opcode, len(body), rsv1=True) + body

"""The broker's envelope: one message published by one process, as it travels through Redis.

Layout (network byte order)::

    version  1 byte   (1)
    kind     1 byte   (1 text, 2 binary: the WebSocket message type it is delivered as)
    node     16 bytes (the publishing process's id: it never delivers its own message twice)
    payload  the rest (UTF-8 for text, as is for binary)

The target (mount, group or user) is the Redis channel, so it is not repeated here.  What
arrives from Redis is untrusted: :func:`decode` checks every field and the payload's size
against the receiving mount's ``max_message_size`` and raises :class:`Invalid` with one of
:data:`REASONS` (counted, never logged with the payload).  Pure: no trio, no I/O.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass

VERSION = 1
TEXT = 1
BINARY = 2
NODE_ID_BYTES = 16
_HEADER = struct.Struct(f"!BB{NODE_ID_BYTES}s")
HEADER_BYTES = _HEADER.size

REASONS = ("short", "version", "kind", "too_large", "utf8")


class Invalid(ValueError):
    """An envelope that must be ignored; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Envelope:
    node: bytes
    message: str | bytes


def new_node_id() -> bytes:
    """A random id for this process (128 bits: two processes never pick the same)."""
    return secrets.token_bytes(NODE_ID_BYTES)


def payload_size(message: str | bytes) -> int:
    """The payload's size in bytes, as :func:`decode` will measure it."""
    return len(message) if isinstance(message, bytes) else len(message.encode("utf-8"))


def encode(node: bytes, message: str | bytes) -> bytes:
    """The envelope for ``message`` from ``node``.  A ``str`` must be encodable as UTF-8 (a
    lone surrogate raises ``UnicodeEncodeError``, as it would when framed locally)."""
    if len(node) != NODE_ID_BYTES:
        raise ValueError(f"node id must be {NODE_ID_BYTES} bytes")
    if isinstance(message, str):
        return _HEADER.pack(VERSION, TEXT, node) + message.encode("utf-8")
    return _HEADER.pack(VERSION, BINARY, node) + bytes(message)


def decode(data: bytes, max_size: int) -> Envelope:
    """The envelope in ``data``, whose payload may be at most ``max_size`` bytes."""
    if len(data) < HEADER_BYTES:
        raise Invalid("short")
    version, kind, node = _HEADER.unpack_from(data)
    if version != VERSION:
        raise Invalid("version")
    if kind not in (TEXT, BINARY):
        raise Invalid("kind")
    if len(data) - HEADER_BYTES > max_size:
        raise Invalid("too_large")
    payload = data[HEADER_BYTES:]
    if kind == BINARY:
        return Envelope(node, payload)
    try:
        return Envelope(node, payload.decode("utf-8"))  # strict: RFC 6455 §8.1
    except UnicodeDecodeError:
        raise Invalid("utf8") from None

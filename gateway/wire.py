"""HTTP bytes on a trio stream: reads and writes that skip trio when they need not wait, and
the heads of the gateway's own answers (the front door's and the proxy's).

:class:`Wire` reads and writes one connection.  On plain TCP it goes straight to the socket's
file descriptor: a non-blocking ``os.read``/``os.write`` first, and trio's wait only when the
kernel has nothing to give or no room (the WebSocket engine does the same,
``gateway/ws/connection.py``).  A request that is already in the kernel's buffer, and an
answer the kernel takes whole, then cost no trip through trio's scheduler and no cancel scope;
the caller keeps one checkpoint per request so a busy connection still lets others run.
Elsewhere (TLS, in-memory test streams) it is the trio stream's ``receive_some``/``send_all``.

:func:`response_head` serialises the head of a response the gateway itself makes (health,
static files, its own refusals, a proxied response's regenerated head): the fields are ours or
were parsed by h11, and values are checked for CR, LF and NUL once more before they go out
(RFC 9110 §5.5).  h11 stays the parser of record for every byte the peers send.
"""

from __future__ import annotations

import os
import re
import time
from email.utils import formatdate
from typing import Any

import trio
from h11._headers import Headers  # the type of h11's parsed fields (not re-exported)

from gateway.core.decisions import REASONS

__all__ = ["Wire", "count_sent", "fields", "http_date", "response_head"]

_STATUS_LINES = {s: b"HTTP/1.1 %d %s\r\n" % (s, r) for s, r in REASONS.items()}


class Wire:
    """One connection's bytes; see the module docstring.  Errors come out as trio's: a reset
    or closed connection reads as ``b""`` and fails a write with
    :class:`trio.BrokenResourceError`."""

    __slots__ = ("fd", "socket", "stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        # Only a plain SocketStream's descriptor is ours to read and write directly.
        self.socket = stream.socket if type(stream) is trio.SocketStream else None
        self.fd = -1 if self.socket is None else self.socket.fileno()

    def _closed(self) -> bool:
        # Once the stream is closed its descriptor number may belong to another socket.
        return self.socket is not None and self.socket.fileno() != self.fd

    def receive_now(self, size: int) -> bytes | None:
        """What the kernel holds now, without waiting: ``None`` when nothing is there (or this
        is not plain TCP), ``b""`` at end of stream or after a reset."""
        if self.fd < 0:
            return None
        if self._closed():
            return b""
        try:
            return os.read(self.fd, size)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    async def receive(self, size: int) -> bytes:
        """At least one byte, or ``b""`` at end of stream (reset and closed included)."""
        if self.fd >= 0:
            data = self.receive_now(size)
            while data is None:
                try:
                    await trio.lowlevel.wait_readable(self.fd)
                except trio.ClosedResourceError:
                    return b""
                data = self.receive_now(size)
            return data
        try:
            return bytes(await self.stream.receive_some(size))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""

    def send_now(self, data: bytes | bytearray | memoryview) -> int:
        """Write what the kernel takes at once (0 when this is not plain TCP); raises
        :class:`trio.BrokenResourceError` when the connection is gone."""
        if self.fd < 0 or not data:
            return 0
        if self._closed():
            raise trio.BrokenResourceError("connection closed")
        try:
            return os.write(self.fd, data)
        except BlockingIOError:
            return 0
        except OSError:
            raise trio.BrokenResourceError("connection lost while sending") from None

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data``: straight away when the kernel takes it, else through the
        stream (which waits for room, with trio's cancellation)."""
        sent = self.send_now(data)
        if sent == len(data):
            return
        await self.stream.send_all(memoryview(data)[sent:] if sent else data)


def response_head(status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
    """``HTTP/1.1 status reason`` and ``headers``, ending with the empty line.

    Raises :class:`ValueError` for a field that could split the head or smuggle one (a name
    that is not a token, a value with CR, LF or NUL: RFC 9110 §5.1, §5.5): never sent,
    whoever built it."""
    parts = [_STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status]
    for name, value in headers:
        if _BAD_NAME.search(name) or not name or _BAD_VALUE.search(value):
            raise ValueError(f"unsendable header field {name!r}")
        parts.append(b"%s: %s\r\n" % (name, value))
    parts.append(b"\r\n")
    return b"".join(parts)


_BAD_NAME = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")  # RFC 9110 §5.6.2 tchar
_BAD_VALUE = re.compile(rb"[\x00\r\n]")


def count_sent(conn: object, status: int, sent: int) -> None:
    """Tell a counting h11 connection (the access log's: it has ``sent``) about a response
    that went out without it."""
    counting: Any = conn
    if hasattr(counting, "sent"):
        counting.status = status
        counting.sent += sent


_date_cache: tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    """RFC 9110 §6.6.1 Date, formatted at most once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True).encode("ascii"))
    return _date_cache[1]


def fields(headers: Headers) -> list[tuple[bytes, bytes]]:
    """h11's parsed header fields as a plain list of (lowercase name, value): h11's
    ``Headers`` has no ``__iter__`` of its own, so each pass over it costs a ``__getitem__``
    call per field; a request's fields are read many times on the proxy's path."""
    return [(name.lower(), value) for name, value in headers.raw_items()]

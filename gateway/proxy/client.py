"""One HTTP/1.1 connection to an upstream, driven by h11 as the client.

This is the one boundary where the upstream's failures are translated: OS errors, EOF, h11's
protocol errors and our deadlines all leave as :class:`~gateway.errors.UpstreamError` (502) or
:class:`~gateway.errors.UpstreamTimeout` (504), and every one of them marks the connection
``broken``, so the pool never reuses it (RFC 9112 §9.3: after an error the framing of what
follows on the connection cannot be trusted).
"""

from __future__ import annotations

import select
from collections.abc import Callable

import h11
import trio

from gateway.core.upstream import Upstream
from gateway.errors import UpstreamError, UpstreamTimeout

RECEIVE_SIZE = 65536
MAX_RESPONSE_HEAD = 16 * 1024  # as h11's default and our own request-head limit


class UpstreamConnection:
    """An open connection to ``upstream``: send request events, read response events.

    Reads wait at most ``read_timeout`` between two successive reads (nginx's
    ``proxy_read_timeout``), writes at most ``read_timeout`` for the peer to take the bytes.
    """

    def __init__(self, stream: trio.SocketStream, upstream: Upstream, read_timeout: float) -> None:
        self.stream = stream
        self.upstream = upstream
        self.read_timeout = read_timeout
        self.conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD)
        self.broken = False
        self.exchanges = 0  # completed request/response exchanges (for reuse accounting)
        self.received = 0  # bytes received in the current exchange

    async def send(self, *events: h11.Event) -> None:
        """Serialise ``events`` with h11 and write them; raises :class:`UpstreamError`."""
        try:
            data = b"".join(self.conn.send(e) or b"" for e in events)
        except h11.LocalProtocolError:
            self.broken = True
            raise UpstreamError("request could not be framed for the upstream") from None
        with trio.move_on_after(self.read_timeout) as scope:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                self.broken = True
                raise UpstreamError("upstream connection broken while sending") from None
        if scope.cancelled_caught:
            self.broken = True
            raise UpstreamTimeout("upstream did not read the request in time")

    async def next_event(self, progress: Callable[[], int] | None = None) -> h11.Event:
        """The next response event (never ``NEED_DATA``).

        A read that waits ``read_timeout`` raises :class:`UpstreamTimeout`, unless
        ``progress()`` (the request body bytes sent so far) moved meanwhile: an upstream that
        is still being fed a slow upload is not stalled.
        """
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError:
                self.broken = True
                raise UpstreamError("upstream sent a malformed response") from None
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self._receive(progress))
                continue
            if not isinstance(event, h11.Event) or isinstance(event, h11.ConnectionClosed):
                self.broken = True  # PAUSED (a second response?) or the upstream hung up
                raise UpstreamError("upstream closed the connection")
            return event

    async def _receive(self, progress: Callable[[], int] | None) -> bytes:
        before = progress() if progress is not None else 0
        while True:
            with trio.move_on_after(self.read_timeout):
                try:
                    data = bytes(await self.stream.receive_some(RECEIVE_SIZE))
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    self.broken = True
                    raise UpstreamError("upstream connection broken") from None
                self.received += len(data)
                return data
            now = progress() if progress is not None else 0
            if now == before:
                self.broken = True
                raise UpstreamTimeout("upstream read timed out")
            before = now

    @property
    def reusable(self) -> bool:
        """True only after a complete, well-framed exchange that leaves the connection open
        (h11 says both sides are ``DONE``: no close-delimited body, no ``Connection: close``)."""
        return (
            not self.broken
            and self.conn.our_state is h11.DONE
            and self.conn.their_state is h11.DONE
        )

    def start_next_cycle(self) -> None:
        """Reset h11 for the next exchange; only call when :attr:`reusable`."""
        self.conn.start_next_cycle()
        self.exchanges += 1
        self.received = 0

    def is_stale(self) -> bool:
        """Whether an idle pooled connection is unusable: the upstream closed it (or sent
        bytes nobody asked for).  A zero-timeout poll of the socket, no await needed."""
        try:
            readable, _, _ = select.select([self.stream.socket.fileno()], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    async def aclose(self) -> None:
        """Close at once (no graceful goodbye is owed to an HTTP/1.1 peer)."""
        self.broken = True
        await trio.aclose_forcefully(self.stream)


async def connect(
    upstream: Upstream, *, connect_timeout: float, read_timeout: float
) -> UpstreamConnection:
    """Open a connection to ``upstream``: refused or unreachable -> :class:`UpstreamError` at
    once; no answer within ``connect_timeout`` -> :class:`UpstreamTimeout`."""
    with trio.move_on_after(connect_timeout) as scope:
        try:
            stream = await trio.open_tcp_stream(upstream.host, upstream.port)
        except OSError:
            raise UpstreamError("upstream refused or unreachable") from None
    if scope.cancelled_caught:
        raise UpstreamTimeout("upstream connect timed out")
    return UpstreamConnection(stream, upstream, read_timeout)

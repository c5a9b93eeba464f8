"""One HTTP/1.1 connection to an upstream, driven by h11 as the client.

This is the one boundary where the upstream's failures are translated: OS errors, EOF, h11's
protocol errors and our deadlines all leave as :class:`~gateway.errors.UpstreamError` (502) or
:class:`~gateway.errors.UpstreamTimeout` (504), and every one of them marks the connection
``broken``, so the pool never reuses it (RFC 9112 §9.3: after an error the framing of what
follows on the connection cannot be trusted).
"""

from __future__ import annotations

import enum
import os
import select
from collections.abc import Callable

import h11
import trio

from gateway.core.upstream import Upstream
from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.proxy.timer import ReadTimer, read_timer
from gateway.wire import Wire

RECEIVE_SIZE = 65536
MAX_RESPONSE_HEAD = 16 * 1024  # as h11's default and our own request-head limit


_END = h11.EndOfMessage()
_STATE_HOST = [(b"host", b"upstream")]  # h11 wants one on an HTTP/1.1 request
_NO_BODY = {
    method: h11.Request(method=method, target=b"/", headers=_STATE_HOST)
    for method in (b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS")
}


def request_state(method: bytes, length: int | None, chunked: bool) -> h11.Request:
    """A request as h11's client state machine needs to know it, for
    :meth:`UpstreamConnection.send_request`: the method (a response to HEAD has no body:
    RFC 9110 §9.3.2) and the body's framing (``Content-Length`` or chunked; h11 then holds
    the body sent to it).  Never serialised: the head that goes out is the proxy's.  (An
    ``Expect`` would only set h11's ``client_is_waiting_for_100_continue``, which the proxy
    does not read: a 100 from the upstream is relayed whatever it says.)"""
    if length is None and not chunked:
        known = _NO_BODY.get(method)  # the usual methods, built once
        if known is not None:
            return known
    headers = list(_STATE_HOST)
    if length is not None:
        headers.append((b"content-length", b"%d" % length))
    elif chunked:
        headers.append((b"transfer-encoding", b"chunked"))
    return h11.Request(method=method, target=b"/", headers=headers)


class Surplus(enum.Enum):
    """What an upstream connection holds beyond the response it owed."""

    EOF = "closed"  # the upstream closed it: unusable, but nothing was injected
    DATA = "data"  # bytes no request asked for: a desynchronised (or hostile) upstream


class UpstreamConnection:
    """An open connection to ``upstream``: send request events, read response events.

    Reads wait at most ``read_timeout`` between two successive reads (nginx's
    ``proxy_read_timeout``), writes at most ``read_timeout`` for the peer to take the bytes.
    Both go straight to the socket first (:class:`gateway.wire.Wire`).  A read that must wait
    has its deadline kept by the run's :class:`~gateway.proxy.timer.ReadTimer` (no cancel
    scope per read); a write that must wait, by a cancel scope.
    """

    def __init__(self, stream: trio.SocketStream, upstream: Upstream, read_timeout: float) -> None:
        self.stream = stream
        self.wire = Wire(stream)
        self.upstream = upstream
        self.read_timeout = read_timeout
        self.conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD)
        self.broken = False
        self.exchanges = 0  # completed request/response exchanges (for reuse accounting)
        self.received = 0  # bytes received in the current exchange
        self.carried_body = False  # the current request had a body (see pool: strict reuse)
        self._awaiting = False  # the request just went out: no answer can be there yet
        self._timer: ReadTimer | None = None  # this run's, once a read has to wait
        self.timed_out = False  # set by the timer: the read timeout passed (the end of it)

    async def send(self, *events: h11.Event) -> None:
        """Serialise ``events`` with h11 and write them (the request body's pieces: h11
        frames them, and holds them to the length the request announced); raises
        :class:`UpstreamError`."""
        try:
            data = b"".join(self.conn.send(e) or b"" for e in events)
        except h11.LocalProtocolError:
            self.broken = True
            raise UpstreamError("request could not be framed for the upstream") from None
        await self._write(data)

    async def send_request(
        self, head: bytes, state: h11.Request, body: bytes = b"", *, end: bool = False
    ) -> None:
        """Write a request ``head`` serialised by the proxy (:func:`gateway.proxy.headers.head`)
        and, with it, ``body`` and its end when ``end``: one write for a whole small request.

        ``state`` is the same request as h11's client state machine needs to know it
        (:func:`request_state`: the method, which frames the response to a HEAD, and the
        body's framing, which h11 then enforces on the body sent after it); h11's own bytes
        for it are dropped.  The head's fields came from h11's parser on the client side or
        from the proxy's rules, and :func:`~gateway.proxy.headers.head` checked them once
        more; building an ``h11.Request`` of them only to validate every field again with a
        regular expression cost more than a quarter of the proxy's own work per request."""
        conn = self.conn
        try:
            conn.send(state)
            if body:
                head += conn.send(h11.Data(data=body)) or b""
            if end:
                conn.send(_END)
        except h11.LocalProtocolError:
            self.broken = True
            raise UpstreamError("request could not be framed for the upstream") from None
        self._awaiting = True
        await self._write(head)

    async def _write(self, data: bytes) -> None:
        try:
            sent = self.wire.send_now(data)
        except trio.BrokenResourceError:
            self.broken = True
            raise UpstreamError("upstream connection broken while sending") from None
        if sent == len(data):
            return
        data = data[sent:]
        with trio.move_on_after(self.read_timeout) as scope:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                self.broken = True
                if self.timed_out:  # the read timer ended the response's wait: a 504 too
                    raise UpstreamTimeout("upstream read timed out") from None
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
        if self._awaiting:
            # The request just went out: no answer can be here yet, neither in h11's buffer
            # (the pool took the connection only with that empty) nor in the kernel's, so
            # wait for it at once instead of asking h11 and failing a read first.
            self._awaiting = False
            self.conn.receive_data(await self._receive(progress, wait=True))
        while (event := self.next_ready()) is None:
            self.conn.receive_data(await self._receive(progress))
        return event

    def next_ready(self) -> h11.Event | None:
        """As :meth:`next_event`, but ``None`` instead of reading when h11 needs more bytes."""
        try:
            event = self.conn.next_event()
        except h11.RemoteProtocolError:
            self.broken = True
            raise UpstreamError("upstream sent a malformed response") from None
        if event is h11.NEED_DATA:
            return None
        if isinstance(event, type) or type(event) is h11.ConnectionClosed:  # PAUSED: a sentinel
            self.broken = True  # PAUSED (a second response?) or the upstream hung up
            raise UpstreamError("upstream closed the connection")
        return event

    async def _receive(self, progress: Callable[[], int] | None, *, wait: bool = False) -> bytes:
        """The next bytes: at once when the kernel has them (unless ``wait``: the caller
        knows it has not), else after waiting (one deadline, and one failed read, at most)."""
        if not wait:
            ready = self.wire.receive_now(RECEIVE_SIZE)
            if ready is not None:
                self.received += len(ready)
                return ready
        wire = self.wire
        if wire.fd < 0:  # not a plain socket: trio's stream, under a cancel scope
            received = await self._receive_scoped(progress)
            self.received += len(received)
            return received
        # The deadline is the run's ReadTimer's (no cancel scope per wait: see timer.py).
        timer = self._timer
        if timer is None:
            timer = self._timer = read_timer()
        timer.add(self, wire.fd, self.read_timeout, progress)
        try:
            while True:
                await trio.lowlevel.wait_readable(wire.fd)
                data = wire.receive_now(RECEIVE_SIZE)
                if data is not None:
                    self.received += len(data)
                    return data
        except trio.ClosedResourceError:
            if self.timed_out:
                self.broken = True
                raise UpstreamTimeout("upstream read timed out") from None
            return b""  # closed under us: read as the end
        finally:
            timer.discard(self)
            if self.timed_out:
                # Also when the bytes came in the same scheduling batch as the timer's look
                # (they are read, and relayed): notify_closing was called, so the connection
                # must be closed, never reused.
                self.broken = True

    async def _receive_scoped(self, progress: Callable[[], int] | None) -> bytes:
        before = progress() if progress is not None else 0
        while True:
            with trio.move_on_after(self.read_timeout):
                return await self.wire.receive(RECEIVE_SIZE)  # a reset reads as the end
            now = progress() if progress is not None else 0
            if now == before:
                self.broken = True
                raise UpstreamTimeout("upstream read timed out")
            before = now

    @property
    def reusable(self) -> bool:
        """True only after a complete, well-framed exchange that leaves the connection open
        (h11 says both sides are ``DONE``: the request was sent whole, no close-delimited
        body, no ``Connection: close``).  The pool also asks :meth:`surplus` before reuse."""
        return (
            not self.broken
            and self.conn.our_state is h11.DONE
            and self.conn.their_state is h11.DONE
        )

    def surplus(self, *, poll: bool = True) -> Surplus | None:
        """What the upstream sent beyond the response it owed, if anything, without waiting.

        A response's framing tells where it ends; bytes past that end are the start of an
        answer nobody asked for (a ``Content-Length`` shorter than the body, a body on a
        204/304 or a HEAD answer, or a request body the upstream never read and answered as a
        second request: "CL.0").  On a reused connection they would be read as the answer to
        the *next* request, which may be another user's: response-queue poisoning.  Two
        places can hold them: h11's receive buffer (unparsed bytes that arrived in the same
        read as the response; a socket poll cannot see these) and the socket itself
        (``poll=False`` skips that syscall, for a caller that polls later anyway).
        """
        buffered, closed = self.conn.trailing_data
        if buffered:
            return Surplus.DATA
        if closed:
            return Surplus.EOF
        return self._poll() if poll else None

    def _poll(self) -> Surplus | None:
        # A zero-timeout poll, then (only when readable) one non-blocking read to tell an EOF
        # from data.  Reading consumes a byte: fine, the connection is closed either way.
        try:
            fd = self.stream.socket.fileno()
            readable, _, _ = select.select([fd], [], [], 0)
            if not readable:
                return None
            return Surplus.DATA if os.read(fd, 1) else Surplus.EOF
        except BlockingIOError:
            return None  # woken spuriously: nothing there after all
        except (OSError, ValueError):
            return Surplus.EOF  # reset or already closed: unusable, nothing was injected

    def start_next_cycle(self) -> None:
        """Reset h11 for the next exchange; only call when :attr:`reusable`."""
        self.conn.start_next_cycle()
        self.exchanges += 1
        self.received = 0
        self.carried_body = False

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

"""A server-side WebSocket connection with trio-websocket's interface, on the gateway's engine.

Handlers written for trio-websocket run unchanged: ``get_message``, ``send_message``, ``ping``,
``pong``, ``aclose``, ``closed``, ``path``, ``subprotocol``, ``local``, ``remote`` and
``handshake_headers`` behave the same and the same :class:`trio_websocket.ConnectionClosed` is
raised.  The engine underneath is the gateway's own (docs/design.md, option C): the 101 was
already sent through h11, :mod:`gateway.ws.parser` parses client frames with the limits built
in, and :mod:`gateway.ws.frames` encodes server frames.

Tasks and ownership: :meth:`serve` runs one nursery per connection.  The calling task is the
*reader*: it parses, answers pings, puts messages in the bounded :class:`Inbox` (when it is
full the reader stops reading and TCP pushes back on the client), and keeps the keepalive
clock on its receive deadline (a ping every ``ping_interval``, close 1011 if no pong comes
within ``ping_timeout``).  The plugin's handler runs as a child task.  Everything sent goes
through :class:`Outbound` (direct writes, flushes, and a writer task started on first need),
so frames never interleave and leave in the order they were queued.  Bytes queued without
waiting (broadcasts) are bounded: past ``outbound_queue_bytes`` the client is a slow consumer
and is closed with 1013, then aborted if the close cannot be written within 1 s.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Awaitable, Callable, Sequence

import trio
from trio.lowlevel import ParkingLot
from trio_websocket import CloseReason, ConnectionClosed, Endpoint

from gateway.ws import frames
from gateway.ws.deflate import DeflateParams, Deflater
from gateway.ws.inbox import Inbox, InboxClosed
from gateway.ws.limits import Limits
from gateway.ws.outbound import Outbound, OutboundClosed
from gateway.ws.parser import Close, FrameParser, Inflater, Ping, Pong, ProtocolError
from gateway.ws.pings import Pings

__all__ = ["DEFAULT_LIMITS", "Limits", "WebSocketConnection"]

log = logging.getLogger("gateway.ws")

RECEIVE_SIZE = 65536
SLOW_CONSUMER_GRACE = 1.0  # seconds to write the 1013 close before aborting (LIMITS.md)
CORK_BYTES = 64 * 1024  # at most this much of a handler's replies waits for one write

# RFC 6455 §7.4.1 codes the engine itself sends.
NORMAL, GOING_AWAY, ABNORMAL, INTERNAL_ERROR, TRY_AGAIN_LATER = 1000, 1001, 1006, 1011, 1013


DEFAULT_LIMITS = Limits()


class WebSocketConnection:
    """One accepted WebSocket; see the module docstring."""

    # Slots: a few hundred bytes less per connection than an instance dict.
    __slots__ = (
        "__weakref__",
        "_close_reason",
        "_close_sent",
        "_deflater",
        "_finished",
        "_finished_lot",
        "_handshake_headers",
        "_inbox",
        "_limits",
        "_local",
        "_out",
        "_parser",
        "_path",
        "_pings",
        "_remote",
        "_stream",
        "_stream_closed",
        "_subprotocol",
        "_trailing_data",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        path: str,
        subprotocol: str | None = None,
        handshake_headers: Sequence[tuple[bytes, bytes]] = (),
        local: Endpoint | None = None,
        remote: Endpoint | None = None,
        limits: Limits = DEFAULT_LIMITS,
        trailing_data: bytes = b"",
        compression: DeflateParams | None = None,
    ) -> None:
        self._stream = stream
        self._path = path
        self._subprotocol = subprotocol
        self._handshake_headers = tuple(handshake_headers)
        self._local = local
        self._remote = remote
        self._limits = limits
        self._trailing_data = trailing_data
        inflater = None
        self._deflater: Deflater | None = None
        if compression is not None:
            inflater = Inflater(
                compression.client_window_bits, compression.client_no_context_takeover
            )
            self._deflater = Deflater(compression)
        self._parser = FrameParser(limits.parser_limits(), inflater)
        self._close_reason: CloseReason | None = None
        self._close_sent = False
        self._finished = False  # the reader has stopped: no more frames will be read
        self._finished_lot: ParkingLot | None = None  # aclose() waiting for that
        self._stream_closed = False
        # Inbound messages: a bounded deque instead of a memory channel (a few hundred bytes
        # per idle connection less; ../docs/performance.md).
        self._inbox = Inbox(limits.inbound_queue)
        self._out = Outbound(stream, on_lost=self._lost, on_abort=self._close_stream)
        self._pings = Pings(limits.ping_interval, limits.ping_timeout)

    # -- trio-websocket's interface -------------------------------------------------------

    @property
    def closed(self) -> CloseReason | None:
        """Why the connection is closed or closing, or ``None`` while it is open."""
        return self._close_reason

    @property
    def is_client(self) -> bool:
        return False

    @property
    def is_server(self) -> bool:
        return True

    @property
    def local(self) -> Endpoint | None:
        return self._local

    @property
    def remote(self) -> Endpoint | None:
        return self._remote

    @property
    def path(self) -> str:
        """The request target of the handshake (path and query)."""
        return self._path

    @property
    def subprotocol(self) -> str | None:
        return self._subprotocol

    @property
    def handshake_headers(self) -> tuple[tuple[bytes, bytes], ...]:
        """The client's handshake request headers (lowercase names)."""
        return self._handshake_headers

    async def get_message(self) -> str | bytes:
        """The next message; messages that arrived before the peer closed are still delivered,
        then :class:`ConnectionClosed` is raised (as in trio-websocket).  After a local close
        queued messages are dropped."""
        try:
            return await self._inbox.get()
        except InboxClosed:
            raise ConnectionClosed(self._close_reason) from None

    async def send_message(self, message: str | bytes) -> None:
        """Send one message (``str`` as text, bytes as binary).

        Returns once the frame is handed to the kernel, or, while more received messages are
        waiting for this handler, once it is queued for the write that carries the replies to
        them all (at most 64 KiB; asyncio's ``transport.write`` buffers the same way).  A
        client that does not read backpressures the handler here.
        """
        if self._close_reason is not None:
            raise ConnectionClosed(self._close_reason)
        frame = self._encode(message)
        out = self._out
        if self._inbox and out.buffered + len(frame) < CORK_BYTES:
            # More messages are already waiting for this handler, so more sends are likely:
            # queue this frame and let the next write carry them all (one syscall per batch
            # instead of one per message).  The writer flushes it if the handler stops here.
            await trio.lowlevel.checkpoint_if_cancelled()
            out.queue(frame, buffered=True)
            out.wake()
            return
        if out.can_write_now():
            # The fast path: no task switch.  Cancellation is checked before the write, so a
            # cancelled send never half-happens.
            await trio.lowlevel.checkpoint_if_cancelled()
            sent = out.write_now(frame)
            if sent == len(frame):
                return
            frame = frame[sent:]
        out.queue(frame)
        await self._flush()

    async def ping(self, payload: bytes | None = None) -> None:
        """Send a ping and wait for the matching pong (a pong answers every earlier ping too)."""
        if self._close_reason is not None:
            raise ConnectionClosed(self._close_reason)
        if payload is None:
            payload = os.urandom(4)
        event = self._pings.register(payload)
        self._out.queue(frames.frame(frames.OP_PING, payload))
        await self._flush()
        await event.wait()
        if self._pings.unanswered(payload, event):
            raise ConnectionClosed(self._close_reason)

    async def pong(self, payload: bytes | None = None) -> None:
        """Send an unsolicited pong (a heartbeat, RFC 6455 §5.5.3)."""
        if self._close_reason is not None:
            raise ConnectionClosed(self._close_reason)
        self._out.queue(frames.frame(frames.OP_PONG, payload or b""))
        await self._flush()

    async def aclose(self, code: int = NORMAL, reason: str | None = None) -> None:
        """Start the closing handshake (if not started) and wait for it to finish, at most
        ``close_timeout`` seconds; then the TCP stream is closed.  Idempotent."""
        self._start_close(code, reason or "")
        self._inbox.discard()
        try:
            with trio.move_on_after(self._limits.close_timeout):
                try:
                    await self._flush()
                except ConnectionClosed:
                    pass  # the peer is gone already: nothing left to wait for
                while not self._finished:
                    if self._finished_lot is None:
                        self._finished_lot = ParkingLot()
                    await self._finished_lot.park()
        finally:
            await self._close_stream()

    # -- gateway extensions ------------------------------------------------------------------

    def send_nowait(self, message: str | bytes | frames.Prepared) -> bool:
        """Queue a message without waiting; a :class:`frames.Prepared` message shares its
        encoded frame with every other connection it is sent to (unless this one compresses).

        This is how a broadcast reaches many clients without awaiting the slowest.  Returns
        ``False`` if the connection is closing, or if the queue overflowed: then the client is
        a slow consumer and is being closed with 1013.
        """
        if self._close_reason is not None:
            return False
        if isinstance(message, frames.Prepared):
            frame = (
                message.frame if self._deflater is None else self._deflater.frame(message.message)
            )
        else:
            frame = self._encode(message)
        out = self._out
        if out.can_write_now():
            sent = out.write_now(frame)
            if sent == len(frame):
                return True
            frame = frame[sent:]
        out.queue(frame, buffered=True)
        if out.buffered > self._limits.outbound_queue_bytes:
            self._slow_consumer()
            return False
        out.wake()
        return True

    def close_nowait(self, code: int = NORMAL, reason: str = "") -> None:
        """Start the closing handshake without waiting (e.g. 1001 for every client at
        shutdown); frames already queued go out first.  The handler's next ``get_message``
        raises :class:`ConnectionClosed`."""
        self._start_close(code, reason)
        self._inbox.discard()

    @property
    def outbound_bytes(self) -> int:
        """Bytes queued by :meth:`send_nowait` that are not yet written."""
        return self._out.buffered

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read until the connection is closed (``nursery.start``); see :meth:`serve`."""
        await self.serve(None, task_status=task_status)

    async def serve(
        self,
        handler: Callable[[], Awaitable[None]] | None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run ``handler`` in a child task while this task reads, until the connection is
        closed and the handler has returned.  One nursery serves the whole connection; the
        writer task is started in it on first need (a connection that only echoes never has
        one)."""
        self._pings.start(trio.current_time())
        try:
            async with trio.open_nursery() as nursery:
                self._out.nursery = nursery
                if handler is not None:
                    nursery.start_soon(handler)
                task_status.started()
                self._out.start_if_wanted()
                await self._reader()
                # The reader stops once the closing handshake is decided; our last frames
                # (the Close reply) go out, then §7.1.1: the server closes TCP first.
                grace = SLOW_CONSUMER_GRACE if self._pings.failed else None
                with trio.move_on_after(grace or self._limits.close_timeout):
                    try:
                        await self._flush()
                    except ConnectionClosed:
                        pass  # the peer is gone: the stream is closed just below anyway
                self._out.scope.cancel()
                await self._close_stream()  # the handler may still run; its I/O now raises
        finally:
            self._out.nursery = None
            await self._close_stream()

    # -- internals ----------------------------------------------------------------------------

    def _encode(self, message: str | bytes) -> bytes:
        if self._deflater is not None:
            return self._deflater.frame(message)
        return frames.message_frame(message)

    def _start_close(self, code: int, reason: str) -> None:
        """Queue our Close frame once (§5.5.1) and record why we are closing."""
        if self._close_reason is None:
            self._close_reason = CloseReason(code, reason or None)
        if not self._close_sent:
            self._close_sent = True
            self._out.queue(frames.frame(frames.OP_CLOSE, frames.close_payload(code, reason)))
            self._out.wake()

    def _slow_consumer(self) -> None:
        log.info("closing slow consumer (%d bytes queued)", self._out.buffered)
        self._out.drop()
        self._start_close(TRY_AGAIN_LATER, "slow consumer")
        self._inbox.discard()
        self._out.abort_after(SLOW_CONSUMER_GRACE)

    async def _flush(self) -> None:
        """Return once everything queued so far is written (see :mod:`gateway.ws.outbound`)."""
        try:
            await self._out.flush()
        except OutboundClosed:
            raise ConnectionClosed(self._close_reason) from None

    def _keepalive(self) -> None:
        """The keepalive clock ran out: ping, or, if the last ping was never answered, close
        with 1011 and drop the stream if even that cannot be written."""
        payload = self._pings.tick(trio.current_time())
        if payload is not None:
            self._out.queue(frames.frame(frames.OP_PING, payload))
            return
        limits = self._limits
        log.info("no pong within %.1fs: closing", limits.ping_timeout)
        self._start_close(INTERNAL_ERROR, "keepalive ping timeout")
        self._inbox.discard()
        self._out.abort_after(min(limits.close_timeout, SLOW_CONSUMER_GRACE))

    async def _reader(self) -> None:
        parser = self._parser
        data: bytes | bytearray = self._trailing_data
        self._trailing_data = b""
        try:
            while True:
                error = None
                if data:
                    try:
                        parser.feed(data, trio.current_time())
                    except ProtocolError as exc:
                        error = exc  # deliver what came before the bad frame first
                for event in parser.events():
                    if type(event) is str or type(event) is bytes:
                        await self._inbox.put(event)
                    elif isinstance(event, Ping):
                        self._queue_control(frames.frame(frames.OP_PONG, event.payload))
                    elif isinstance(event, Pong):
                        self._pings.pong(event.payload)
                    elif isinstance(event, Close):
                        self._on_close(event)
                        return
                if error is not None:
                    # §7.1.7 "Fail the WebSocket Connection": send Close, then drop TCP.
                    self._fail(error.code, error.reason)
                    return
                if self._out.frames and not self._out.writing:
                    await self._flush()  # pongs and close replies go out from here
                if self._pings.due == math.inf:
                    data = await self._stream.receive_some(RECEIVE_SIZE)
                else:
                    # The keepalive clock: a cancelled receive_some loses no data (for TLS:
                    # the handshake is long done), so the wait itself is the timer.
                    with trio.move_on_at(self._pings.due) as timer:
                        data = await self._stream.receive_some(RECEIVE_SIZE)
                    if timer.cancelled_caught:
                        self._keepalive()
                        if self._pings.failed:
                            return  # run() writes the Close (bounded) and drops TCP
                        data = b""
                        continue
                if not data:
                    self._lost()  # EOF without a Close frame: 1006 (§7.1.5)
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._lost()
        finally:
            self._inbox.end()
            self._pings.release()

    def _on_close(self, event: Close) -> None:
        if self._close_sent:
            return  # the reply to our Close: the closing handshake is complete
        # The peer started the closing handshake: echo its code and reason (§5.5.1; browsers
        # report the *received* frame to the page) and finish.
        if self._close_reason is None:
            self._close_reason = CloseReason(event.code, event.reason or None)
        self._close_sent = True
        code = None if event.code == 1005 else event.code
        self._queue_control(frames.frame(frames.OP_CLOSE, frames.close_payload(code, event.reason)))

    def _fail(self, code: int, reason: str) -> None:
        """The peer broke the protocol: Close with ``code``; the reader then stops, and the
        messages that arrived before the bad frame are still delivered."""
        self._start_close(code, reason)

    def _queue_control(self, frame: bytes) -> None:
        self._out.queue(frame)  # the reader flushes it after this batch of events

    def _lost(self) -> None:
        if self._close_reason is None:
            self._close_reason = CloseReason(ABNORMAL, None)
        self._set_finished()

    def _set_finished(self) -> None:
        self._finished = True
        if self._finished_lot is not None:
            self._finished_lot.unpark_all()

    async def _close_stream(self) -> None:
        if self._stream_closed:
            return
        self._stream_closed = True
        self._out.closed = True
        self._set_finished()
        self._inbox.end()  # a reader waiting for inbox room must see the end
        with trio.CancelScope(shield=True):
            await self._stream.aclose()

"""A server-side WebSocket connection with trio-websocket's interface, on the gateway's engine.

Handlers written for trio-websocket run unchanged: ``get_message``, ``send_message``, ``ping``,
``pong``, ``aclose``, ``closed``, ``path``, ``subprotocol``, ``local``, ``remote`` and
``handshake_headers`` behave the same and the same :class:`trio_websocket.ConnectionClosed` is
raised.  The engine underneath is the gateway's own (docs/design.md, option C): the 101 was
already sent through h11, :mod:`gateway.ws.parser` parses client frames with the limits built
in, and :mod:`gateway.ws.frames` encodes server frames.

Tasks and ownership: :meth:`run` drives two background tasks in the caller's nursery.  The
*reader* parses, answers pings and queues messages.  The *writer* flushes frames queued without
waiting (e.g. by :meth:`send_nowait` from a broadcast) and keeps the keepalive clock: a ping
every ``ping_interval``, close 1011 if no pong comes within ``ping_timeout``.  All bytes go out
through one lock, so frames never interleave and leave in the order they were queued.

Inbound messages wait in a bounded channel: when it is full the reader stops reading and TCP
pushes back on the client.  Outbound bytes queued without waiting are bounded too: past
``outbound_queue_bytes`` the client is a slow consumer and is closed with 1013, then aborted if
the close cannot be written within 1 s.
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import trio
from trio.lowlevel import ParkingLot
from trio_websocket import CloseReason, ConnectionClosed, Endpoint

from gateway.ws import frames
from gateway.ws.deflate import DeflateParams, Deflater
from gateway.ws.parser import Close, FrameParser, Inflater, ParserLimits, Ping, Pong, ProtocolError

log = logging.getLogger("gateway.ws")

RECEIVE_SIZE = 65536
SLOW_CONSUMER_GRACE = 1.0  # seconds to write the 1013 close before aborting (LIMITS.md)
CORK_BYTES = 64 * 1024  # at most this much of a handler's replies waits for one write

# RFC 6455 §7.4.1 codes the engine itself sends.
NORMAL, GOING_AWAY, ABNORMAL, INTERNAL_ERROR, TRY_AGAIN_LATER = 1000, 1001, 1006, 1011, 1013


@dataclass(frozen=True)
class Limits:
    """Per-connection limits; see the ``[websocket]`` table in the README."""

    max_message_size: int = 1024 * 1024
    max_fragments: int = 1024
    max_frame_rate: float = 1000.0  # frames/s sustained; 0 disables
    frame_burst: float = 5000.0
    inbound_queue: int = 16
    outbound_queue_bytes: int = 1024 * 1024
    close_timeout: float = 10.0
    ping_interval: float = 20.0  # 0 disables keepalive
    ping_timeout: float = 20.0

    def parser_limits(self) -> ParserLimits:
        return ParserLimits(
            self.max_message_size, self.max_fragments, self.max_frame_rate, self.frame_burst
        )


DEFAULT_LIMITS = Limits()


class WebSocketConnection:
    """One accepted WebSocket; see the module docstring."""

    # Slots: a few hundred bytes less per connection than an instance dict.
    __slots__ = (
        "__weakref__",
        "_close_reason",
        "_close_sent",
        "_deflater",
        "_fd",
        "_finished",
        "_finished_lot",
        "_handshake_headers",
        "_inbox",
        "_inbox_discard",
        "_inbox_ended",
        "_inbox_lot",
        "_keepalive_failed",
        "_keepalive_payload",
        "_keepalive_sent",
        "_limits",
        "_local",
        "_next_keepalive",
        "_nursery",
        "_outbox",
        "_outbox_bytes",
        "_parser",
        "_path",
        "_pings",
        "_queued",
        "_reader_lot",
        "_remote",
        "_stream",
        "_stream_closed",
        "_subprotocol",
        "_trailing_data",
        "_wanted_writer",
        "_writer_lot",
        "_writer_scope",
        "_writer_started",
        "_writing",
        "_written",
        "_written_lot",
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
        # The socket's fd for direct, non-blocking writes (plain TCP only: TLS must go
        # through SSLStream).
        self._fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
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
        self._inbox: list[str | bytes] = []  # short (inbound_queue): a list beats a deque
        self._inbox_ended = False  # no more messages will be added
        self._inbox_discard = False  # closing locally: drop what arrives, raise on reads
        self._inbox_lot = ParkingLot()  # get_message() waiting for a message
        self._reader_lot = ParkingLot()  # the reader waiting for room in the inbox
        # Outbound frames: a FIFO of encoded frames written by whoever is the current writer.
        self._outbox: list[bytes] = []
        self._outbox_bytes = 0
        self._queued = 0  # frames ever queued
        self._written = 0  # frames ever handed to the stream
        self._writing = False
        self._written_lot: ParkingLot | None = None  # senders waiting for their frame
        self._writer_lot = ParkingLot()
        self._writer_scope = trio.CancelScope()
        self._writer_started = False
        self._wanted_writer = False
        self._nursery: trio.Nursery | None = None
        self._keepalive_failed = False
        self._pings: OrderedDict[bytes, trio.Event] | None = None
        self._keepalive_payload: bytes | None = None
        self._keepalive_sent = 0.0
        self._next_keepalive = math.inf

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
        inbox = self._inbox
        while not inbox or self._inbox_discard:
            if self._inbox_ended or self._inbox_discard:
                await trio.lowlevel.checkpoint()
                raise ConnectionClosed(self._close_reason)
            await self._inbox_lot.park()
        # A cancel point without a trip through the scheduler: the next send or receive of
        # any real handler is a schedule point anyway, and the inbox is bounded.
        await trio.lowlevel.checkpoint_if_cancelled()
        message = inbox.pop(0)
        self._reader_lot.unpark()
        return message

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
        if self._inbox and self._outbox_bytes + len(frame) < CORK_BYTES:
            # More messages are already waiting for this handler, so more sends are likely:
            # queue this frame and let the next write carry them all (one syscall per batch
            # instead of one per message).  The writer flushes it if the handler stops here.
            await trio.lowlevel.checkpoint_if_cancelled()
            self._queue(frame)
            self._outbox_bytes += len(frame)
            self._wake_writer()
            return
        if self._can_write_now():
            # The fast path: no task switch.  Cancellation is checked before the write, so a
            # cancelled send never half-happens.
            await trio.lowlevel.checkpoint_if_cancelled()
            sent = self._write_now(frame)
            if sent == len(frame):
                return
            frame = frame[sent:]
        self._queue(frame)
        await self._flush()

    async def ping(self, payload: bytes | None = None) -> None:
        """Send a ping and wait for the matching pong (a pong answers every earlier ping too)."""
        if self._close_reason is not None:
            raise ConnectionClosed(self._close_reason)
        if payload is None:
            payload = os.urandom(4)
        if self._pings is None:
            self._pings = OrderedDict()
        if payload in self._pings:
            raise ValueError(f"a ping with payload {payload!r} is already in flight")
        event = trio.Event()
        self._pings[payload] = event
        self._queue(frames.frame(frames.OP_PING, payload))
        await self._flush()
        await event.wait()
        if self._pings.get(payload) is event:
            # Still registered: woken by the connection closing, not by a pong.
            del self._pings[payload]
            raise ConnectionClosed(self._close_reason)

    async def pong(self, payload: bytes | None = None) -> None:
        """Send an unsolicited pong (a heartbeat, RFC 6455 §5.5.3)."""
        if self._close_reason is not None:
            raise ConnectionClosed(self._close_reason)
        self._queue(frames.frame(frames.OP_PONG, payload or b""))
        await self._flush()

    async def aclose(self, code: int = NORMAL, reason: str | None = None) -> None:
        """Start the closing handshake (if not started) and wait for it to finish, at most
        ``close_timeout`` seconds; then the TCP stream is closed.  Idempotent."""
        self._start_close(code, reason or "")
        self._discard_inbox()
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
        if self._can_write_now():
            sent = self._write_now(frame)
            if sent == len(frame):
                return True
            frame = frame[sent:]
        self._queue(frame)
        self._outbox_bytes += len(frame)
        if self._outbox_bytes > self._limits.outbound_queue_bytes:
            self._slow_consumer()
            return False
        self._wake_writer()
        return True

    def close_nowait(self, code: int = NORMAL, reason: str = "") -> None:
        """Start the closing handshake without waiting (e.g. 1001 for every client at
        shutdown); frames already queued go out first.  The handler's next ``get_message``
        raises :class:`ConnectionClosed`."""
        self._start_close(code, reason)
        self._discard_inbox()

    @property
    def outbound_bytes(self) -> int:
        """Bytes queued by :meth:`send_nowait` that are not yet written."""
        return self._outbox_bytes

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
        if self._limits.ping_interval > 0:
            self._next_keepalive = trio.current_time() + self._limits.ping_interval
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if handler is not None:
                    nursery.start_soon(handler)
                task_status.started()
                if self._wanted_writer:
                    self._wake_writer()
                await self._reader()
                # The reader stops once the closing handshake is decided; our last frames
                # (the Close reply) go out, then §7.1.1: the server closes TCP first.
                grace = SLOW_CONSUMER_GRACE if self._keepalive_failed else None
                with trio.move_on_after(grace or self._limits.close_timeout):
                    try:
                        await self._flush()
                    except ConnectionClosed:
                        pass
                self._writer_scope.cancel()
                await self._close_stream()  # the handler may still run; its I/O now raises
        finally:
            self._nursery = None
            await self._close_stream()

    # -- internals ----------------------------------------------------------------------------

    def _can_write_now(self) -> bool:
        """A plain TCP socket, nothing queued, nobody writing: bytes may go out right away."""
        return self._fd >= 0 and not self._writing and not self._outbox and not self._stream_closed

    def _write_now(self, data: bytes) -> int:
        """Write what the socket takes without blocking; the rest goes through the writer.

        This is how a broadcast reaches 1000 clients without 1000 task switches (asyncio's
        ``transport.write`` works the same way).  Only called when :meth:`_can_write_now`, so
        bytes never interleave with a ``send_all`` in progress.  Errors are left for the
        regular path (``send_all``) to report.
        """
        try:
            return os.write(self._fd, data)
        except OSError:
            return 0

    def _queue(self, frame: bytes) -> None:
        self._outbox.append(frame)
        self._queued += 1

    def _discard_inbox(self) -> None:
        """A local close: queued messages are dropped, readers raise, and the reader task must
        not block on a full inbox while it waits for the peer's Close."""
        self._inbox_discard = True
        self._inbox.clear()
        self._inbox_lot.unpark_all()
        self._reader_lot.unpark_all()

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
            self._queue(frames.frame(frames.OP_CLOSE, frames.close_payload(code, reason)))
            self._wake_writer()

    def _abort_after(self, grace: float) -> None:
        """Give whatever write is pending ``grace`` more seconds, then drop the stream."""
        deadline = trio.current_time() + grace
        self._writer_scope.deadline = min(self._writer_scope.deadline, deadline)

    def _slow_consumer(self) -> None:
        log.info("closing slow consumer (%d bytes queued)", self._outbox_bytes)
        self._written += len(self._outbox)  # dropped: nobody waits for them any more
        self._outbox.clear()
        self._outbox_bytes = 0
        self._start_close(TRY_AGAIN_LATER, "slow consumer")
        self._discard_inbox()
        self._abort_after(SLOW_CONSUMER_GRACE)

    async def _flush(self) -> None:
        """Return once every frame queued so far is written, in order.

        One task at a time is the writer: it writes the whole outbox with one ``send_all``,
        then whatever was queued meanwhile.  Others wait until the writer has covered their
        frames (or stopped, in which case one of them takes over).
        """
        target = self._queued
        while self._writing:
            if self._written >= target:
                await trio.lowlevel.checkpoint()
                return
            if self._written_lot is None:
                self._written_lot = ParkingLot()
            await self._written_lot.park()
        if self._written >= target:
            await trio.lowlevel.checkpoint()
            return
        self._writing = True
        try:
            while self._outbox:
                outbox = self._outbox
                data = outbox[0] if len(outbox) == 1 else b"".join(outbox)
                count = len(outbox)
                self._outbox = []
                self._outbox_bytes = 0
                try:
                    await self._stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._lost()
                    raise ConnectionClosed(self._close_reason) from None
                self._written += count
                if self._written_lot is not None:
                    self._written_lot.unpark_all()
        finally:
            self._writing = False
            if self._written_lot is not None:
                self._written_lot.unpark_all()

    def _wake_writer(self) -> None:
        """Make sure frames queued without waiting get written: wake the writer task, or
        start it (in :meth:`run`'s nursery) the first time it is needed."""
        if self._writer_started:
            self._writer_lot.unpark()
        elif self._nursery is not None:
            self._writer_started = True
            self._nursery.start_soon(self._writer)
        else:
            self._wanted_writer = True  # before run(): it starts the writer

    async def _writer(self) -> None:
        """Flush frames queued without waiting (broadcasts, closes started from outside)."""
        with self._writer_scope:
            while True:
                if not self._outbox:
                    await self._writer_lot.park()
                    continue
                try:
                    await self._flush()
                except ConnectionClosed:
                    return
        if self._writer_scope.cancelled_caught:
            await self._close_stream()  # a grace period ran out: abort

    def _keepalive(self) -> None:
        """Ping every ``ping_interval``; no pong within ``ping_timeout`` means the peer is gone
        (half-open TCP): close with 1011 and drop the stream if even that cannot be written."""
        limits = self._limits
        now = trio.current_time()
        if self._keepalive_payload is not None:
            log.info("no pong within %.1fs: closing", limits.ping_timeout)
            self._start_close(INTERNAL_ERROR, "keepalive ping timeout")
            self._discard_inbox()
            self._abort_after(min(limits.close_timeout, SLOW_CONSUMER_GRACE))
            self._next_keepalive = math.inf
            self._keepalive_failed = True
            return
        self._keepalive_payload = os.urandom(4)
        self._keepalive_sent = now
        self._queue(frames.frame(frames.OP_PING, self._keepalive_payload))
        self._next_keepalive = now + limits.ping_timeout

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
                        await self._deliver(event)
                    elif isinstance(event, Ping):
                        self._queue_control(frames.frame(frames.OP_PONG, event.payload))
                    elif isinstance(event, Pong):
                        self._pong(event.payload)
                    elif isinstance(event, Close):
                        self._on_close(event)
                        return
                if error is not None:
                    # §7.1.7 "Fail the WebSocket Connection": send Close, then drop TCP.
                    self._fail(error.code, error.reason)
                    return
                if self._outbox and not self._writing:
                    await self._flush()  # pongs and close replies go out from here
                if self._next_keepalive == math.inf:
                    data = await self._stream.receive_some(RECEIVE_SIZE)
                else:
                    # The keepalive clock: a cancelled receive_some loses no data (for TLS:
                    # the handshake is long done), so the wait itself is the timer.
                    with trio.move_on_at(self._next_keepalive) as timer:
                        data = await self._stream.receive_some(RECEIVE_SIZE)
                    if timer.cancelled_caught:
                        self._keepalive()
                        if self._keepalive_failed:
                            return  # run() writes the Close (bounded) and drops TCP
                        data = b""
                        continue
                if not data:
                    self._lost()  # EOF without a Close frame: 1006 (§7.1.5)
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._lost()
        finally:
            self._inbox_ended = True
            self._inbox_lot.unpark_all()
            self._release_pings()

    async def _deliver(self, message: str | bytes) -> None:
        """Queue a message for the handler; when the inbox is full, stop reading (TCP then
        pushes back on the client) until the handler takes one."""
        while len(self._inbox) >= self._limits.inbound_queue and not self._inbox_discard:
            if self._stream_closed:
                return
            await self._reader_lot.park()
        if self._inbox_discard:
            return  # closing locally: nobody will read it
        self._inbox.append(message)
        self._inbox_lot.unpark()

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
        self._queue(frame)  # the reader flushes it after this batch of events

    def _pong(self, payload: bytes) -> None:
        if payload == self._keepalive_payload:
            self._keepalive_payload = None
            self._next_keepalive = self._keepalive_sent + self._limits.ping_interval
        if self._pings is None or payload not in self._pings:
            return  # unsolicited pong: a heartbeat, nothing to do
        while self._pings:
            key, event = self._pings.popitem(last=False)
            event.set()
            if key == payload:
                break

    def _release_pings(self) -> None:
        for event in (self._pings or {}).values():
            event.set()

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
        self._set_finished()
        self._reader_lot.unpark_all()  # a reader waiting for inbox room must see the end
        with trio.CancelScope(shield=True):
            await self._stream.aclose()

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
from collections.abc import Sequence
from dataclasses import dataclass

import trio
from trio_websocket import CloseReason, ConnectionClosed, Endpoint

from gateway.ws import frames
from gateway.ws.deflate import DeflateParams, Deflater
from gateway.ws.parser import Close, FrameParser, Inflater, ParserLimits, Ping, Pong, ProtocolError

log = logging.getLogger("gateway.ws")

RECEIVE_SIZE = 65536
SLOW_CONSUMER_GRACE = 1.0  # seconds to write the 1013 close before aborting (LIMITS.md)

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
        self._close_done = trio.Event()
        self._stream_closed = False
        self._inbound_send, self._inbound_recv = trio.open_memory_channel[str | bytes](
            limits.inbound_queue
        )
        self._send_lock = trio.StrictFIFOLock()
        self._outbox: list[bytes] = []
        self._outbox_bytes = 0
        self._writer_lot = trio.lowlevel.ParkingLot()
        self._writer_scope = trio.CancelScope()
        self._pings: OrderedDict[bytes, trio.Event] = OrderedDict()
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
        then :class:`ConnectionClosed` is raised (as in trio-websocket)."""
        try:
            return await self._inbound_recv.receive()
        except (trio.ClosedResourceError, trio.EndOfChannel):
            raise ConnectionClosed(self._close_reason) from None

    async def send_message(self, message: str | bytes) -> None:
        """Send one message (``str`` as text, bytes as binary); returns once it is written."""
        if self._close_reason is not None:
            raise ConnectionClosed(self._close_reason)
        self._outbox.append(self._encode(message))
        await self._flush()

    async def ping(self, payload: bytes | None = None) -> None:
        """Send a ping and wait for the matching pong (a pong answers every earlier ping too)."""
        if self._close_reason is not None:
            raise ConnectionClosed(self._close_reason)
        if payload is None:
            payload = os.urandom(4)
        if payload in self._pings:
            raise ValueError(f"a ping with payload {payload!r} is already in flight")
        event = trio.Event()
        self._pings[payload] = event
        self._outbox.append(frames.frame(frames.OP_PING, payload))
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
        self._outbox.append(frames.frame(frames.OP_PONG, payload or b""))
        await self._flush()

    async def aclose(self, code: int = NORMAL, reason: str | None = None) -> None:
        """Start the closing handshake (if not started) and wait for it to finish, at most
        ``close_timeout`` seconds; then the TCP stream is closed.  Idempotent."""
        self._start_close(code, reason or "")
        # Queued messages are discarded on a local close, and the reader must not block on a
        # full queue while it waits for the peer's close frame.
        self._inbound_recv.close()
        try:
            with trio.move_on_after(self._limits.close_timeout):
                await self._flush()
                await self._close_done.wait()
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
        self._outbox.append(frame)
        self._outbox_bytes += len(frame)
        if self._outbox_bytes > self._limits.outbound_queue_bytes:
            self._slow_consumer()
            return False
        self._writer_lot.unpark()
        return True

    def close_nowait(self, code: int = NORMAL, reason: str = "") -> None:
        """Start the closing handshake without waiting (e.g. 1001 for every client at
        shutdown); frames already queued go out first.  The handler's next ``get_message``
        raises :class:`ConnectionClosed`."""
        self._start_close(code, reason)
        self._inbound_recv.close()

    @property
    def outbound_bytes(self) -> int:
        """Bytes queued by :meth:`send_nowait` that are not yet written."""
        return self._outbox_bytes

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drive the reader and writer until the connection is closed (``nursery.start``)."""
        if self._limits.ping_interval > 0:
            self._next_keepalive = trio.current_time() + self._limits.ping_interval
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer)
                task_status.started()
                await self._reader()
                # The reader stops once the closing handshake is decided; our last frames
                # (the Close reply) go out, then §7.1.1: the server closes TCP first.
                with trio.move_on_after(self._limits.close_timeout):
                    try:
                        await self._flush()
                    except ConnectionClosed:
                        pass
                nursery.cancel_scope.cancel()
        finally:
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
            self._outbox.append(frames.frame(frames.OP_CLOSE, frames.close_payload(code, reason)))
            self._writer_lot.unpark()

    def _abort_after(self, grace: float) -> None:
        """Give whatever write is pending ``grace`` more seconds, then drop the stream."""
        deadline = trio.current_time() + grace
        self._writer_scope.deadline = min(self._writer_scope.deadline, deadline)

    def _slow_consumer(self) -> None:
        log.info("closing slow consumer (%d bytes queued)", self._outbox_bytes)
        self._outbox.clear()
        self._outbox_bytes = 0
        self._start_close(TRY_AGAIN_LATER, "slow consumer")
        self._inbound_recv.close()
        self._abort_after(SLOW_CONSUMER_GRACE)

    async def _flush(self) -> None:
        """Write everything queued so far, in order (one ``send_all`` for the whole batch)."""
        async with self._send_lock:
            if not self._outbox:
                return
            data = self._outbox[0] if len(self._outbox) == 1 else b"".join(self._outbox)
            self._outbox.clear()
            self._outbox_bytes = 0
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._lost()
                raise ConnectionClosed(self._close_reason) from None

    async def _writer(self) -> None:
        """Flush frames queued without waiting, and run the keepalive clock."""
        with self._writer_scope:
            while True:
                if not self._outbox:
                    with trio.move_on_at(self._next_keepalive):
                        await self._writer_lot.park()
                    if trio.current_time() >= self._next_keepalive:
                        self._keepalive()
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
            self._fail(INTERNAL_ERROR, "keepalive ping timeout")
            self._abort_after(min(limits.close_timeout, SLOW_CONSUMER_GRACE))
            self._next_keepalive = math.inf
            return
        self._keepalive_payload = os.urandom(4)
        self._keepalive_sent = now
        self._outbox.append(frames.frame(frames.OP_PING, self._keepalive_payload))
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
                data = await self._stream.receive_some(RECEIVE_SIZE)
                if not data:
                    self._lost()  # EOF without a Close frame: 1006 (§7.1.5)
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._lost()
        finally:
            self._inbound_send.close()
            self._release_pings()

    async def _deliver(self, message: str | bytes) -> None:
        try:
            await self._inbound_send.send(message)
        except trio.BrokenResourceError:
            pass  # closing locally: nobody will read it

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
        self._start_close(code, reason)
        self._inbound_recv.close()

    def _queue_control(self, frame: bytes) -> None:
        self._outbox.append(frame)
        self._writer_lot.unpark()

    def _pong(self, payload: bytes) -> None:
        if payload == self._keepalive_payload:
            self._keepalive_payload = None
            self._next_keepalive = self._keepalive_sent + self._limits.ping_interval
        if payload not in self._pings:
            return  # unsolicited pong: a heartbeat, nothing to do
        while self._pings:
            key, event = self._pings.popitem(last=False)
            event.set()
            if key == payload:
                break

    def _release_pings(self) -> None:
        for event in self._pings.values():
            event.set()

    def _lost(self) -> None:
        if self._close_reason is None:
            self._close_reason = CloseReason(ABNORMAL, None)
        self._close_done.set()

    async def _close_stream(self) -> None:
        if self._stream_closed:
            return
        self._stream_closed = True
        self._close_done.set()
        with trio.CancelScope(shield=True):
            await self._stream.aclose()

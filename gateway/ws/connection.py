"""A server-side WebSocket connection with trio-websocket's interface, on the gateway's engine.

Handlers written for trio-websocket run unchanged: the connection is a
:class:`trio.abc.AsyncResource` (``async with ws:``), ``get_message``, ``send_message``,
``ping``, ``pong``, ``aclose``, ``closed``, ``is_client``, ``is_server``, ``path``,
``subprotocol``, ``local``, ``remote`` and ``handshake_headers`` behave the same, and the same
:class:`trio_websocket.ConnectionClosed` (with its :class:`trio_websocket.CloseReason`) is
raised; tests/ws/test_compat.py runs the same checks against both.

The engine underneath is the gateway's own (docs/design.md, option C): the 101 was already
sent by the seam (:mod:`gateway.upgrade`), :mod:`gateway.ws.parser` parses client frames
with the limits built in, and :mod:`gateway.ws.frames` encodes server frames.

Tasks: :meth:`serve` (or the :meth:`serving` context) runs the handler in the calling task. The
helper tasks (a reader, a writer) are started on need in the nursery that started that task
(the server's), not in a nursery of the connection's own: an idle connection keeps no nursery,
cancel scope and task set (~1 KiB each, docs/performance.md). :meth:`serve` still returns only
once its helpers are done (it cancels them on the way out), and a helper that fails drops only
its own connection, logged. Who reads the socket (the handler itself inside ``get_message``, or
a reader task while it is busy elsewhere) is :mod:`gateway.ws.reading`'s job; this module adds
the API, sending and closing.

Pongs and Close replies are written without waiting (directly, or by the writer task).  The
keepalive clock lives in the attendant (:mod:`gateway.ws.attendant`: a ping every
``ping_interval``, close 1011 if no pong comes within ``ping_timeout``).  Everything sent goes
through :class:`Outbound`, so frames never interleave and leave in the order they were
queued.  Bytes queued without waiting (broadcasts, pongs) are bounded: past
``outbound_queue_bytes`` the client is a slow consumer and is closed with 1013, then aborted
if the close cannot be written within 1 s.
"""

from __future__ import annotations

import logging
import math
import os
import types
from collections.abc import Awaitable, Callable, Sequence

import trio
from trio_websocket import CloseReason, ConnectionClosed, Endpoint

from gateway.core import headers as hdr
from gateway.errors import StreamLost, is_sendable_close_code
from gateway.ws import frames
from gateway.ws.attendant import call_at
from gateway.ws.deflate import DeflateParams
from gateway.ws.frames import CloseCode
from gateway.ws.inbox import Inbox
from gateway.ws.limits import Limits
from gateway.ws.outbound import Outbound
from gateway.ws.protocol import Protocol
from gateway.ws.reading import ATTEND_AFTER, Reader

__all__ = ["ATTEND_AFTER", "DEFAULT_LIMITS", "Limits", "WebSocketConnection"]

log = logging.getLogger("gateway.ws")

SLOW_CONSUMER_GRACE = 1.0  # seconds to write the 1013 close before aborting (LIMITS.md)
CORK_BYTES = 64 * 1024  # at most this much of a handler's replies waits for one write
LARGE_SEND = 64 * 1024  # binary messages from this size on: header and payload not joined

NORMAL = CloseCode.NORMAL_CLOSURE


DEFAULT_LIMITS = Limits()
_FROM_STREAM = Endpoint("0.0.0.0", 0, False)  # marker: compute local/remote from the socket


class WebSocketConnection(trio.abc.AsyncResource):
    """One accepted WebSocket; see the module docstring.

    A :class:`trio.abc.AsyncResource`, as trio-websocket's connection is: ``async with ws:``
    closes it with 1000 on the way out (:meth:`aclose`).  Every method raises
    :class:`trio_websocket.ConnectionClosed` (carrying :attr:`closed`) once the connection is
    closed or closing, but for :meth:`aclose` and :meth:`close_nowait`, which never do.
    """

    # Slots: a few hundred bytes less per connection than an instance dict (a dict of them:
    # the public counters carry docstrings).
    __slots__ = {
        "__weakref__": None,
        "_closed": None,
        "_handshake_headers": None,
        "_helpers": None,
        "_helpers_done": None,
        "_inbox": None,
        "_local": None,
        "_nursery": None,
        "_out": None,
        "_path": None,
        "_proto": None,
        "_reader": None,
        "_remote": None,
        "_stream": None,
        "_subprotocol": None,
        "_trailing_data": None,
        "bytes_in": "Payload bytes of the messages the handler received (text as UTF-8).",
        "bytes_out": "Payload bytes of the messages the handler sent (text as UTF-8).",
        "messages_in": "Messages the handler received (``get_message``).",
        "messages_out": "Messages the handler sent (``send_message``; fan-out is the mount's).",
    }

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        path: str,
        subprotocol: str | None = None,
        handshake_headers: Sequence[tuple[bytes, bytes]] | bytes = (),
        local: Endpoint | None = _FROM_STREAM,
        remote: Endpoint | None = _FROM_STREAM,
        limits: Limits = DEFAULT_LIMITS,
        trailing_data: bytes = b"",
        compression: DeflateParams | None = None,
    ) -> None:
        """``handshake_headers`` may be a block packed by :func:`gateway.core.headers.pack`
        (unpacked on use); ``local``/``remote`` default to the stream's socket addresses."""
        self._stream = stream
        self._path = path
        self._subprotocol = subprotocol
        self._handshake_headers = (
            handshake_headers if isinstance(handshake_headers, bytes) else tuple(handshake_headers)
        )
        self._local = local
        self._remote = remote
        self._trailing_data = trailing_data
        # What the handler received and sent (messages, payload bytes): plain ints read by
        # the metrics collector at scrape time and by the session's closing log line.
        self.messages_in = self.messages_out = self.bytes_in = self.bytes_out = 0
        self._proto = Protocol(limits, compression)  # the rules; this object does the I/O
        self._closed: CloseReason | None = None  # `closed`, built once from the protocol's
        self._inbox = Inbox()
        self._out = Outbound(stream, owner=self)
        self._reader = Reader(stream, self._proto, self._inbox, owner=self)
        self._nursery: trio.Nursery | None = None  # where helper tasks start (see serve)
        self._helpers: list[trio.CancelScope] | None = None  # theirs, while any runs
        self._helpers_done: trio.Event | None = None  # serve() waiting for them to end

    # -- trio-websocket's interface -------------------------------------------------------

    @property
    def closed(self) -> CloseReason | None:
        """Why the connection is closed or closing, or ``None`` while it is open: the code
        and reason of whichever Close came first (ours, or the peer's), 1006 if the stream
        was lost without one."""
        reason = self._closed
        if reason is None:
            close = self._proto.close
            if close is None:
                return None
            reason = self._closed = CloseReason(close.code, close.reason or None)
        return reason

    @property
    def is_client(self) -> bool:
        """Always ``False``: the gateway is the server."""
        return False

    @property
    def is_server(self) -> bool:
        """Always ``True``."""
        return True

    @property
    def local(self) -> Endpoint | str | None:
        """The local address as an :class:`~trio_websocket.Endpoint`; for a stream that has
        no socket, its ``repr`` (as trio-websocket); ``None`` once the socket is closed."""
        if self._local is _FROM_STREAM:
            return _endpoint(self._stream, local=True)
        return self._local

    @property
    def remote(self) -> Endpoint | str | None:
        """The client's address, as :attr:`local` (behind a proxy, the proxy's: the client's
        own address is ``session.remote``)."""
        if self._remote is _FROM_STREAM:
            return _endpoint(self._stream, local=False)
        return self._remote

    @property
    def path(self) -> str:
        """The request target of the handshake (path and query)."""
        return self._path

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol agreed in the handshake, or ``None``."""
        return self._subprotocol

    @property
    def handshake_headers(self) -> tuple[tuple[bytes, bytes], ...]:
        """The client's handshake request headers (lowercase names)."""
        headers = self._handshake_headers
        return hdr.unpack(headers) if isinstance(headers, bytes) else headers

    async def get_message(self) -> str | bytes:
        """The next message: ``str`` for a text message, ``bytes`` for a binary one.

        Messages that arrived before the peer closed are still delivered, then
        :class:`ConnectionClosed` is raised (as in trio-websocket).  After a local close
        (:meth:`aclose`, :meth:`close_nowait`, a slow consumer, a keepalive timeout) queued
        messages are dropped and it raises at once.

        Safe to cancel: a cancelled call loses no message and no received bytes (what was
        read is parsed into the queue before the call returns or raises).  With nothing
        queued and nobody reading, the calling task reads the socket itself (see the module
        docstring).  Several tasks may wait at once; each message goes to one of them.

        :raises ConnectionClosed: the connection is closed and no message is left."""
        inbox = self._inbox
        messages = inbox.messages
        while True:
            if inbox.discarding:
                await trio.lowlevel.checkpoint()
                raise ConnectionClosed(self.closed)
            if messages:
                # A cancel point without a trip through the scheduler: the next send or
                # receive of any real handler is a schedule point anyway.
                await trio.lowlevel.checkpoint_if_cancelled()
                message = messages.pop(0)
                if inbox.waiters:
                    inbox.waiters.wake()  # the reader waiting for room, or the next handler
                self.messages_in += 1
                self.bytes_in += frames.payload_size(message)
                return message
            reader = self._reader
            if not self._proto.receiving:
                await self._conclude()
                raise ConnectionClosed(self.closed)
            if reader.reading or reader.running:
                reader.maybe_hand_back(getting=True)
                await inbox.waiters.wait()
            else:
                await reader.read_more(inline=True)

    async def send_message(self, message: str | bytes) -> None:
        """Send one message (``str`` as text, bytes as binary).

        Returns once the frame is handed to the kernel, or, while more received messages are
        waiting for this handler, once it is queued for the write that carries the replies to
        them all (at most 64 KiB; asyncio's ``transport.write`` buffers the same way).  A
        client that does not read backpressures the handler here.

        Not entirely safe to cancel: a call cancelled before its frame is queued sends
        nothing, but once the frame is queued (behind another write, or half written) it is
        sent whole, since a cut frame would break the stream.

        :raises ConnectionClosed: the connection is closed or closing (also when it closes
            while this call waits for the write).
        :raises gateway.errors.MessageTypeError: ``message`` is neither ``str`` nor bytes-like
            (a :class:`ValueError`, as trio-websocket raises, and a :class:`TypeError`).
        """
        proto = self._proto
        if proto.close is not None:
            raise ConnectionClosed(self.closed)
        if type(message) is bytes and len(message) >= LARGE_SEND:
            header = proto.send_binary_header(message)
            if header is not None:
                self.messages_out += 1
                self.bytes_out += len(message)
                # Header and payload leave in one writev, never joined into a copy.
                await trio.lowlevel.checkpoint_if_cancelled()
                if not self._out.send_parts(header, message):
                    await self._flush()
                return
        frame = proto.send_message(message)
        self.messages_out += 1
        self.bytes_out += frames.payload_size(message)
        out = self._out
        if self._inbox.messages and out.buffered + len(frame) < CORK_BYTES:
            # More messages are already waiting for this handler, so more sends are likely:
            # queue this frame and let the next write carry them all (one syscall per batch
            # instead of one per message).  The writer flushes it if the handler stops here.
            await trio.lowlevel.checkpoint_if_cancelled()
            out.queue(frame, buffered=True)
            out.wake()
            return
        # Cancellation is checked before the write, so a cancelled send never half-happens;
        # the fast path (written at once) has no task switch.
        await trio.lowlevel.checkpoint_if_cancelled()
        if not out.send(frame):
            await self._flush()

    async def ping(self, payload: bytes | None = None) -> None:
        """Send a ping and wait for its pong.  ``payload`` (at most 125 bytes) defaults to 4
        random bytes; each ping in flight needs its own.  A pong answers the ping with its
        payload and every ping sent before it (RFC 6455 §5.5.3 lets a peer answer several
        pings with one pong), as in trio-websocket.

        Safe to cancel: the ping may have been sent, but its payload is free again at once
        and a late pong is ignored.

        :raises ConnectionClosed: the connection is closed, or closes before the pong.
        :raises ValueError: a ping with this payload is already in flight, or the payload
            is longer than 125 bytes.
        """
        proto = self._proto
        if proto.close is not None or not proto.receiving:
            raise ConnectionClosed(self.closed)
        if payload is None:
            payload = os.urandom(4)
        event = trio.Event()
        frame = proto.send_ping(payload, event)
        unanswered = True
        reader = self._reader
        try:
            self._out.queue(frame)
            await self._flush()
            reader.wanted += 1
            try:
                reader.ensure_reader()
                await event.wait()
            finally:
                reader.wanted -= 1
                reader.maybe_hand_back()
        finally:
            # Answered, released by the close, or cancelled: either way it is no longer
            # in flight (a cancelled ping must not keep its payload taken).
            unanswered = proto.unanswered(payload, event)
        if unanswered:
            raise ConnectionClosed(self.closed)

    async def pong(self, payload: bytes | None = None) -> None:
        """Send an unsolicited pong (a heartbeat, RFC 6455 §5.5.3) carrying ``payload`` (at
        most 125 bytes; none by default) and wait until it is written.

        Cancelled, the pong may still go out whole (as :meth:`send_message`).

        :raises ConnectionClosed: the connection is closed or closing.
        :raises ValueError: the payload is longer than 125 bytes.
        """
        proto = self._proto
        if proto.close is not None:
            raise ConnectionClosed(self.closed)
        self._out.queue(proto.send_pong(payload or b""))
        await self._flush()

    async def aclose(self, code: int = NORMAL, reason: str | None = None) -> None:
        """Send a Close with ``code`` and ``reason`` (if none was sent yet), wait for the
        peer's (at most ``close_timeout`` seconds), then close the TCP stream.  Messages not
        yet taken are dropped; from the start of this call every other method raises
        :class:`ConnectionClosed`.  Idempotent: a second call (or a call after the peer
        closed) just waits for the end.  Also what ``async with ws:`` calls on the way out.

        Safe to cancel: the stream is closed all the same, only without waiting for the
        peer's Close.  Never raises :class:`ConnectionClosed`.

        :raises ValueError: ``code`` is not one an endpoint may send (RFC 6455 §7.4).
        """
        if not is_sendable_close_code(code):
            raise ValueError(f"close code {code} may not be sent (RFC 6455 §7.4)")
        self._start_close(code, reason or "")
        self._inbox.discard()
        try:
            with trio.move_on_after(self._proto.limits.close_timeout):
                try:
                    await self._flush()
                except ConnectionClosed:
                    pass  # the peer is gone already: nothing left to wait for
                await self._reader.read_until_finished()
        finally:
            await self._close_stream()

    # -- gateway extensions ------------------------------------------------------------------

    def send_nowait(self, message: str | bytes | frames.Prepared) -> bool:
        """Queue a message without waiting; a :class:`frames.Prepared` message shares its
        encoded frame with every other connection it is sent to (unless this one compresses).

        This is how a broadcast reaches many clients without awaiting the slowest.  Returns
        ``False`` if the connection is closing, or if the queue overflowed: then the client is
        a slow consumer and is being closed with 1013.  Never raises for a closed connection.

        :raises gateway.errors.MessageTypeError: as :meth:`send_message`.
        """
        proto = self._proto
        if proto.close is not None:
            return False
        if isinstance(message, frames.Prepared):
            frame = proto.send_prepared(message)
        else:
            frame = proto.send_message(message)
        return self._push(frame)

    def close_nowait(self, code: int = NORMAL, reason: str = "") -> None:
        """Start the closing handshake without waiting (e.g. 1001 for every client at
        shutdown); frames already queued go out first.  The handler's next ``get_message``
        raises :class:`ConnectionClosed` (one already reading returns once the peer answers,
        or after ``close_timeout``, when the connection is dropped).  Idempotent; never
        raises :class:`ConnectionClosed`.

        :raises ValueError: as :meth:`aclose`.
        """
        if not is_sendable_close_code(code):
            raise ValueError(f"close code {code} may not be sent (RFC 6455 §7.4)")
        if self._start_close(code, reason):
            self._out.abort_after(self._proto.limits.close_timeout)
        self._inbox.discard()

    @property
    def outbound_bytes(self) -> int:
        """Bytes queued by :meth:`send_nowait` that are not yet written."""
        return self._out.buffered

    async def serve(
        self,
        handler: Callable[[], Awaitable[None]] | None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """The engine's entry point (the gateway's, not a handler's): run ``handler`` in this
        task until it returns and the connection is closed; with no handler, this task is the
        reader until the connection is closed (``nursery.start(ws.serve, None)``).
        Cancelled, the stream is closed (1006 if no Close was exchanged).  The reader and
        writer tasks are started on need (an idle connection has neither: its handler waits
        in ``get_message``, reading the socket itself) in the nursery that started this task;
        they are cancelled, and waited for, before this returns.  (:meth:`serving` is the
        same as a context, for a caller that runs the handler in its own frame.)

        :raises RuntimeError: called from the root task (there is no nursery above it)."""
        async with self.serving(handled=handler is not None, task_status=task_status):
            if handler is not None:
                await handler()

    def serving(
        self,
        *,
        handled: bool = True,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> Serving:
        """:meth:`serve` as an async context: the ``async with`` block is the handler (it runs
        in the calling task, whose nursery takes the helper tasks); leaving it normally, the
        engine reads until the closing handshake is over and closes TCP; leaving it with an
        exception (a cancellation), the stream is closed at once.  ``handled=False``: no
        handler takes messages, the engine reads for the caller (``serve(None)``).

        A class, not a generator: while the block runs (an idle session's whole life) no
        coroutine frame of the engine's is kept for it (docs/performance.md, idle memory).

        :raises RuntimeError: entered from the root task (there is no nursery above it)."""
        return Serving(self, handled, task_status)

    def _begin_serving(self, task_status: trio.TaskStatus[None]) -> None:
        reader = self._reader
        self._proto.start_keepalive(trio.current_time())
        self._arm_keepalive()
        if self._trailing_data:
            # Frames the client sent right behind its handshake.
            data, self._trailing_data = self._trailing_data, b""
            reader.consume(data)
        task_status.started()
        # (After started(): nursery.start() moves this task to its nursery there.)
        self._nursery = trio.lowlevel.current_task().parent_nursery
        if self._nursery is None:
            raise RuntimeError("WebSocketConnection.serve() must run in a nursery's task")
        reader.serving = self._out.serving = True
        self._out.start_if_wanted()
        if not self._proto.receiving:
            reader.start_reader()  # a Close (or a bad frame) came with the handshake
        else:
            reader.left_reading()  # nobody reads yet: the handler should, soon

    async def _finish_serving(self, handled: bool) -> None:
        """The handler is done (or there is none): the rest of the closing handshake."""
        if handled:
            # Nobody takes messages any more: reading goes on only for the Close.
            self._inbox.discard()
        await self._reader.read_until_finished()  # no handler: this task is the reader
        # Reading is over (the closing handshake is decided): our last frames (the Close
        # reply) go out, then §7.1.1: the server closes TCP first.
        await self._conclude()
        self._out.stop()

    async def _end_serving(self) -> None:
        """Whatever happened: helpers cancelled, the stream closed, the helpers waited for."""
        self._reader.serving = self._out.serving = False
        for scope in self._helpers or ():
            scope.cancel()
        await self._close_stream()
        if self._helpers:
            # As a nursery would: the cancelled helpers end before serving does.
            self._helpers_done = done = trio.Event()
            with trio.CancelScope(shield=True):
                await done.wait()
        self._nursery = None

    def _spawn(self, task: Callable[[], Awaitable[None]]) -> None:
        """Start a helper task (the reader's or the writer's) beside the serving task."""
        nursery = self._nursery
        if nursery is None:
            raise RuntimeError("the connection is not serving")
        scope = trio.CancelScope()
        if self._helpers is None:
            self._helpers = []
        self._helpers.append(scope)
        try:
            nursery.start_soon(self._helper, task, scope, name=task)
        except BaseException:
            self._helper_ended(scope)
            raise

    async def _helper(self, task: Callable[[], Awaitable[None]], scope: trio.CancelScope) -> None:
        try:
            with scope:
                await task()
        except Exception:
            # An engine bug: drop this connection only (the server's nursery must not fail).
            log.exception("WebSocket engine task %r failed: connection dropped", task)
            with trio.CancelScope(shield=True):
                await self._close_stream()
        finally:
            self._helper_ended(scope)

    def _helper_ended(self, scope: trio.CancelScope) -> None:
        helpers = self._helpers
        if helpers is not None and scope in helpers:
            helpers.remove(scope)
            if not helpers:
                self._helpers = None
                if self._helpers_done is not None:
                    self._helpers_done.set()
                    self._helpers_done = None

    # -- the shell: what the protocol decided, done -------------------------------------------

    def _on_timer(self, when: float) -> None:
        """The attendant's call (:mod:`gateway.ws.attendant`): the keepalive clock ran out,
        or it is time to check whether the handler came back to reading.  Either way, a
        writer task idle since the last call ends."""
        self._out.retire_if_idle()
        self._reader.attend(when)
        proto = self._proto
        if when == proto.keepalive_due and proto.receiving:
            if proto.keepalive(trio.current_time()):
                self._send_queued()
                self._arm_keepalive()
            else:
                limits = proto.limits
                log.info("no pong within %.1fs: closing", limits.ping_timeout)
                self._send_queued()
                self._inbox.discard()
                self._out.abort_after(min(limits.close_timeout, SLOW_CONSUMER_GRACE))

    def _received(self, keepalive_due: float) -> None:
        """The reader fed bytes to the protocol: send the frames it decided on (pongs, the
        Close echo), and re-arm the keepalive if a pong moved it."""
        proto = self._proto
        if proto._outgoing:
            self._send_queued()
        if proto.keepalive_due != keepalive_due:
            self._arm_keepalive()

    def _send_queued(self) -> None:
        """The protocol's own frames, without waiting; a Close is not counted towards the
        slow-consumer limit (it must go out even past it)."""
        for frame in self._proto.data_to_send():
            self._push(frame, counted=frame[0] & 0x0F != frames.OP_CLOSE)

    def _push(self, frame: bytes, *, counted: bool = True) -> bool:
        """Send ``frame`` without waiting: written now if the socket takes it, otherwise
        queued for the writer task (``counted`` towards the slow-consumer limit)."""
        out = self._out
        if out.send(frame, buffered=counted):
            return True
        if counted and out.buffered > self._proto.limits.outbound_queue_bytes:
            self._slow_consumer()
            return False
        out.wake()
        return True

    def _start_close(self, code: int, reason: str) -> bool:
        """Send our Close once (§5.5.1); a protocol failure of the peer's takes precedence
        over the code asked for.  ``True`` if this call sent it."""
        sent = self._proto.send_close(code, reason)
        self._send_queued()
        return sent

    def _slow_consumer(self) -> None:
        log.info("closing slow consumer (%d bytes queued)", self._out.buffered)
        self._out.drop()
        self._start_close(CloseCode.TRY_AGAIN_LATER, "slow consumer")
        self._inbox.discard()
        self._out.abort_after(SLOW_CONSUMER_GRACE)

    async def _flush(self) -> None:
        """Return once everything queued so far is written (see :mod:`gateway.ws.outbound`)."""
        try:
            await self._out.flush()
        except StreamLost:
            raise ConnectionClosed(self.closed) from None

    async def _conclude(self) -> None:
        """Reading is over: write what is queued (the Close reply), bounded, then close TCP."""
        if self._reader.stream_closed:
            return
        proto = self._proto
        if proto.failure is not None:
            self._start_close(proto.failure.code, proto.failure.reason)
        grace = SLOW_CONSUMER_GRACE if proto.keepalive_failed else proto.limits.close_timeout
        with trio.move_on_after(grace):
            try:
                await self._flush()
            except ConnectionClosed:
                pass  # the peer is gone: the stream is closed just below anyway
        await self._close_stream()

    def _arm_keepalive(self) -> None:
        due = self._proto.keepalive_due
        if due != math.inf:
            call_at(due, self)

    def _write_lost(self) -> None:
        """:class:`Outbound`'s report: the stream failed under a write."""
        self._reader.lost()

    async def _abort(self) -> None:
        """:class:`Outbound`'s grace period ran out: drop the stream."""
        await self._close_stream()

    async def _close_stream(self) -> None:
        reader = self._reader
        if reader.stream_closed:
            self._proto.release_pings()  # (a ping registered after reading stopped)
            return
        reader.stream_closed = True
        reader.closing()
        self._out.closed = True
        reader.lost()  # 1006 if no Close was exchanged (e.g. serve() was cancelled)
        with trio.CancelScope(shield=True):
            await self._stream.aclose()


def _endpoint(stream: trio.abc.Stream, *, local: bool) -> Endpoint | str | None:
    """The socket's address as trio-websocket reports it (computed on use: an idle
    connection does not keep two address objects)."""
    secure = isinstance(stream, trio.SSLStream)
    transport = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    if not isinstance(transport, trio.SocketStream):
        return repr(stream)  # as trio-websocket: a stream without an address
    try:
        address = transport.socket.getsockname() if local else transport.socket.getpeername()
        return Endpoint(address[0], address[1], secure)
    except (OSError, ValueError, IndexError):
        return None


class Serving:
    """:meth:`WebSocketConnection.serving`'s context (see there)."""

    __slots__ = ("_handled", "_task_status", "_ws")

    def __init__(
        self, ws: WebSocketConnection, handled: bool, task_status: trio.TaskStatus[None]
    ) -> None:
        self._ws = ws
        self._handled = handled
        self._task_status: trio.TaskStatus[None] | None = task_status

    async def __aenter__(self) -> WebSocketConnection:
        ws = self._ws
        task_status, self._task_status = self._task_status, None
        assert task_status is not None, "serving() is entered once"
        try:
            ws._begin_serving(task_status)
        except BaseException:
            await ws._end_serving()
            raise
        return ws

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        ws = self._ws
        try:
            if exc_type is None:
                await ws._finish_serving(self._handled)
        finally:
            await ws._end_serving()

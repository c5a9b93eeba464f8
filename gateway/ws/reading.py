"""Who reads a connection's socket.  Reading is a *role*, held by one task at a time:

* a handler waiting in ``get_message`` with nothing queued and nobody reading reads the socket
  itself (an idle connection is then one task parked on its socket);
* when the handler is away from ``get_message`` for longer than ``ATTEND_AFTER`` (it sends a
  clock, awaits a database, never reads), the attendant (:mod:`gateway.ws.attendant`) starts
  a *reader task* that answers pings, sees the Close and fills the bounded inbox (when it is
  full the reader stops reading and TCP pushes back on the client); it hands the role back as
  soon as a handler waits in ``get_message`` with nothing to read: that handler cancels the
  reader's wait for bytes (which loses none).

:class:`ReadingRole` is the part of :class:`gateway.ws.connection.WebSocketConnection` that
does this; the connection supplies the stream, the inbox and the hooks it calls
(:meth:`ReadingRole._push`, ``_on_close``, ``_arm_keepalive``, ``_conclude``).
"""

from __future__ import annotations

import abc
import os

import trio
from trio_websocket import CloseReason

from gateway.ws import frames
from gateway.ws.attendant import call_at
from gateway.ws.inbox import Inbox
from gateway.ws.limits import Limits
from gateway.ws.outbound import Outbound
from gateway.ws.parser import Close, FrameParser, Ping, Pong, ProtocolError
from gateway.ws.pings import Pings
from gateway.ws.waiting import Waiters

RECEIVE_SIZE = 65536
# A handler away from get_message this long gets a reader task (pings, Close, inbox filling).
ATTEND_AFTER = 0.05
ABNORMAL = 1006  # RFC 6455 §7.4.1: no Close frame


class ReadingRole(abc.ABC):
    """The reading half of a connection; see the module docstring."""

    __slots__ = (
        "_attend_at",
        "_attend_episode",
        "_close_reason",
        "_episode",
        "_failure",
        "_finished",
        "_finished_waiters",
        "_reader_running",
        "_reader_scope",
        "_reading",
        "_reads_wanted",
    )

    # The connection's, used here.
    _stream: trio.abc.Stream
    _sock: trio.socket.SocketType | None  # plain TCP: read straight from it
    _inbox: Inbox
    _parser: FrameParser
    _pings: Pings
    _limits: Limits
    _out: Outbound
    _nursery: trio.Nursery | None  # serve()'s: where the reader task starts
    _close_reason: CloseReason | None
    _stream_closed: bool

    def _init_reading(self) -> None:
        self._finished = False  # reading is over: no more frames will be read
        # The peer broke the protocol: the Close waits until the messages before the bad
        # frame are handled (or the connection is closed for another reason first).
        self._failure: ProtocolError | None = None
        self._finished_waiters: Waiters | None = None  # aclose()/ping() waiting for reads
        self._reading = False  # a task is waiting for (or parsing) bytes right now
        self._reader_running = False  # a reader task exists
        self._reader_scope: trio.CancelScope | None = None  # its wait for bytes, to hand back
        self._reads_wanted = 0  # tasks waiting for something only reading brings (pong, Close)
        self._episode = 0  # counts the handler's returns from reading (see _left_reading)
        self._attend_at: float | None = None  # the attendant's pending check, if any
        self._attend_episode = 0

    # -- what the connection provides ---------------------------------------------------------

    @abc.abstractmethod
    def _push(self, frame: bytes, *, counted: bool = True) -> bool:
        """Send ``frame`` without waiting (a pong)."""

    @abc.abstractmethod
    def _on_close(self, event: Close) -> None:
        """The peer's Close frame arrived."""

    @abc.abstractmethod
    def _arm_keepalive(self) -> None:
        """The keepalive clock moved (a pong answered it)."""

    @abc.abstractmethod
    async def _conclude(self) -> None:
        """Reading is over: write what is queued, bounded, then close TCP."""

    @abc.abstractmethod
    def _on_timer(self, when: float) -> None:
        """The attendant's call; it calls :meth:`_attend`."""

    # -- reading ------------------------------------------------------------------------------

    async def _read_more(self, *, inline: bool) -> None:
        """One round of reading: wait for bytes, parse them, act on what they say.  The
        caller holds the reading role (nobody else reads); ``inline`` when that is a task
        that called ``get_message``/``aclose``, not the reader task.

        On plain TCP the bytes come straight from the socket (the waiting connection's
        stack is then four coroutine frames shorter than through trio's ``receive_some``,
        which this follows: a cancel point first, a schedule point after)."""
        if self._parser.paused:
            # Compressed frames already received wait in the parser (it paused at the
            # inbox's room): parse those before reading more.
            self._reading = True
            try:
                await trio.lowlevel.checkpoint()
            finally:
                self._reading = False
                if inline:
                    self._left_reading()
            self._consume(b"")
            return
        self._reading = True
        data: bytes | bytearray | None = b""
        try:
            sock = self._sock
            if sock is None:
                data = await self._stream.receive_some(RECEIVE_SIZE)
            else:
                await trio.lowlevel.checkpoint_if_cancelled()
                waited = False
                while True:
                    fd = sock.fileno()  # -1 once closed: never read a descriptor reused since
                    if fd < 0 or self._stream_closed:
                        data = b""
                        break
                    try:
                        data = os.read(fd, RECEIVE_SIZE)
                    except BlockingIOError:
                        data = None  # (not waiting in here: the exception would live as long)
                    except OSError:
                        data = b""  # reset: the connection is lost
                        break
                    if data is not None:
                        if not waited:
                            await trio.lowlevel.cancel_shielded_checkpoint()
                        break
                    await trio.lowlevel.wait_readable(fd)
                    waited = True
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        finally:
            self._reading = False
            if inline:
                self._left_reading()
        if data:
            self._consume(data)
        else:
            self._lost()  # EOF without a Close frame: 1006 (§7.1.5)

    async def _read_until_finished(self) -> None:
        """Read (or let whoever reads go on) until reading is over."""
        while not self._finished:
            if self._reading or self._reader_running:
                if self._finished_waiters is None:
                    self._finished_waiters = Waiters()
                self._reads_wanted += 1
                try:
                    await self._finished_waiters.wait()
                finally:
                    self._reads_wanted -= 1
                    self._maybe_hand_back()
            elif self._inbox.discarding:
                await self._read_more(inline=False)  # closing: messages are dropped anyway
            else:
                self._reader_running = True
                await self._reader(handback=False)  # the inbox bound applies

    def _consume(self, data: bytes | bytearray) -> None:
        """Parse ``data`` and act on every event: messages to the inbox, a pong for each
        ping, Close answered.  Never waits: replies go out directly or via the writer."""
        if self._finished:
            return
        parser = self._parser
        inbox = self._inbox
        if parser.inflating:
            # What inflates is bounded by the inbox's room in bytes (docs/design.md).
            parser.room = self._limits.inbound_queue_bytes - inbox.weight()
        error = None
        try:
            parser.feed(data, trio.current_time())
        except ProtocolError as exc:
            error = exc  # deliver what came before the bad frame first
        for event in parser.events():
            if type(event) is str or type(event) is bytes:
                inbox.add(event)
            elif isinstance(event, Ping):
                self._push(frames.frame(frames.OP_PONG, event.payload))
            elif isinstance(event, Pong):
                if self._pings.pong(event.payload):
                    self._arm_keepalive()
            elif isinstance(event, Close):
                self._on_close(event)
                break
        if inbox.messages and inbox.waiters:
            inbox.waiters.wake()
        if error is not None and not self._finished:
            # §7.1.7 "Fail the WebSocket Connection": Close, then drop TCP (_conclude), once
            # the messages before the bad frame are handled.
            self._failure = error
            self._stop_reading()

    async def _reader(self, handback: bool = True) -> None:
        """The reader task: reads while the handler is busy elsewhere, and (``handback``)
        hands the role back once a handler waits in ``get_message`` with nothing queued."""
        inbox = self._inbox
        limit = self._limits.inbound_queue
        size_limit = self._limits.inbound_queue_bytes
        try:
            while not self._finished:
                if handback and inbox.waiters and not inbox.messages and not self._reads_wanted:
                    inbox.waiters.wake()  # that handler reads from here on
                    return
                messages = inbox.messages
                if (
                    messages
                    and not inbox.discarding
                    and (len(messages) >= limit or inbox.weight() >= size_limit)
                ):
                    await inbox.waiters.wait()  # full: stop reading, TCP pushes back
                    continue
                if handback:
                    # A handler that comes to get_message cancels the wait (which loses no
                    # bytes) to take the reading over.
                    with trio.CancelScope() as self._reader_scope:
                        await self._read_more(inline=False)
                    self._reader_scope = None
                else:
                    await self._read_more(inline=False)
            if self._failure is not None:
                # Let the handler see what came before the bad frame, then fail (bounded:
                # a handler that never reads does not hold the connection open).
                with trio.move_on_after(self._limits.close_timeout):
                    while inbox.messages and not inbox.discarding:
                        await inbox.waiters.wait()
            await self._conclude()
        finally:
            self._reader_running = False
            self._reader_scope = None

    def _maybe_hand_back(self, *, getting: bool = False) -> None:
        """A handler waits in ``get_message`` (``getting``: the caller is about to) with
        nothing queued and nobody else needs reads: the reader task's wait for bytes is
        cancelled (which loses none) and that handler reads from there on."""
        scope = self._reader_scope
        if scope is None or self._reads_wanted or self._inbox.messages:
            return
        if getting or self._inbox.waiters:
            scope.cancel()

    def _ensure_reader(self) -> None:
        """Someone waits for what only reading brings: make sure somebody reads."""
        if not (self._reading or self._reader_running or self._finished):
            self._start_reader()

    def _start_reader(self) -> None:
        """Start the reader task (once reading is over, it just concludes: see _conclude)."""
        nursery = self._nursery
        if nursery is None or self._reader_running or self._stream_closed:
            return
        self._reader_running = True
        try:
            nursery.start_soon(self._reader)
        except RuntimeError:  # the nursery is closing: the connection is ending anyway
            self._reader_running = False

    def _left_reading(self) -> None:
        """A handler stopped reading (it got a message, or was cancelled): from now on
        nobody reads.  Someone else waiting takes over, or the attendant checks back."""
        if self._reader_running or self._finished:
            return
        if self._inbox.waiters:
            self._inbox.waiters.wake()  # another get_message: it reads next
        elif self._reads_wanted:
            self._start_reader()
        else:
            self._episode += 1
            if self._attend_at is None:
                self._attend_episode = self._episode
                self._attend_at = trio.current_time() + ATTEND_AFTER
                call_at(self._attend_at, self)

    def _attend(self, when: float) -> None:
        """The attendant's check that the handler came back to reading (see
        :meth:`_left_reading`); the connection's ``_on_timer`` calls it."""
        if when != self._attend_at:
            return  # a stale entry: the check moved
        self._attend_at = None
        if self._reading or self._reader_running:
            return  # attended
        if self._finished:
            self._start_reader()  # to send the Close (reply) and close TCP, see _reader
        elif self._episode == self._attend_episode:
            self._start_reader()  # away the whole time: a reader task takes over
        else:
            # Back and away again since: check once more, ATTEND_AFTER from now.
            self._attend_episode = self._episode
            self._attend_at = trio.current_time() + ATTEND_AFTER
            call_at(self._attend_at, self)

    def _lost(self) -> None:
        if self._close_reason is None:
            self._close_reason = CloseReason(ABNORMAL, None)
        self._stop_reading()

    def _stop_reading(self) -> None:
        """No more frames will be read: handlers get what is queued, then the end."""
        if self._finished:
            return
        self._finished = True
        self._inbox.end()
        self._pings.release()
        if self._finished_waiters is not None:
            self._finished_waiters.wake_all()

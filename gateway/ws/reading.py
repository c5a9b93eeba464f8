"""Who reads a connection's socket.  Reading is a *role*, held by one task at a time:

* a handler waiting in ``get_message`` with nothing queued and nobody reading reads the socket
  itself (an idle connection is then one task parked on its socket);
* when the handler is away from ``get_message`` for longer than ``ATTEND_AFTER`` (it sends a
  clock, awaits a database, never reads), the attendant (:mod:`gateway.ws.attendant`) starts
  a *reader task* that answers pings, sees the Close and fills the bounded inbox (when it is
  full the reader stops reading and TCP pushes back on the client); it hands the role back as
  soon as a handler waits in ``get_message`` with nothing to read: that handler cancels the
  reader's wait for bytes (which loses none).

:class:`Reader` does this for one :class:`gateway.ws.connection.WebSocketConnection`, which
owns it.  It reads bytes and feeds them to the connection's sans-I/O
:class:`~gateway.ws.protocol.Protocol`, moves the messages to the :class:`Inbox`, and tells
the connection through a narrow interface (:class:`Owner`): something was received (replies
to send, a keepalive to re-arm), or reading is over and the connection must conclude.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import Protocol as Interface

import trio

from gateway.ws.attendant import Timed, call_at
from gateway.ws.inbox import Inbox
from gateway.ws.protocol import Protocol
from gateway.ws.readiness import AVAILABLE as OWN_WATCH
from gateway.ws.readiness import readiness
from gateway.ws.waiting import Waiters

RECEIVE_SIZE = 65536
# A wait for bytes that ended sooner than this marks the connection busy: its next wait is
# trio's wait_readable (no hop through the readiness task); a longer one, or the first, marks
# it idle: its next wait parks on the readiness watcher (~1 KiB less while it lasts).
BUSY_WAIT = 0.5
# A handler away from get_message this long gets a reader task (pings, Close, inbox filling).
ATTEND_AFTER = 0.05


def _read(fd: int) -> bytes | None:
    """One non-blocking read: the bytes (``b""``: EOF, or the connection reset), or ``None``
    if there are none yet.  The would-block error is caught in this plain function, so its
    traceback never holds the waiting coroutine's frame: a frame an exception has seen stays
    materialised for the coroutine's life (~240 B per idle connection)."""
    try:
        return os.read(fd, RECEIVE_SIZE)
    except BlockingIOError:
        return None
    except OSError:
        return b""  # reset: the connection is lost


def _read_into(fd: int, into: memoryview) -> int | None:
    """:func:`_read` into ``into``: the count (0: EOF or reset), or ``None``."""
    try:
        return os.readv(fd, (into,))
    except BlockingIOError:
        return None
    except OSError:
        return 0


class Owner(Timed, Interface):
    """What the :class:`Reader` needs of its connection."""

    def _received(self, keepalive_due: float) -> None:
        """Bytes were fed to the protocol (its keepalive was due at ``keepalive_due`` before):
        send what it queued, re-arm the keepalive if a pong moved it."""

    async def _conclude(self) -> None:
        """Reading is over: write what is queued, bounded, then close TCP."""

    def _spawn(self, task: Callable[[], Awaitable[None]]) -> None:
        """Start a helper task (the reader task) for the connection."""


class Reader:
    """The reading role of one connection; see the module docstring."""

    __slots__ = (
        "_attend_at",
        "_attend_episode",
        "_busy",
        "_episode",
        "_finished_waiters",
        "_inbox",
        "_owner",
        "_parked_fd",
        "_proto",
        "_scope",
        "_sock",
        "_stream",
        "reading",
        "running",
        "serving",
        "stream_closed",
        "wanted",
        "watched",
    )

    def __init__(
        self, stream: trio.abc.Stream, proto: Protocol, inbox: Inbox, owner: Owner
    ) -> None:
        self._stream = stream
        # The trio socket, for direct reads: plain TCP only (TLS must go through SSLStream).
        self._sock = stream.socket if isinstance(stream, trio.SocketStream) else None
        self._proto = proto
        self._inbox = inbox
        self._owner = owner
        self.serving = False  # the owner serves: it can start the reader task
        self.stream_closed = False  # the connection closed the stream: read nothing more
        self._finished_waiters: Waiters | None = None  # aclose()/ping() waiting for reads
        self.reading = False  # a task is waiting for (or parsing) bytes right now
        self.running = False  # a reader task exists
        self._scope: trio.CancelScope | None = None  # its wait for bytes, to hand back
        self.wanted = 0  # tasks waiting for something only reading brings (pong, Close)
        self._episode = 0  # counts the handler's returns from reading (see left_reading)
        self._attend_at: float | None = None  # the attendant's pending check, if any
        self.watched = False  # the socket is in the readiness watcher's epoll set
        self._busy = False  # its last wait for bytes was short (see BUSY_WAIT)
        self._parked_fd = -1  # the descriptor a task of ours is parked on, if any
        self._attend_episode = 0

    @property
    def finished(self) -> bool:
        """Reading is over: no more frames will be read (a Close, a failure, or EOF)."""
        return not self._proto.receiving

    # -- reading ------------------------------------------------------------------------------

    async def read_more(self, *, inline: bool) -> None:
        """One round of reading: wait for bytes, parse them, act on what they say.  The
        caller holds the reading role (nobody else reads); ``inline`` when that is a task
        that called ``get_message``/``aclose``, not the reader task.

        On plain TCP the bytes come straight from the socket (the waiting connection's
        stack is then four coroutine frames shorter than through trio's ``receive_some``,
        which this follows: a cancel point first, a schedule point after); while a large
        frame arrives, straight into the parser's buffer for it (``os.readv``: no copy)."""
        if self._proto.parser.paused:
            # Compressed frames already received wait in the parser (it paused at the
            # inbox's room): parse those before reading more.
            self.reading = True
            try:
                await trio.lowlevel.checkpoint()
            finally:
                self.reading = False
                if inline:
                    self.left_reading()
            self.consume(b"")
            return
        self.reading = True
        data: bytes | bytearray | None = b""
        into = None  # the parser's buffer for a large frame, if one is arriving
        count = 0  # bytes read into it
        try:
            sock = self._sock
            if sock is None:
                data = await self._stream.receive_some(RECEIVE_SIZE)
            else:
                await trio.lowlevel.checkpoint_if_cancelled()
                if self._proto.parser.large is not None:
                    into = self._proto.read_buffer()
                waited = False
                while True:
                    fd = sock.fileno()  # -1 once closed: never read a descriptor reused since
                    if fd < 0 or self.stream_closed:
                        data = b""
                        count = 0
                        break
                    if into is None:
                        data = _read(fd)
                        ready = data is not None
                    else:
                        got = _read_into(fd, into)
                        ready = got is not None
                        count = got or 0
                    if ready:
                        if not waited:
                            await trio.lowlevel.cancel_shielded_checkpoint()
                        break
                    started = time.monotonic()
                    if OWN_WATCH and not self._busy:
                        # Likely to stay idle: the short wait (gateway.ws.readiness), ~1 KiB
                        # less per idle connection than trio's wait_readable chain.
                        readiness().park(fd, trio.lowlevel.current_task(), self.watched)
                        self.watched = True
                        self._parked_fd = fd
                        try:
                            await trio.lowlevel.wait_task_rescheduled(self._abort_wait)
                        finally:
                            self._parked_fd = -1
                    else:
                        await trio.lowlevel.wait_readable(fd)
                    self._busy = time.monotonic() - started < BUSY_WAIT
                    waited = True
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
            count = 0
        finally:
            self.reading = False
            if inline:
                self.left_reading()
        if into is not None:
            into.release()
            if count:
                self.consume_into(count)
            else:
                self.lost()
        elif data:
            self.consume(data)
        else:
            self.lost()  # EOF without a Close frame: 1006 (§7.1.5)

    def _abort_wait(self, _: object) -> trio.lowlevel.Abort:
        readiness().unpark(self._parked_fd)
        return trio.lowlevel.Abort.SUCCEEDED

    def closing(self) -> None:
        """The connection is closing the socket: a task of ours parked on it wakes (and
        finds the stream closed), as trio's ``notify_closing`` wakes its own waits."""
        if self._parked_fd >= 0:
            readiness().wake(self._parked_fd)

    async def read_until_finished(self) -> None:
        """Read (or let whoever reads go on) until reading is over."""
        proto = self._proto
        while proto.receiving:
            if self.reading or self.running:
                if self._finished_waiters is None:
                    self._finished_waiters = Waiters()
                self.wanted += 1
                try:
                    await self._finished_waiters.wait()
                finally:
                    self.wanted -= 1
                    self.maybe_hand_back()
            elif self._inbox.discarding:
                await self.read_more(inline=False)  # closing: messages are dropped anyway
            else:
                self.running = True
                await self._reader(handback=False)  # the inbox bound applies

    def consume(self, data: bytes | bytearray) -> None:
        """Feed ``data`` to the protocol: messages to the inbox, replies and keepalive to the
        owner.  Never waits: replies go out directly or via the writer."""
        proto = self._proto
        if not proto.receiving:
            return
        inbox = self._inbox
        due = proto.keepalive_due
        if proto.parser.inflating:
            # What inflates is bounded by the inbox's room in bytes (docs/design.md).
            proto.receive_data(
                data, trio.current_time(), proto.limits.inbound_queue_bytes - inbox.weight()
            )
        else:
            proto.receive_data(data, trio.current_time())
        messages = proto.events_received()
        if messages:
            inbox.add_all(messages)
            if inbox.waiters:
                inbox.waiters.wake()
        self._owner._received(due)
        if not proto.receiving:
            self._stop()

    def consume_into(self, count: int) -> None:
        """``count`` bytes were read into the protocol's :meth:`~Protocol.read_buffer`: as
        :meth:`consume`."""
        proto = self._proto
        if not proto.receiving:
            return
        due = proto.keepalive_due
        proto.receive_into(count, trio.current_time())
        messages = proto.events_received()
        if messages:
            inbox = self._inbox
            inbox.add_all(messages)
            if inbox.waiters:
                inbox.waiters.wake()
        self._owner._received(due)
        if not proto.receiving:
            self._stop()

    async def _reader(self, handback: bool = True) -> None:
        """The reader task: reads while the handler is busy elsewhere, and (``handback``)
        hands the role back once a handler waits in ``get_message`` with nothing queued."""
        inbox = self._inbox
        proto = self._proto
        limit = proto.limits.inbound_queue
        size_limit = proto.limits.inbound_queue_bytes
        try:
            while proto.receiving:
                if handback and inbox.waiters and not inbox.messages and not self.wanted:
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
                    with trio.CancelScope() as self._scope:
                        await self.read_more(inline=False)
                    self._scope = None
                else:
                    await self.read_more(inline=False)
            if proto.failure is not None:
                # Let the handler see what came before the bad frame, then fail (bounded:
                # a handler that never reads does not hold the connection open).
                with trio.move_on_after(proto.limits.close_timeout):
                    while inbox.messages and not inbox.discarding:
                        await inbox.waiters.wait()
            await self._owner._conclude()
        finally:
            self.running = False
            self._scope = None

    def maybe_hand_back(self, *, getting: bool = False) -> None:
        """A handler waits in ``get_message`` (``getting``: the caller is about to) with
        nothing queued and nobody else needs reads: the reader task's wait for bytes is
        cancelled (which loses none) and that handler reads from there on."""
        scope = self._scope
        if scope is None or self.wanted or self._inbox.messages:
            return
        if getting or self._inbox.waiters:
            scope.cancel()

    def ensure_reader(self) -> None:
        """Someone waits for what only reading brings: make sure somebody reads."""
        if not (self.reading or self.running) and self._proto.receiving:
            self.start_reader()

    def start_reader(self) -> None:
        """Start the reader task (once reading is over, it just concludes: see _conclude)."""
        if not self.serving or self.running or self.stream_closed:
            return
        self.running = True
        try:
            self._owner._spawn(self._reader)
        except RuntimeError:  # the nursery is closing: the connection is ending anyway
            self.running = False

    def left_reading(self) -> None:
        """A handler stopped reading (it got a message, or was cancelled): from now on
        nobody reads.  Someone else waiting takes over, or the attendant checks back."""
        if self.running or not self._proto.receiving:
            return
        if self._inbox.waiters:
            self._inbox.waiters.wake()  # another get_message: it reads next
        elif self.wanted:
            self.start_reader()
        else:
            self._episode += 1
            if self._attend_at is None:
                self._attend_episode = self._episode
                self._attend_at = trio.current_time() + ATTEND_AFTER
                call_at(self._attend_at, self._owner)

    def attend(self, when: float) -> None:
        """The attendant's check that the handler came back to reading (see
        :meth:`left_reading`); the connection's timer calls it."""
        if when != self._attend_at:
            return  # a stale entry: the check moved
        self._attend_at = None
        if self.reading or self.running:
            return  # attended
        if not self._proto.receiving:
            self.start_reader()  # to send the Close (reply) and close TCP, see _reader
        elif self._episode == self._attend_episode:
            self.start_reader()  # away the whole time: a reader task takes over
        else:
            # Back and away again since: check once more, ATTEND_AFTER from now.
            self._attend_episode = self._episode
            self._attend_at = trio.current_time() + ATTEND_AFTER
            call_at(self._attend_at, self._owner)

    def lost(self) -> None:
        """The stream ended (EOF, reset, or a failed write): 1006 unless a Close came first."""
        self._proto.receive_eof()
        self._stop()

    def _stop(self) -> None:
        """No more frames will be read: handlers get what is queued, then the end."""
        inbox = self._inbox
        if inbox.ended:
            return
        inbox.end()
        self._proto.release_pings()
        if self._finished_waiters is not None:
            self._finished_waiters.wake_all()

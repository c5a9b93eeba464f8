"""The sending half of a WebSocket connection: frames leave in the order they were queued and
never interleave, with as few task switches and syscalls as possible.

Three ways out, cheapest first:

* **direct write** (:meth:`Outbound.send`) — nothing queued and nobody writing on a plain TCP
  socket: ``os.write`` on the non-blocking fd takes what the kernel accepts, no task switch
  (asyncio's ``transport.write`` works the same way); the rest is queued, first in line;
* **flush** — a task that must know its frame is out (``send_message``) queues it and becomes
  the writer: everything queued goes out in one write (straight to the socket, waiting for it
  to be writable; ``send_all`` on other streams), then whatever was queued meanwhile; other
  tasks wait until the writer has covered their frames;
* **writer task** — frames queued by someone who must not wait (a broadcast, a pong, a close
  started from outside) are flushed by a task the connection starts on need;
  it ends when the connection's timers (:meth:`retire_if_idle`) find it has written nothing
  since they last looked, so an idle connection does not keep it.

A large frame goes out as its header and its payload (:meth:`Outbound.send_parts`, one
``os.writev``), never joined into a copy; what the kernel did not take is queued as a view of
the payload.

A frame is never cut: a write cancelled half way puts the rest back first in line (the writer
task finishes it), and a slow consumer's dropped queue keeps a frame whose start is already
out.  Accounting is in bytes: ``buffered`` counts the bytes queued without a waiter until
they are written (in flight included), for the slow-consumer limit; :meth:`abort_after` gives
a stuck write a grace period, after which the writer task drops the stream.
"""

from __future__ import annotations

import math
import os
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from gateway.errors import StreamLost
from gateway.ws.waiting import Waiters


class Owner(Protocol):
    """The connection an :class:`Outbound` belongs to."""

    def _write_lost(self) -> None:
        """The stream failed under a write."""

    async def _abort(self) -> None:
        """A grace period ran out (:meth:`Outbound.abort_after`): drop the stream."""

    def _spawn(self, task: Callable[[], Awaitable[None]]) -> None:
        """Start a helper task (the writer task) for the connection."""


# The stream failed (or was closed) while writing: the one tree's (gateway.errors).
OutboundClosed = StreamLost

# What is queued: encoded frames, or the unwritten rest of one (a view of a large payload).
Chunk = bytes | memoryview


class Outbound:
    """See the module docstring.  Owned by one :class:`WebSocketConnection`."""

    __slots__ = (
        "_batches",
        "_batches_seen",
        "_drops",
        "_owner",
        "_partial",
        "_queued",
        "_retiring",
        "_sock",
        "_started",
        "_stream",
        "_wanted",
        "_writer_lot",
        "_written",
        "_written_lot",
        "buffered",
        "closed",
        "frames",
        "scope",
        "serving",
        "writing",
    )

    def __init__(self, stream: trio.abc.Stream, *, owner: Owner) -> None:
        self._stream = stream
        # The socket for direct writes: plain TCP only (TLS must go through SSLStream).
        self._sock = stream.socket if isinstance(stream, trio.SocketStream) else None
        self._owner = owner  # told when a write fails, and when a grace period runs out
        self.frames: list[Chunk] = []  # encoded frames, in order
        self._partial = False  # frames[0] is the rest of a frame whose start is out
        self.buffered = 0  # bytes queued without anyone waiting for them, until written
        self._queued = 0  # bytes ever queued
        self._written = 0  # bytes ever written of those (or dropped)
        self._drops = 0  # times the queue was dropped (a flush waiting across one fails)
        self.writing = False
        self._written_lot = Waiters()  # flush() callers waiting for their frame
        self._writer_lot = Waiters()  # the writer task, waiting for frames
        self.scope: trio.CancelScope | None = None  # the writer task's (abort_after's deadline)
        self._started = False
        self._wanted = False
        self._batches = 0  # batches the writer task wrote
        self._batches_seen = 0  # ...when retire_if_idle last looked
        self._retiring = False
        self.serving = False  # the owner serves: it can start the writer task
        self.closed = False

    def _fd(self) -> int:
        """The socket's descriptor, -1 once closed (never write to a descriptor reused since)."""
        sock = self._sock
        return -1 if sock is None or self.closed else sock.fileno()

    def send(self, frame: bytes, *, buffered: bool = False) -> bool:
        """Send ``frame`` without waiting: straight to the socket when nothing is queued and
        nobody writes (no task switch), what the kernel did not take queued first in line,
        whole even if the queue is dropped.  ``True`` if all of it is out; otherwise it is
        queued (``buffered`` counts it towards the slow-consumer limit).  Write errors are
        left for :meth:`flush` to report."""
        sock = self._sock
        if sock is not None and not self.writing and not self.frames and not self.closed:
            try:
                sent = os.write(sock.fileno(), frame)
            except OSError:
                sent = 0
            if sent == len(frame):
                return True
            if sent:
                frame = frame[sent:]
                self._partial = True  # its start is out: it must go out whole
        self.queue(frame, buffered=buffered)
        return False

    def send_parts(self, header: bytes, payload: bytes) -> bool:
        """:meth:`send` for the frame ``header + payload``, without joining them: one
        ``os.writev`` when the socket is free, and only the unwritten rest is queued (a view
        of ``payload``, not a copy).  ``True`` if all of it is out."""
        sock = self._sock
        if sock is None or self.writing or self.frames or self.closed:
            self.queue(header + payload)
            return False
        try:
            sent = os.writev(sock.fileno(), (header, payload))
        except OSError:
            sent = 0
        head = len(header)
        if sent == head + len(payload):
            return True
        if sent:
            self._partial = True  # its start is out: it must go out whole
        if sent < head:
            self.queue(header[sent:] + payload)
        else:
            self.queue(memoryview(payload)[sent - head :])
        return False

    def queue(self, frame: Chunk, *, buffered: bool = False) -> None:
        """Append ``frame``; ``buffered`` counts it towards the slow-consumer limit."""
        self.frames.append(frame)
        self._queued += len(frame)
        if buffered:
            self.buffered += len(frame)

    def drop(self) -> None:
        """Forget what is queued (a slow consumer is being closed), but for the rest of a frame
        already started; flushes waiting for dropped frames fail."""
        keep = self.frames[:1] if self._partial else []
        self._written += sum(len(frame) for frame in self.frames[len(keep) :])
        self.frames = keep
        self.buffered = sum(len(frame) for frame in keep)
        self._drops += 1
        self._written_lot.wake_all()

    async def flush(self) -> None:
        """Return once every frame queued so far is written, in order; see the module
        docstring.  Raises :class:`OutboundClosed` if the stream fails, or if the frames were
        dropped meanwhile."""
        target = self._queued
        drops = self._drops
        while self.writing and self._written < target:
            await self._written_lot.wait()
            if self._drops != drops:
                raise OutboundClosed
        if self._written >= target:
            await trio.lowlevel.checkpoint()
            return
        self.writing = True
        try:
            while self.frames:
                # A cancel point before the frames are taken: cancelled here, they stay queued.
                await trio.lowlevel.checkpoint_if_cancelled()
                frames = self.frames
                data = frames[0] if len(frames) == 1 else b"".join(frames)
                in_batch = self.buffered
                self.frames = []
                self._partial = False
                try:
                    if self._sock is not None:
                        await self._write_all(data)
                    else:
                        await self._send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._owner._write_lost()
                    raise OutboundClosed from None
                self.buffered = max(0, self.buffered - in_batch)
                self._written_lot.wake_all()
            if self._drops != drops:
                raise OutboundClosed
        finally:
            self.writing = False
            self._written_lot.wake_all()

    async def _write_all(self, data: Chunk) -> None:
        """Write ``data`` straight to the socket, waiting for it to be writable as needed
        (trio's ``send_all`` costs ~15% of an echo's CPU).  Cancelled, the unwritten rest goes
        back first in line and the writer task finishes it: a frame is never cut."""
        view = memoryview(data)
        try:
            while view:
                fd = self._fd()
                if fd < 0:
                    raise trio.ClosedResourceError("the stream was closed")
                try:
                    sent = os.write(fd, view)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    raise trio.BrokenResourceError(f"socket write failed: {exc}") from None
                if sent:
                    view = view[sent:]
                    self._written += sent
                else:
                    await trio.lowlevel.wait_writable(fd)
        except trio.Cancelled:
            if view:
                self.frames.insert(0, bytes(view))
                self._partial = True
                self.wake()
            raise

    async def _send_all(self, data: Chunk) -> None:
        """Other streams (TLS, memory): ``send_all``, after which a cancelled write leaves the
        stream in an unknown state, so the connection is lost."""
        try:
            await self._stream.send_all(data)
        except trio.Cancelled:
            self.closed = True
            self._owner._write_lost()
            raise
        self._written += len(data)

    def wake(self) -> None:
        """Make sure queued frames get written: wake the writer task, or start it in
        through the owner (or once it :attr:`serving`)."""
        if self._started:
            self._writer_lot.wake()
        elif self.serving:
            self._started = True
            self._owner._spawn(self._writer)
        else:
            self._wanted = True

    def start_if_wanted(self) -> None:
        """Called once :attr:`serving`: start the writer if frames were queued before."""
        if self._wanted:
            self.wake()

    def abort_after(self, grace: float) -> None:
        """Give whatever write is pending ``grace`` more seconds, then drop the stream (the
        writer task keeps that deadline, so it is started if it was not)."""
        if self.scope is None:
            self.scope = trio.CancelScope()
        self.scope.deadline = min(self.scope.deadline, trio.current_time() + grace)
        self.wake()

    def retire_if_idle(self) -> None:
        """Called now and then (the connection's timers): a writer task that has written
        nothing since the last call, with nothing queued and no abort pending, ends."""
        if not self._started or self.frames or self.writing or self._abort_pending():
            self._batches_seen = self._batches
        elif self._batches == self._batches_seen:
            self._retiring = True
            self._writer_lot.wake()
        else:
            self._batches_seen = self._batches

    def _abort_pending(self) -> bool:
        return self.scope is not None and self.scope.deadline != math.inf

    def stop(self) -> None:
        """The connection is over: the writer task ends."""
        if self.scope is None:
            self.scope = trio.CancelScope()
        self.scope.cancel()

    async def _writer(self) -> None:
        if self.scope is None:
            self.scope = trio.CancelScope()
        scope = self.scope
        with scope:
            while True:
                if self.frames:
                    self._retiring = False
                    try:
                        await self.flush()
                    except OutboundClosed:
                        return
                    self._batches += 1
                    continue
                if self._retiring and not self._abort_pending():
                    # Idle since the timers last looked: end (an idle connection keeps none).
                    self._retiring = self._started = False
                    self.scope = None
                    return
                await self._writer_lot.wait()
        if scope.cancelled_caught:
            await self._owner._abort()

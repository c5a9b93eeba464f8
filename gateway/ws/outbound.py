"""The sending half of a WebSocket connection: frames leave in the order they were queued and
never interleave, with as few task switches and syscalls as possible.

Three ways out, cheapest first:

* **direct write** — nothing queued and nobody writing on a plain TCP socket: ``os.write`` on
  the non-blocking fd takes what the kernel accepts, no task switch (asyncio's
  ``transport.write`` works the same way); the rest is queued;
* **flush** — a task that must know its frame is out (``send_message``) queues it and becomes
  the writer: one ``send_all`` for everything queued, then whatever was queued meanwhile;
  other tasks wait until the writer has covered their frames;
* **writer task** — frames queued by someone who must not wait (a broadcast, a close started
  from outside) are flushed by a task started on first need in the connection's nursery.

``buffered`` counts the bytes queued that way, for the slow-consumer limit; :meth:`abort_after`
gives a stuck write a grace period, after which the writer task drops the stream.
"""

from __future__ import annotations

import os
from typing import Protocol

import trio

from gateway.ws.waiting import Waiters


class Owner(Protocol):
    """The connection an :class:`Outbound` belongs to."""

    def on_write_lost(self) -> None:
        """The stream failed under a write."""

    async def abort(self) -> None:
        """A grace period ran out (:meth:`Outbound.abort_after`): drop the stream."""


class OutboundClosed(Exception):
    """The stream failed (or was closed) while writing."""


class Outbound:
    """See the module docstring.  Owned by one :class:`WebSocketConnection`."""

    __slots__ = (
        "_fd",
        "_owner",
        "_queued",
        "_started",
        "_stream",
        "_wanted",
        "_writer_lot",
        "_written",
        "_written_lot",
        "buffered",
        "closed",
        "frames",
        "nursery",
        "scope",
        "writing",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        owner: Owner,
    ) -> None:
        self._stream = stream
        # The socket's fd for direct writes: plain TCP only (TLS must go through SSLStream).
        self._fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        self._owner = owner  # told when a write fails, and when a grace period runs out
        self.frames: list[bytes] = []  # encoded frames, in order
        self.buffered = 0  # bytes queued without anyone waiting for them
        self._queued = 0  # frames ever queued
        self._written = 0  # frames ever handed to the stream (or dropped)
        self.writing = False
        self._written_lot = Waiters()  # flush() callers waiting for their frame
        self._writer_lot = Waiters()  # the writer task, waiting for frames
        self.scope: trio.CancelScope | None = None  # the writer task's (abort_after's deadline)
        self._started = False
        self._wanted = False
        self.nursery: trio.Nursery | None = None  # where the writer task starts
        self.closed = False

    def can_write_now(self) -> bool:
        """A plain TCP socket, nothing queued, nobody writing: bytes may go out right away."""
        return self._fd >= 0 and not self.writing and not self.frames and not self.closed

    def write_now(self, data: bytes | memoryview) -> int:
        """Write what the socket takes without blocking; only when :meth:`can_write_now`.
        Errors are left for the regular path (``send_all``) to report."""
        try:
            return os.write(self._fd, data)
        except OSError:
            return 0

    def queue(self, frame: bytes, *, buffered: bool = False) -> None:
        """Append ``frame``; ``buffered`` counts it towards the slow-consumer limit."""
        self.frames.append(frame)
        self._queued += 1
        if buffered:
            self.buffered += len(frame)

    def drop(self) -> None:
        """Forget everything queued (a slow consumer is being closed)."""
        self._written += len(self.frames)  # nobody waits for them any more
        self.frames.clear()
        self.buffered = 0

    async def flush(self) -> None:
        """Return once every frame queued so far is written, in order; see the module
        docstring.  Raises :class:`OutboundClosed` if the stream fails."""
        target = self._queued
        while self.writing:
            if self._written >= target:
                await trio.lowlevel.checkpoint()
                return
            await self._written_lot.wait()
        if self._written >= target:
            await trio.lowlevel.checkpoint()
            return
        self.writing = True
        try:
            while self.frames:
                # A cancel point before the frames are taken: cancelled here, they stay queued.
                await trio.lowlevel.checkpoint_if_cancelled()
                frames = self.frames
                data: bytes | memoryview = frames[0] if len(frames) == 1 else b"".join(frames)
                self.frames = []
                self.buffered = 0
                try:
                    if self._fd >= 0 and not self.closed:
                        # Straight to the socket first (trio's send_all costs ~15% of an
                        # echo's CPU); send_all only for what the kernel did not take.
                        sent = self.write_now(data)
                        data = memoryview(data)[sent:] if sent else data
                    if data:
                        await self._stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._owner.on_write_lost()
                    raise OutboundClosed from None
                self._written += len(frames)
                self._written_lot.wake_all()
        finally:
            self.writing = False
            self._written_lot.wake_all()

    def wake(self) -> None:
        """Make sure queued frames get written: wake the writer task, or start it in
        :attr:`nursery` the first time it is needed (or once there is a nursery)."""
        if self._started:
            self._writer_lot.wake()
        elif self.nursery is not None:
            self._started = True
            self.nursery.start_soon(self._writer)
        else:
            self._wanted = True

    def start_if_wanted(self) -> None:
        """Called once :attr:`nursery` is set: start the writer if frames were queued before."""
        if self._wanted:
            self.wake()

    def abort_after(self, grace: float) -> None:
        """Give whatever write is pending ``grace`` more seconds, then drop the stream (the
        writer task keeps that deadline, so it is started if it was not)."""
        if self.scope is None:
            self.scope = trio.CancelScope()
        self.scope.deadline = min(self.scope.deadline, trio.current_time() + grace)
        self.wake()

    def stop(self) -> None:
        """The connection is over: the writer task ends."""
        if self.scope is None:
            self.scope = trio.CancelScope()
        self.scope.cancel()

    async def _writer(self) -> None:
        if self.scope is None:
            self.scope = trio.CancelScope()
        with self.scope:
            while True:
                if not self.frames:
                    await self._writer_lot.wait()
                    continue
                try:
                    await self.flush()
                except OutboundClosed:
                    return
        if self.scope.cancelled_caught:
            await self._owner.abort()

"""The receiving half's queue: messages waiting for the handler, bounded so that a handler
that does not read stops the reader (and TCP then pushes back on the client).

A short list and two parking lots instead of a trio memory channel: a few hundred bytes less
per idle connection (docs/performance.md), and ``get`` skips the trip through the scheduler
when a message is already there.
"""

from __future__ import annotations

import trio
from trio.lowlevel import ParkingLot


class InboxClosed(Exception):
    """No more messages: the reader stopped, or the connection is closing locally."""


class Inbox:
    """Messages from the reader task to the handler; see the module docstring."""

    __slots__ = ("_getters", "_limit", "_putter", "discarding", "ended", "messages")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self.messages: list[str | bytes] = []  # short (inbound_queue): a list beats a deque
        self.ended = False  # the reader stopped: no more messages will be added
        self.discarding = False  # closing locally: drop what arrives, raise on reads
        self._getters = ParkingLot()  # get() waiting for a message
        self._putter = ParkingLot()  # the reader waiting for room

    async def get(self) -> str | bytes:
        """The next message; those that arrived before the end are still delivered, unless
        the connection is closing locally.  Raises :class:`InboxClosed` after that."""
        messages = self.messages
        while not messages or self.discarding:
            if self.ended or self.discarding:
                await trio.lowlevel.checkpoint()
                raise InboxClosed
            await self._getters.park()
        # A cancel point without a trip through the scheduler: the next send or receive of
        # any real handler is a schedule point anyway, and the inbox is bounded.
        await trio.lowlevel.checkpoint_if_cancelled()
        message = messages.pop(0)
        self._putter.unpark()
        return message

    async def put(self, message: str | bytes) -> None:
        """Add ``message``, waiting while the inbox is full (the reader stops reading); the
        message is dropped when discarding or once the inbox has ended."""
        while len(self.messages) >= self._limit and not self.discarding:
            if self.ended:
                return
            await self._putter.park()
        if self.discarding or self.ended:
            return
        self.messages.append(message)
        self._getters.unpark()

    def end(self) -> None:
        """The reader stopped: readers get what is left, then :class:`InboxClosed`; a put
        waiting for room gives up."""
        self.ended = True
        self._getters.unpark_all()
        self._putter.unpark_all()

    def discard(self) -> None:
        """A local close: queued messages are dropped, readers raise, and a reader waiting
        for room goes on (it must still read the peer's Close)."""
        self.discarding = True
        self.messages.clear()
        self._getters.unpark_all()
        self._putter.unpark_all()

    def __len__(self) -> int:
        return len(self.messages)

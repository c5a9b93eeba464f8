"""The receiving half's queue: messages waiting for the handler.

A plain list and one :class:`~gateway.ws.waiting.Waiters` instead of a trio memory channel:
a few hundred bytes less per idle connection (docs/performance.md).  Whoever reads the socket
(the handler itself inside ``get_message``, or a reader task) appends; the bound is applied by
the reader task, which stops reading while the inbox is full (``inbound_queue`` messages, or
``inbound_queue_bytes`` of them: :meth:`Inbox.weight`), so TCP pushes back on the client.  The
handler reads the socket itself only when the inbox is empty, and one read adds at most what
one ``receive`` of bytes parses to, or, compressed, what the parser's ``room`` lets inflate.

One wait queue serves both sides because they never wait at the same time: handlers wait
while the inbox is empty, the reader task only while it is full.
"""

from __future__ import annotations

import sys

from gateway.ws.waiting import Waiters


class Inbox:
    """Messages from the reader to the handler; see the module docstring."""

    __slots__ = ("discarding", "ended", "messages", "waiters")

    def __init__(self) -> None:
        self.messages: list[str | bytes] = []  # short (inbound_queue): a list beats a deque
        self.ended = False  # no more messages will be added
        self.discarding = False  # closing locally: drop what arrives, readers raise
        self.waiters = Waiters()  # handlers waiting for a message, or the reader for room

    def add(self, message: str | bytes) -> None:
        if not self.discarding and not self.ended:
            self.messages.append(message)

    def add_all(self, messages: list[str | bytes]) -> None:
        if not self.discarding and not self.ended:
            self.messages += messages

    def weight(self) -> int:
        """Bytes the queued messages hold (the objects' sizes: a ``str`` of astral characters
        takes four bytes per character).  Summed on demand by the reader task, never per
        message on the handler's path."""
        return sum(map(sys.getsizeof, self.messages))

    def end(self) -> None:
        """No more messages: handlers get what is left, then the connection's end."""
        self.ended = True
        self.waiters.wake_all()

    def discard(self) -> None:
        """A local close: queued messages are dropped and waiting handlers raise."""
        self.discarding = True
        self.messages.clear()
        self.waiters.wake_all()

    def __len__(self) -> int:
        return len(self.messages)

"""Pings of one connection: the handler's own (``ws.ping()`` waits for its pong) and the
keepalive clock (a ping every ``interval``; no pong within ``timeout`` means the peer is gone,
e.g. half-open TCP).  Pure bookkeeping: the connection sends the frames, and the attendant
(:mod:`gateway.ws.attendant`) calls it back at :attr:`Pings.due`."""

from __future__ import annotations

import math
import os
from collections import OrderedDict

import trio


class Pings:
    __slots__ = ("_interval", "_sent", "_timeout", "_waiters", "due", "failed", "payload")

    def __init__(self, interval: float, timeout: float) -> None:
        self._interval = interval
        self._timeout = timeout
        self._waiters: OrderedDict[bytes, trio.Event] | None = None  # created on first ping()
        self.payload: bytes | None = None  # the keepalive ping in flight
        self._sent = 0.0
        self.due = math.inf  # when tick() must run next
        self.failed = False

    def start(self, now: float) -> None:
        if self._interval > 0:
            self.due = now + self._interval

    def register(self, payload: bytes) -> trio.Event:
        """A handler's ping: the event is set by its pong (or by :meth:`release`)."""
        if self._waiters is None:
            self._waiters = OrderedDict()
        if payload in self._waiters:
            raise ValueError(f"a ping with payload {payload!r} is already in flight")
        event = self._waiters[payload] = trio.Event()
        return event

    def unanswered(self, payload: bytes, event: trio.Event) -> bool:
        """After ``event`` fired: ``True`` if it was released by the close, not by a pong."""
        waiters = self._waiters
        if waiters is not None and waiters.get(payload) is event:
            del waiters[payload]
            if not waiters:
                self._waiters = None
            return True
        return False

    def tick(self, now: float) -> bytes | None:
        """The keepalive clock ran out: the payload of the ping to send now, or ``None`` if
        the last one was never answered (then :attr:`failed`)."""
        if self.payload is not None:
            self.failed = True
            self.due = math.inf
            return None
        self.payload = os.urandom(4)
        self._sent = now
        self.due = now + self._timeout
        return self.payload

    def pong(self, payload: bytes) -> bool:
        """A pong answers the keepalive ping with its payload, and every handler ping up to
        the one with its payload (RFC 6455 §5.5.3: a pong may answer several pings).
        Returns ``True`` if it answered the keepalive ping (:attr:`due` moved)."""
        answered = payload == self.payload
        if answered:
            self.payload = None
            self.due = self._sent + self._interval
        waiters = self._waiters
        if waiters is None or payload not in waiters:
            return answered  # otherwise unsolicited: a heartbeat, nothing to do
        while waiters:
            key, event = waiters.popitem(last=False)
            event.set()
            if key == payload:
                break
        if not waiters:
            self._waiters = None  # (an idle connection keeps no empty dict)
        return answered

    def release(self) -> None:
        """The connection is gone: wake every handler ping (each then raises)."""
        for event in (self._waiters or {}).values():
            event.set()

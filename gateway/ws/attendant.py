"""One timer task for every connection of the process: keepalive pings and reader hand-offs.

An idle connection used to keep a cancel scope per receive (the keepalive deadline) and a
second task (the reader); each costs a few hundred bytes, times 10,000 idle connections.  With
the attendant, an idle connection is one task parked in the handler's ``get_message`` with no
deadline of its own: its timers are entries in one heap, run by one system task per trio run.

A connection asks for a call with :func:`call_at`; at that time the attendant calls
``connection._on_timer(when)``, synchronously.  Entries are never removed: a connection whose
timer moved (a pong arrived, the handler came back) compares ``when`` with what it wants and
ignores stale calls.  The heap holds connections weakly, so a closed connection is freed at
once, not when its keepalive would have been due.  Callbacks must not block and must not
raise; one that does is logged and the attendant goes on.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import weakref
from typing import Protocol

import trio
from trio.lowlevel import RunVar, spawn_system_task

log = logging.getLogger("gateway.ws")


class Timed(Protocol):
    def _on_timer(self, when: float) -> None: ...


class Attendant:
    __slots__ = ("_heap", "_scope", "_seq", "_size_after_sweep")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, weakref.ref[Timed]]] = []
        self._size_after_sweep = 0
        self._seq = itertools.count()  # ties run in the order they were asked for
        self._scope: trio.CancelScope | None = None  # the sleep until the earliest entry

    def call_at(self, when: float, target: Timed) -> None:
        # (weakref.ref returns the same object for the same target: one per connection.)
        heapq.heappush(self._heap, (when, next(self._seq), weakref.ref(target)))
        if len(self._heap) > max(1024, 2 * self._size_after_sweep):
            self._sweep()
        scope = self._scope
        if scope is not None and when < scope.deadline:
            scope.deadline = when

    def __len__(self) -> int:
        return len(self._heap)

    def _sweep(self) -> None:
        """Drop the entries of connections that are gone (many short connections would
        otherwise leave one per keepalive interval's worth of them)."""
        self._heap = [entry for entry in self._heap if entry[2]() is not None]
        heapq.heapify(self._heap)
        self._size_after_sweep = len(self._heap)

    async def run(self) -> None:
        while True:
            now = trio.current_time()
            while self._heap and self._heap[0][0] <= now:
                when, _, ref = heapq.heappop(self._heap)
                target = ref()
                if target is not None:
                    try:
                        target._on_timer(when)
                    except Exception:
                        log.exception("timer of %r failed", target)
                del ref, target  # not kept alive while the attendant sleeps
            deadline = self._heap[0][0] if self._heap else math.inf
            with trio.CancelScope(deadline=deadline) as self._scope:
                await trio.sleep_forever()
            self._scope = None


_current: RunVar[Attendant] = RunVar("gateway.ws.attendant")


def attendant() -> Attendant:
    """The attendant of the running trio run, started on first use."""
    try:
        return _current.get()
    except LookupError:
        pass
    current = Attendant()
    _current.set(current)
    spawn_system_task(current.run, name="gateway.ws.attendant")
    return current


def call_at(when: float, target: Timed) -> None:
    """Call ``target._on_timer(when)`` at ``when`` (trio's clock), from the attendant task."""
    attendant().call_at(when, target)

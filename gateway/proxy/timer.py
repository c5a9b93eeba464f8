"""The upstream read timeout (nginx's ``proxy_read_timeout``) without a cancel scope per read.

Every proxied request waits for its upstream's answer at least once.  A ``trio.move_on_after``
around that wait (a cancel scope with a deadline, built and registered in Python) cost about
a twentieth of the proxy's CPU per request (issue 14, py-spy).  Instead, each wait puts its
deadline in :class:`ReadTimer` (a dict entry, removed when the wait ends), and one task per
trio run sleeps until the earliest deadline there.  Under steady traffic the entries come and
go within milliseconds and that task wakes about once per ``read_timeout``.

When a wait's deadline passes, the timer asks its ``progress`` (the request body bytes sent
so far): moved since the wait began, the wait gets another ``read_timeout`` (an upstream
still being fed a slow upload is not stalled); else the wait is ended with
``trio.lowlevel.notify_closing`` on its socket, which wakes it with
:class:`trio.ClosedResourceError` after ``timed_out`` is set.  notify_closing requires the
socket to be closed afterwards: a timed-out connection is broken, and the pool closes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import trio

Progress = Callable[[], int]


class Waiter(Protocol):
    """What waits: told when its time ran out (an upstream connection)."""

    timed_out: bool


class _Wait:
    __slots__ = ("deadline", "fd", "progress", "start", "timeout")

    def __init__(
        self, deadline: float, timeout: float, progress: Progress | None, start: int, fd: int
    ) -> None:
        self.deadline = deadline
        self.timeout = timeout
        self.progress = progress
        self.start = start  # progress when the current window began
        self.fd = fd


class ReadTimer:
    """The pending read deadlines of one trio run; :func:`read_timer` gives the run's."""

    def __init__(self) -> None:
        self.waits: dict[Waiter, _Wait] = {}
        self.wake_at = math.inf  # when the task looks next (inf: nothing to look at)
        self._changed = trio.Event()

    def add(self, waiter: Waiter, fd: int, timeout: float, progress: Progress | None) -> None:
        """``waiter`` now waits (on ``fd``) for at most ``timeout`` seconds without progress."""
        deadline = trio.current_time() + timeout
        start = progress() if progress is not None else 0
        self.waits[waiter] = _Wait(deadline, timeout, progress, start, fd)
        if deadline < self.wake_at:
            self._changed.set()  # the task sleeps past this deadline (or has nothing yet)

    def discard(self, waiter: Waiter) -> None:
        """The wait ended (answered, failed or cancelled)."""
        self.waits.pop(waiter, None)

    def expire(self, now: float) -> float:
        """End or extend every wait whose deadline is ``now`` or earlier; the next deadline."""
        earliest = math.inf
        for waiter, wait in list(self.waits.items()):
            if wait.deadline > now:
                earliest = min(earliest, wait.deadline)
                continue
            moved = wait.progress() if wait.progress is not None else 0
            if moved != wait.start:
                wait.deadline, wait.start = now + wait.timeout, moved  # another window
                earliest = min(earliest, wait.deadline)
                continue
            del self.waits[waiter]
            waiter.timed_out = True
            trio.lowlevel.notify_closing(wait.fd)  # wakes the wait: ClosedResourceError
        return earliest

    async def run(self) -> None:
        """The timer's task (a system task: it lives as long as the trio run)."""
        while True:
            self.wake_at = self.expire(trio.current_time())
            self._changed = trio.Event()
            with trio.move_on_at(self.wake_at):
                await self._changed.wait()


_TIMER: trio.lowlevel.RunVar[ReadTimer] = trio.lowlevel.RunVar("gateway_proxy_read_timer")


def read_timer() -> ReadTimer:
    """This trio run's :class:`ReadTimer`, its task started on first use."""
    try:
        return _TIMER.get()
    except LookupError:
        timer = ReadTimer()
        _TIMER.set(timer)
        trio.lowlevel.spawn_system_task(timer.run, name="gateway.proxy.timer")
        return timer

"""Waiting for a connection's socket to be readable, in ~1 KiB less per idle connection.

An idle connection is one task parked until its socket has bytes.  Parked in trio's
``wait_readable``, that wait holds four coroutine frames, a closure and trio's per-descriptor
registration record (~1.5 KiB, tracemalloc; docs/performance.md); at 10,000 idle connections
that is most of what is left to cut.  Here the task parks with
:func:`trio.lowlevel.wait_task_rescheduled` alone, and the descriptors are watched by one epoll
set of our own per trio run (Linux), which trio watches as one descriptor: one system task
wakes the parked tasks whose sockets became readable.

Each wait arms the descriptor once (``EPOLLONESHOT``: one ``epoll_ctl`` per wait; trio's
``wait_readable`` makes two).  A connection that closes its socket while a task waits on it
calls :meth:`Readiness.wake` first (trio's ``notify_closing`` does that for its own waits); a
closed descriptor leaves the epoll set by itself.  Where there is no epoll (not Linux) the
caller falls back to trio's ``wait_readable``.
"""

from __future__ import annotations

import logging
import select

import trio
from trio.lowlevel import RunVar, Task, reschedule, spawn_system_task

log = logging.getLogger("gateway.ws")

AVAILABLE = hasattr(select, "epoll")
_ARM = getattr(select, "EPOLLIN", 0) | getattr(select, "EPOLLONESHOT", 0)
_BATCH = 1024  # events taken per epoll_wait


class Readiness:
    """One trio run's epoll set and the tasks parked on it, by descriptor."""

    __slots__ = ("_epoll", "_parked")

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._parked: dict[int, Task] = {}

    def park(self, fd: int, task: Task, registered: bool) -> None:
        """Arm ``fd`` for ``task``, which then waits in ``wait_task_rescheduled`` (the abort
        function calls :meth:`unpark`).  ``registered``: ``fd`` was armed before (only
        re-armed then).  :raises trio.BusyResourceError: another task waits on ``fd``."""
        parked = self._parked
        if fd in parked:
            raise trio.BusyResourceError("another task is already reading this socket")
        epoll = self._epoll
        try:
            if registered:
                epoll.modify(fd, _ARM)
            else:
                epoll.register(fd, _ARM)
        except FileNotFoundError:  # (closed and reopened under the same number)
            epoll.register(fd, _ARM)
        except FileExistsError:
            epoll.modify(fd, _ARM)
        parked[fd] = task

    def unpark(self, fd: int) -> None:
        """The task waiting on ``fd`` stops (its wait was cancelled); the one-shot arming may
        still fire, and is ignored then."""
        self._parked.pop(fd, None)

    def wake(self, fd: int) -> None:
        """Wake whoever waits on ``fd`` now (its socket is being closed)."""
        task = self._parked.pop(fd, None)
        if task is not None:
            reschedule(task)

    def __len__(self) -> int:
        return len(self._parked)

    async def run(self) -> None:
        epoll = self._epoll
        parked = self._parked
        try:
            while True:
                await trio.lowlevel.wait_readable(epoll.fileno())
                while True:
                    events = epoll.poll(0, _BATCH)
                    for fd, _ in events:
                        task = parked.pop(fd, None)
                        if task is not None:
                            reschedule(task)
                    if len(events) < _BATCH:
                        break
        finally:
            epoll.close()


_current: RunVar[Readiness] = RunVar("gateway.ws.readiness")


def readiness() -> Readiness:
    """The watcher of the running trio run, started on first use."""
    try:
        return _current.get()
    except LookupError:
        pass  # first use in this trio run: started below
    current = Readiness()
    _current.set(current)
    spawn_system_task(current.run, name="gateway.ws.readiness")
    return current

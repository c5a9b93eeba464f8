"""Tasks parked until another task wakes them: the one primitive the engine waits on.

trio's :class:`~trio.lowlevel.ParkingLot` keeps an ``OrderedDict`` and a list alive from the
moment it is created; a connection had three of them, ~0.8 KiB per idle connection.  Most of
the time nobody waits, so :class:`Waiters` is one slot holding ``None`` until a task parks.
"""

from __future__ import annotations

from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled


class Waiters:
    """A FIFO of parked tasks (``ParkingLot.park``/``unpark``/``unpark_all``, smaller)."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: list[Task] | None = None  # created by the first wait, dropped when empty

    def __bool__(self) -> bool:
        return bool(self._tasks)

    async def wait(self) -> None:
        """Park until :meth:`wake` or :meth:`wake_all`; cancellable (then nothing is lost)."""
        tasks = self._tasks
        if tasks is None:
            tasks = self._tasks = []
        task = current_task()
        tasks.append(task)

        def abort(_: object) -> Abort:
            tasks.remove(task)  # still parked: wake() pops before it reschedules
            if not tasks and self._tasks is tasks:
                self._tasks = None
            return Abort.SUCCEEDED

        await wait_task_rescheduled(abort)

    def wake(self) -> None:
        """Wake the task that has waited longest, if any."""
        tasks = self._tasks
        if tasks:
            task = tasks.pop(0)
            if not tasks:
                self._tasks = None
            reschedule(task)

    def wake_all(self) -> None:
        tasks, self._tasks = self._tasks, None
        for task in tasks or ():
            reschedule(task)

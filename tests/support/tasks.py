"""Which trio tasks are running: for tests that count the engine's tasks per connection."""

from __future__ import annotations

from collections.abc import Iterator

import trio

READER, WRITER = "Reader._reader", "Outbound._writer"  # the engine's helper tasks


def tasks_under(nursery: trio.Nursery) -> Iterator[trio.lowlevel.Task]:
    """Every task running under ``nursery``, at any depth."""
    for task in nursery.child_tasks:
        yield task
        for child in task.child_nurseries:
            yield from tasks_under(child)


def all_tasks() -> Iterator[trio.lowlevel.Task]:
    """Every task of the run but the root."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    for nursery in root.child_nurseries:
        yield from tasks_under(nursery)


def helper_tasks() -> list[str]:
    """The names of the engine's reader and writer tasks running now, anywhere in the run."""
    return [task.name for task in all_tasks() if task.name.endswith((READER, WRITER))]

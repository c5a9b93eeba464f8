"""The pid file (``server.pid_file`` / ``--pid-file``): where ``gateway reload`` finds a
running gateway.  Written once the gateway listens (the supervisor's pid with ``--workers``),
removed when it exits, and only if it still names this process."""

from __future__ import annotations

import os
from pathlib import Path


def write(path: str) -> None:
    """Write this process's pid to ``path`` (atomically: a reader never sees half of it)."""
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}")
    temporary.write_text(f"{os.getpid()}\n", encoding="ascii")
    os.replace(temporary, target)


def remove(path: str) -> None:
    """Remove ``path`` if it names this process (a newer gateway may have taken it over)."""
    try:
        if read(path) == os.getpid():
            os.unlink(path)
    except (OSError, ValueError):
        pass  # gone or rewritten by another gateway: not ours to remove


def read(path: str) -> int:
    """The pid in ``path``; raises OSError (no such file) or ValueError (not a pid)."""
    text = Path(path).read_text(encoding="ascii", errors="replace").strip()
    pid = int(text, 10)
    if pid <= 0:
        raise ValueError(f"not a pid: {text!r}")
    return pid

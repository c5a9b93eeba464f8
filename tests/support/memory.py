"""This process's memory, for the tests that check that it stays flat while megabytes pass
through an in-process gateway."""

from __future__ import annotations

from pathlib import Path


def rss_bytes() -> int:
    """This process's resident set size now (Linux ``/proc``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")

"""The time bounds every test that talks to a real server shares: no client step, start or
stop may hang the suite."""

from __future__ import annotations

TIMEOUT = 10.0  # seconds: no single client step may take longer
STARTUP_DEADLINE = 20.0  # seconds until a gateway subprocess must have logged its address
STOP_TIMEOUT = 15.0  # seconds between SIGTERM and SIGKILL (or for an in-process drain)

"""The supervisor's decisions, as pure functions (no trio, no processes): how many workers,
when to restart one that died and when to give up, what each signal means, how long a drain
may take, and the exit status.  :mod:`gateway.supervisor` is the trio shell that acts on them.
"""

from __future__ import annotations

import enum
import signal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from gateway.config.schema import ServerConfig

EXIT_OK = 0
EXIT_FAILED = 1  # a worker failed (gave up after crashes, unclean stop, killed at the deadline)

# Slack beyond drain_delay + shutdown_timeout for a worker to unwind its lifespans (plugins,
# broker connections, proxy pools) and exit, before the supervisor kills it.
EXIT_MARGIN = 5.0


def resolve_workers(setting: int | Literal["auto"], cpus: int | None) -> int:
    """``server.workers`` as a count: ``"auto"`` is one per usable CPU (at least one)."""
    if setting == "auto":
        return max(1, cpus or 1)
    return setting


def parse_workers(text: str) -> int | Literal["auto"]:
    """``--workers`` on the command line: ``"auto"`` or an int >= 1; raises ValueError."""
    if text == "auto":
        return "auto"
    try:
        value = int(text, 10)
    except ValueError:
        raise ValueError(f"expected an int >= 1 or 'auto', got {text!r}") from None
    if value < 1:
        raise ValueError(f"must be >= 1, got {value}")
    return value


# --------------------------------------------------------------------------- restarts


@dataclass(frozen=True)
class RestartPolicy:
    """Exponential back-off per worker slot, and a crash budget.

    A slot's crashes are counted over the last ``window`` seconds: the k-th crash in the
    window waits ``base_delay * 2**(k-1)`` (at most ``max_delay``) before the restart; the
    ``max_crashes``-th gives up.  A worker that ran for longer than ``window`` before dying
    is restarted after ``base_delay`` again: old crashes are forgiven.
    """

    base_delay: float = 0.1
    max_delay: float = 10.0
    window: float = 60.0
    max_crashes: int = 5


@dataclass(frozen=True)
class Restart:
    delay: float
    crashes: tuple[float, ...]  # the slot's crash times still in the window, this one included


@dataclass(frozen=True)
class GiveUp:
    crashes: tuple[float, ...]

    def describe(self) -> str:
        span = self.crashes[-1] - self.crashes[0]
        return f"{len(self.crashes)} crashes in {span:.1f}s"


def after_crash(
    crashes: Sequence[float], now: float, policy: RestartPolicy = RestartPolicy()
) -> Restart | GiveUp:
    """A worker of a slot that crashed at ``crashes`` (monotonic seconds) died at ``now``
    while the gateway was running: restart it (after a delay), or give up."""
    recent = (*(t for t in crashes if now - t < policy.window), now)
    if len(recent) >= policy.max_crashes:
        return GiveUp(recent)
    delay = min(policy.base_delay * 2 ** (len(recent) - 1), policy.max_delay)
    return Restart(delay, recent)


def describe_exit(returncode: int) -> str:
    """``exited with status 3`` / ``killed by SIGKILL`` (Popen's negative returncodes)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with status {returncode}"


# --------------------------------------------------------------------------- signals


class Phase(enum.Enum):
    RUNNING = "running"  # workers serve; a worker that dies is restarted
    DRAINING = "draining"  # workers were told to drain; nothing is restarted
    STOPPING = "stopping"  # workers were told to stop now


class Action(enum.Enum):
    DRAIN = "draining"  # send every worker SIGTERM: each drains as a single process does
    STOP_NOW = "stopping now"  # send every worker SIGQUIT: each cancels its connections now
    IGNORE = "ignore"


# What the supervisor sends a worker for each action.  A worker treats every SIGTERM/SIGINT
# as "drain" (repeats change nothing) because an init system may signal the whole process
# group or cgroup at once (systemd's KillMode=control-group): the worker then gets SIGTERM
# both directly and forwarded, and a forwarded copy must not turn a drain into an abort.
# "Stop now" therefore has its own signal.
WORKER_SIGNAL = {Action.DRAIN: signal.SIGTERM, Action.STOP_NOW: signal.SIGQUIT}
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def on_signal(phase: Phase, signum: int) -> tuple[Phase, Action]:
    """SIGTERM/SIGINT: the first drains every worker, the second stops them now (as the
    single process does); later ones change nothing."""
    if signum not in HANDLED_SIGNALS:
        return phase, Action.IGNORE
    if phase is Phase.RUNNING:
        return Phase.DRAINING, Action.DRAIN
    if phase is Phase.DRAINING:
        return Phase.STOPPING, Action.STOP_NOW
    return phase, Action.IGNORE


def drain_deadline(server: ServerConfig) -> float:
    """Seconds from "drain" until a worker still running is killed: its own drain is bounded
    by ``drain_delay + shutdown_timeout``; the margin lets it unwind and exit."""
    return server.drain_delay + server.shutdown_timeout + EXIT_MARGIN


def clean_stop(returncode: int) -> bool:
    """Whether a worker's exit after "drain" (or "stop now") was clean: status 0, or the
    default action of the signal it was sent (a worker told before it had installed its
    handlers, or after it had finished, had nothing left to drain)."""
    return returncode in (0, -signal.SIGTERM, -WORKER_SIGNAL[Action.STOP_NOW])


def exit_status(gave_up: bool, stops: Iterable[int], killed: int) -> int:
    """The supervisor's own status: 0 only if nobody gave up, every worker stopped cleanly
    and none had to be killed at the deadline."""
    if gave_up or killed or not all(clean_stop(rc) for rc in stops):
        return EXIT_FAILED
    return EXIT_OK

"""``gateway serve --workers N`` (N > 1): the supervisor process, a thin trio shell.

It binds the listening sockets itself (so port 0 and bind errors are resolved once, before any
worker exists), then starts N worker processes (:mod:`gateway.worker`) that inherit them and
all accept on them.  The decisions are :mod:`gateway.supervision`'s pure functions; this module
only acts on them:

* a worker that dies while the gateway runs is logged with its exit status and restarted after
  a back-off; too many crashes of one worker in a short time: the supervisor gives up loudly,
  drains the others and exits non-zero, so the init system sees a failed service;
* SIGTERM/SIGINT: every worker is sent SIGTERM and drains exactly as a single process does;
  a second one: SIGQUIT, every worker stops now; a worker still running at
  :func:`~gateway.supervision.drain_deadline` is killed.

The supervisor never accepts a connection.  While a worker is being restarted, connections
wait in the shared accept queue (or the other workers take them): none is refused.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import signal
import subprocess
from dataclasses import dataclass, field

import trio

from gateway import server, worker
from gateway.config.schema import Config
from gateway.errors import ConfigError
from gateway.supervision import (
    HANDLED_SIGNALS,
    WORKER_SIGNAL,
    Action,
    GiveUp,
    Phase,
    RestartPolicy,
    after_crash,
    describe_exit,
    drain_deadline,
    exit_status,
    on_signal,
)

log = logging.getLogger("gateway.supervisor")


@dataclass
class _Slot:
    """Worker number ``index``: its current process and its recent crashes."""

    index: int
    process: trio.Process | None = None
    crashes: tuple[float, ...] = ()
    stop_status: int | None = None  # how it exited once told to drain or stop


@dataclass
class Supervisor:
    config: Config
    workers: int
    log_level: str
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    phase: Phase = Phase.RUNNING
    gave_up: bool = False
    killed: int = 0
    slots: list[_Slot] = field(default_factory=list)
    stopping: trio.Event = field(default_factory=trio.Event)  # set by the first "drain"
    # Set at "drain": when a worker still running gets killed.  Every wait on a worker runs
    # in one of the ``waits`` cancel scopes, so the deadline reaches waits already under way.
    deadline: float = math.inf
    waits: set[trio.CancelScope] = field(default_factory=set)

    async def run(self) -> int:
        try:
            listeners = await server.open_listeners(self.config.server.listen)
        except OSError as exc:
            raise ConfigError("server.listen", f"cannot listen: {exc.strerror or exc}") from None
        fds = [listener.socket.fileno() for listener in listeners]
        payload = pickle.dumps(self.config)
        for url in server.bound_urls(listeners, self.config.server.tls is not None):
            log.info("listening on %s", url)
        log.info("supervisor pid %d: starting %d workers", os.getpid(), self.workers)
        self.slots = [_Slot(i) for i in range(1, self.workers + 1)]
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._signals)
                async with trio.open_nursery() as slots:
                    for slot in self.slots:
                        slots.start_soon(self._keep_running, slot, fds, payload)
                nursery.cancel_scope.cancel()
        finally:
            for listener in listeners:
                await listener.aclose()
        stops = [s.stop_status for s in self.slots if s.stop_status is not None]
        status = exit_status(self.gave_up, stops, self.killed)
        log.info("stopped (exit status %d)", status)
        return status

    async def _keep_running(self, slot: _Slot, fds: list[int], payload: bytes) -> None:
        """Run worker ``slot`` until the gateway stops, restarting it when it dies."""
        while self.phase is Phase.RUNNING:
            pid, returncode = await self._run_once(slot, fds, payload)
            if self.phase is not Phase.RUNNING:
                slot.stop_status = returncode
                level = logging.INFO if returncode == 0 else logging.WARNING
                log.log(level, "worker %d (pid %d) %s", slot.index, pid, describe_exit(returncode))
                return
            decision = after_crash(slot.crashes, trio.current_time(), self.policy)
            if isinstance(decision, GiveUp):
                log.critical(
                    "worker %d (pid %d) %s: %s, giving up: stopping every worker",
                    slot.index,
                    pid,
                    describe_exit(returncode),
                    decision.describe(),
                )
                self.gave_up = True
                slot.stop_status = returncode
                self._act(Action.DRAIN)
                return
            slot.crashes = decision.crashes
            log.error(
                "worker %d (pid %d) %s; restarting in %.1fs",
                slot.index,
                pid,
                describe_exit(returncode),
                decision.delay,
            )
            with trio.move_on_after(decision.delay):
                await self.stopping.wait()

    async def _run_once(self, slot: _Slot, fds: list[int], payload: bytes) -> tuple[int, int]:
        """Start worker ``slot``, hand it the config, wait for it to exit: (pid, returncode)."""
        command = worker.command(slot.index, fds, self.log_level)
        process = await trio.lowlevel.open_process(command, stdin=subprocess.PIPE, pass_fds=fds)
        slot.process = process
        log.info("worker %d started (pid %d)", slot.index, process.pid)
        if self.phase is not Phase.RUNNING:  # a signal came while it was being started
            self._signal(process, Action.DRAIN if self.phase is Phase.DRAINING else Action.STOP_NOW)
        assert process.stdin is not None
        # The pipe stays open while the worker runs: its end of file tells the worker that
        # the supervisor is gone.
        async with process.stdin:
            with trio.CancelScope(deadline=self.deadline) as scope:
                self.waits.add(scope)
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(_send_config, process.stdin, payload)
                        await process.wait()
                        nursery.cancel_scope.cancel()
                finally:
                    self.waits.discard(scope)
            if scope.cancelled_caught:
                log.error(
                    "worker %d (pid %d) still running %.1fs after the drain began: killed",
                    slot.index,
                    process.pid,
                    drain_deadline(self.config.server),
                )
                self.killed += 1
                process.kill()
                await process.wait()
        slot.process = None
        assert process.returncode is not None
        return process.pid, process.returncode

    async def _signals(self) -> None:
        with trio.open_signal_receiver(*HANDLED_SIGNALS) as signals:
            async for signum in signals:
                self.phase, action = on_signal(self.phase, signum)
                if action is not Action.IGNORE:
                    log.info("%s: %s every worker", signal.Signals(signum).name, action.value)
                    self._act(action)

    def _act(self, action: Action) -> None:
        """Tell every live worker to drain, or to stop now."""
        if action is Action.DRAIN:
            if self.phase is Phase.RUNNING:
                self.phase = Phase.DRAINING
            self.deadline = trio.current_time() + drain_deadline(self.config.server)
            for scope in self.waits:
                scope.deadline = self.deadline
            self.stopping.set()
        for slot in self.slots:
            if slot.process is not None:
                self._signal(slot.process, action)

    @staticmethod
    def _signal(process: trio.Process, action: Action) -> None:
        if process.returncode is None:
            try:
                process.send_signal(WORKER_SIGNAL[action])
            except ProcessLookupError:
                pass  # it exited meanwhile; its wait reports how


async def _send_config(stdin: trio.abc.SendStream, payload: bytes) -> None:
    try:
        await stdin.send_all(payload)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the worker died before reading it: its exit status says why


def run(config: Config, workers: int, log_level: str) -> int:
    """Supervise ``workers`` worker processes until a signal or a give-up; the exit status."""
    return trio.run(Supervisor(config, workers, log_level).run)

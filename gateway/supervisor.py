"""``gateway serve --workers N`` (N > 1): the supervisor process, a thin trio shell.

It binds the listening sockets itself (:mod:`gateway.worker_sockets`: so port 0 and bind
errors are resolved once, before any worker exists), then starts N worker processes
(:mod:`gateway.worker`) that inherit them and accept on them.  The decisions are
:mod:`gateway.supervision`'s pure functions; this module only acts on them:

* a worker that dies while the gateway runs is logged with its exit status and restarted after
  a back-off; too many crashes of one worker in a short time: the supervisor gives up loudly,
  drains the others and exits non-zero, so the init system sees a failed service;
* SIGTERM/SIGINT: every worker is sent SIGTERM and drains exactly as a single process does;
  a second one: SIGQUIT, every worker stops now; a worker still running at
  :func:`~gateway.supervision.drain_deadline` is killed;
* SIGHUP: the supervisor loads and checks the config file; if it is good, every worker is
  sent SIGHUP and reloads it as a single process does (and a worker restarted later starts
  on it); if not, the error is logged with its key path and nothing changes.

The supervisor never accepts a connection.  It holds the sockets while the workers run, so a
connection waiting on a worker that died is served by its restart, never reset.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import pickle
import signal
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from gateway import pidfile, server, worker, worker_sockets
from gateway.admin import server as admin_server
from gateway.admin import workers as admin_workers
from gateway.config.reload import plan
from gateway.config.schema import Config, LogConfig
from gateway.errors import ConfigError, ListenError
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
    """Worker number ``index``: its sockets, its current process and its recent crashes."""

    index: int
    sockets: list[socket.socket]
    process: trio.Process | None = None
    crashes: tuple[float, ...] = ()
    stop_status: int | None = None  # how it exited once told to drain or stop

    @property
    def fds(self) -> list[int]:
        return [sock.fileno() for sock in self.sockets]


@dataclass
class Supervisor:
    config: Config
    slots: list[_Slot]
    log_level: str
    log_format: str = "text"
    load: Callable[[], Config] | None = None  # the config file with the command line's options
    payload: bytes = b""  # the config every worker starts on (pickled)
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    phase: Phase = Phase.RUNNING
    gave_up: bool = False
    killed: int = 0
    stopping: trio.Event = field(default_factory=trio.Event)  # set by the first "drain"
    # Set at "drain": when a worker still running gets killed.  Every wait on a worker runs
    # in one of the ``waits`` cancel scopes, so the deadline reaches waits already under way.
    deadline: float = math.inf
    waits: set[trio.CancelScope] = field(default_factory=set)
    spawning: int = 0  # workers being started: their sockets must stay open until they are

    async def run(self) -> int:
        self.payload = pickle.dumps(self.config)
        log.info("supervisor pid %d: starting %d workers", os.getpid(), len(self.slots))
        admin_listeners = await admin_server.open_listeners(self.config)  # [admin], if any
        try:
            async with trio.open_nursery() as nursery:
                if admin_listeners:  # metrics of every worker: gateway.admin.workers
                    await nursery.start(
                        admin_workers.supervise, self.config, len(self.slots), admin_listeners
                    )
                nursery.start_soon(self._signals)
                async with trio.open_nursery() as slots:
                    for slot in self.slots:
                        slots.start_soon(self._keep_running, slot)
                nursery.cancel_scope.cancel()
        finally:
            self._close_sockets()
        stops = [s.stop_status for s in self.slots if s.stop_status is not None]
        status = exit_status(self.gave_up, stops, self.killed)
        log.info("stopped (exit status %d)", status)
        return status

    def _close_sockets(self) -> None:
        """Close the supervisor's copies of the listening sockets, once no worker is being
        started: from then on each socket closes when its workers close theirs (after the
        drain delay), so the port refuses new connections as a single process's does."""
        if self.spawning == 0:
            for slot in self.slots:
                for sock in slot.sockets:
                    sock.close()

    async def _keep_running(self, slot: _Slot) -> None:
        """Run worker ``slot`` until the gateway stops, restarting it when it dies."""
        while self.phase is Phase.RUNNING:
            pid, returncode = await self._run_once(slot, self.payload)
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

    async def _run_once(self, slot: _Slot, payload: bytes) -> tuple[int, int]:
        """Start worker ``slot``, hand it the config, wait for it to exit: (pid, returncode)."""
        fds = slot.fds
        command = worker.command(slot.index, fds, self.log_level, self.log_format)
        self.spawning += 1
        try:
            process = await trio.lowlevel.open_process(command, stdin=subprocess.PIPE, pass_fds=fds)
        finally:
            self.spawning -= 1
        slot.process = process
        log.info("worker %d started (pid %d)", slot.index, process.pid)
        if self.phase is not Phase.RUNNING:  # a signal came while it was being started
            self._signal(process, Action.DRAIN if self.phase is Phase.DRAINING else Action.STOP_NOW)
            self._close_sockets()
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
        with trio.open_signal_receiver(*HANDLED_SIGNALS, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self._reload()
                    continue
                self.phase, action = on_signal(self.phase, signum)
                if action is not Action.IGNORE:
                    log.info("%s: %s every worker", signal.Signals(signum).name, action.value)
                    self._act(action)

    def _reload(self) -> None:
        """SIGHUP: check the file here first (a bad one changes nothing anywhere), then pass
        the reload to every worker; restarts start on the new config."""
        if self.load is None or self.phase is not Phase.RUNNING:
            return
        try:
            loaded = self.load()
        except ConfigError as exc:
            log.error("reload failed, workers keep the previous config: %s", exc)  # noqa: TRY400
            return
        self.config = plan(self.config, loaded).config  # restart-only keys stay as running
        self.payload = pickle.dumps(self.config)
        log.info("SIGHUP: reloading every worker")
        for slot in self.slots:
            process = slot.process
            if process is not None and process.returncode is None:
                try:
                    process.send_signal(signal.SIGHUP)
                except ProcessLookupError:
                    pass  # exited meanwhile: its restart reads the new config anyway

    def _act(self, action: Action) -> None:
        """Tell every live worker to drain, or to stop now."""
        if action is Action.DRAIN:
            if self.phase is Phase.RUNNING:
                self.phase = Phase.DRAINING
            self.deadline = trio.current_time() + drain_deadline(self.config.server)
            for scope in self.waits:
                scope.deadline = self.deadline
            self.stopping.set()
            self._close_sockets()
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


def run(
    config: Config,
    workers: int,
    log_config: LogConfig,
    load: Callable[[], Config] | None = None,
) -> int:
    """Bind, then supervise ``workers`` worker processes until a signal or a give-up; the
    exit status.  Raises :class:`ListenError` if an address cannot be bound."""
    reuseport = worker_sockets.balancing_supported()
    try:
        sockets = worker_sockets.bind(config.server.listen_addresses, workers, reuseport=reuseport)
    except OSError as exc:
        raise ListenError(
            f"cannot listen on {', '.join(config.server.listen)}: {exc.strerror or exc}"
            + (
                " (address in use: pick another with --listen HOST:PORT)"
                if exc.errno == errno.EADDRINUSE
                else ""
            )
        ) from None
    for url in _urls(sockets[0], secure=config.server.tls is not None):
        log.info("listening on %s", url)
    how = "a socket of its own per address (SO_REUSEPORT)" if reuseport else "shared sockets"
    log.info("%d workers, each on %s", workers, how)
    slots = [_Slot(i, socks) for i, socks in enumerate(sockets, start=1)]
    urls = _urls(sockets[0], secure=config.server.tls is not None)
    server.announce(config, urls)
    supervisor = Supervisor(config, slots, log_config.level, log_config.format, load)
    if config.server.pid_file is not None:
        pidfile.write(config.server.pid_file)
    try:
        return trio.run(supervisor.run)
    finally:
        if config.server.pid_file is not None:
            pidfile.remove(config.server.pid_file)


def _urls(sockets: list[socket.socket], *, secure: bool) -> list[str]:
    urls = []
    for sock in sockets:
        host, port = sock.getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        urls.append(f"{'https' if secure else 'http'}://{host}:{port}")
    return urls

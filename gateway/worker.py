"""One worker process under ``gateway serve --workers N`` (started by :mod:`gateway.supervisor`).

The worker serves listening sockets it inherited from the supervisor (file descriptors named
on its command line) with the validated :class:`Config` the supervisor wrote to its stdin, so a
restarted worker runs the same config as its siblings even if the file was edited since.
Serving is today's :func:`gateway.server.serve`, unchanged: a worker drains exactly as a single
process does.  Signals differ in one way (see :data:`gateway.supervision.WORKER_SIGNAL`):
every SIGTERM/SIGINT means "drain", SIGQUIT means "stop now".  Its stdin stays open for the
supervisor's whole life: end of file there means the supervisor is gone (even SIGKILLed), and
the worker drains rather than serve on unsupervised.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import pickle
import signal
import socket
import sys
from collections.abc import Callable, Sequence

import trio

from gateway import app as app_module
from gateway import log as log_module
from gateway import server
from gateway.admin import workers as admin_workers
from gateway.config.load import load_file
from gateway.config.schema import Config
from gateway.errors import ConfigError

log = logging.getLogger("gateway.worker")

EXIT_CONFIG = 2


def command(index: int, fds: Sequence[int], log_level: str, log_format: str = "text") -> list[str]:
    """The command line that starts worker ``index`` on the inherited ``fds``."""
    return [
        sys.executable,
        "-c",
        "import sys; from gateway.worker import main; sys.exit(main())",
        "--index",
        str(index),
        "--fds",
        ",".join(str(fd) for fd in fds),
        "--log-level",
        log_level,
        "--log-format",
        log_format,
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway-worker")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--fds", required=True)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-format", default="text", choices=["text", "json"])
    # Until the signal receivers are in place: a Ctrl-C in the terminal reaches the whole
    # process group, and the supervisor forwards it as SIGTERM anyway (no traceback here);
    # a SIGHUP (reload) would end the process by default.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    args = parser.parse_args(argv)
    log_module.configure(args.log_level, args.log_format)
    tag_log_lines(args.index)
    # The supervisor wrote the config it validated; it is our own parent, so unpickling
    # its bytes trusts nobody new.
    try:
        config: Config = pickle.load(sys.stdin.buffer)
    except EOFError:
        print(f"gateway: worker {args.index}: supervisor gone before the config", file=sys.stderr)
        return 1
    try:
        app = app_module.build(config)
    except ConfigError as exc:  # e.g. an environment variable gone since the supervisor checked
        print(f"gateway: worker {args.index}: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    listeners = [adopt(int(fd)) for fd in args.fds.split(",")]
    trio.run(run, app, listeners, args.index)
    # Served and drained: a late signal from the supervisor must not turn this clean exit
    # into a death by signal.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    return 0


def adopt(fd: int) -> trio.SocketListener:
    """A listener on an inherited listening socket."""
    return trio.SocketListener(trio.socket.from_stdlib_socket(socket.socket(fileno=fd)))


async def run(app: app_module.App, listeners: list[trio.SocketListener], index: int = 0) -> None:
    shutdown = trio.Event()
    send, receive = trio.open_memory_channel[Callable[[], Config]](1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_signals, shutdown, nursery.cancel_scope, send, app.config.source)
        nursery.start_soon(_watch_supervisor, shutdown)
        nursery.start_soon(admin_workers.serve_worker, app, index)  # [admin]: its metrics
        await server.serve(app, listeners, shutdown, reloads=receive)
        nursery.cancel_scope.cancel()


async def _signals(
    shutdown: trio.Event,
    scope: trio.CancelScope,
    reloads: trio.MemorySendChannel[Callable[[], Config]] | None = None,
    source: str | None = None,
) -> None:
    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)
    with trio.open_signal_receiver(*handled) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                # From the supervisor, which checked the file: read it again here (the keys
                # the command line set are restart-only, kept by the reload as running).
                if reloads is not None and source is not None and not shutdown.is_set():
                    log.info("%s: reloading the config", name)
                    try:
                        reloads.send_nowait(functools.partial(load_file, source))
                    except trio.WouldBlock:
                        pass  # one is queued already
                continue
            if signum == signal.SIGQUIT:
                log.warning("%s: stopping now", name)
                scope.cancel()
                return
            if not shutdown.is_set():
                log.info("%s: draining", name)
                shutdown.set()


async def _watch_supervisor(shutdown: trio.Event) -> None:
    """Drain when stdin (the supervisor's pipe) reaches end of file."""
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stream:
        while await stream.receive_some(4096):
            pass  # the supervisor sends nothing after the config
    if not shutdown.is_set():
        log.error("supervisor gone: draining")
        shutdown.set()


class _TaggedRecords:
    """A log record factory that marks every record with the worker's number (the text
    format writes ``[worker N pid P]`` before the message, the JSON format ``worker`` and
    ``pid`` fields), so the interleaved lines of N workers on one stderr say whose they are."""

    def __init__(self, index: int, factory: Callable[..., logging.LogRecord]) -> None:
        self.index = index
        self.factory = factory

    def __call__(self, *args: object, **kwargs: object) -> logging.LogRecord:
        record = self.factory(*args, **kwargs)
        record.worker = self.index
        return record


def tag_log_lines(index: int) -> None:
    logging.setLogRecordFactory(_TaggedRecords(index, logging.getLogRecordFactory()))

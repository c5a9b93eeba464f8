"""``gateway serve | check | reload | sign-cookie``: the command line.

Every command loads the config the same way, so ``check`` and ``serve`` refuse a bad config
with the same message (the key path and the problem; ``check`` lists every problem it finds)
and exit status 2.  An address that cannot be bound is no config error: its own message and
exit status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import functools
import importlib.metadata
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from gateway import app as app_module
from gateway import log as log_module
from gateway import pidfile, server, supervision, supervisor
from gateway.admin import server as admin_server
from gateway.config.load import check_workers, load_file
from gateway.config.schema import Config
from gateway.core import cookies
from gateway.core.address import ListenAddress
from gateway.errors import ConfigError, ConfigErrors, ListenError

log = logging.getLogger("gateway")

DEFAULT_CONFIG = "config.toml"
EXIT_FAILURE = 1
EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ListenError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except ConfigError as exc:
        text = str(exc).replace("\n", "\n  ")
        print(f"gateway: config error: {text}", file=sys.stderr)
        return EXIT_CONFIG


def version() -> str:
    try:
        return importlib.metadata.version("trio-ws-gateway")  # the distribution (pyproject)
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown"


def _level(text: str) -> str:
    try:
        return log_module.parse_level(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway", description="A multi-endpoint WebSocket gateway on trio."
    )
    parser.add_argument("--version", action="version", version=f"gateway {version()}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", default=DEFAULT_CONFIG, help="TOML file (default: %(default)s)")
    serve.add_argument(
        "--listen",
        action="append",
        metavar="HOST:PORT",
        help="listen here instead of server.listen (repeatable; port 0 picks a free port)",
    )
    serve.add_argument(
        "--workers",
        metavar="N",
        help="worker processes accepting on the same addresses, an int >= 1 or 'auto' (one per "
        "CPU); more than one needs [broker] (default: server.workers, which defaults to 1)",
    )
    serve.add_argument(
        "--log-level",
        type=_level,
        metavar="LEVEL",
        help="debug, info, warning, error or critical, any case (default: log.level, info)",
    )
    serve.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="text (for a terminal) or json (one object a line) (default: log.format, text)",
    )
    serve.add_argument(
        "--pid-file", metavar="PATH", help="write the pid here (default: server.pid_file)"
    )
    serve.set_defaults(func=_serve)

    check = sub.add_parser("check", help="validate a config (and load its plugins)")
    check.add_argument("--config", default=DEFAULT_CONFIG)
    check.add_argument("--workers", metavar="N", help="check as serve --workers N would run")
    check.set_defaults(func=_check)

    reload = sub.add_parser(
        "reload", help="make a running gateway reload its config (SIGHUP via its pid file)"
    )
    reload.add_argument("--config", default=DEFAULT_CONFIG, help="to find server.pid_file")
    reload.add_argument(
        "--pid-file",
        metavar="PATH",
        help="the running gateway's pid file (default: server.pid_file of --config)",
    )
    reload.set_defaults(func=_reload)

    sign = sub.add_parser("sign-cookie", help="print a signed session cookie value")
    sign.add_argument("--user", required=True, help="the user id to sign")
    sign.add_argument("--config", default=DEFAULT_CONFIG)
    sign.set_defaults(func=_sign_cookie)
    return parser


def _load(
    path: str,
    listen: Sequence[str] | None = None,
    workers: str | None = None,
    log: dict[str, Any] | None = None,
    pid_file: str | None = None,
) -> Config:
    """The config file with the command line's options applied (``serve`` and a reload of
    it use the same)."""
    config = load_file(path)
    if log:
        config = dataclasses.replace(config, log=dataclasses.replace(config.log, **log))
    if pid_file is not None:
        server_config = dataclasses.replace(config.server, pid_file=os.path.abspath(pid_file))
        config = dataclasses.replace(config, server=server_config)
    if workers is not None:
        try:
            count = supervision.parse_workers(workers)
        except ValueError as exc:
            raise ConfigError("--workers", str(exc)) from None
        config = dataclasses.replace(
            config, server=dataclasses.replace(config.server, workers=count)
        )
        check_workers(config, "--workers")
    if listen:
        try:
            server_config = dataclasses.replace(config.server, listen=tuple(listen))
        except ConfigError as exc:  # named "listen[i]" by the table
            raise ConfigError(f"--{exc.path}", exc.problem) from None
        config = dataclasses.replace(config, server=server_config)
    return config


def _check(args: argparse.Namespace) -> int:
    config = _load(args.config, workers=args.workers)
    app = app_module.build(config)
    _resolve_listen(config.server.listen_addresses)
    mounts = ", ".join(f"{m.name}={m.path}" for m in config.plugins) or "none"
    workers = "" if config.server.workers == 1 else f"; workers: {config.server.workers}"
    print(f"{args.config}: OK ({len(app.mounts)} mounts: {mounts}{workers})")
    if not config.plugins:
        print(
            "gateway check: warning: no [plugins.NAME] tables: no WebSocket endpoint is served",
            file=sys.stderr,
        )
    if config.server.hosts is None and app.policy.hosts is None:
        # Not an error (a public gateway may serve any name), but DNS rebinding is open.
        print(
            f"gateway check: warning: server.hosts is unset and server.listen has a "
            f"non-loopback address ({', '.join(config.server.listen)}): any Host is accepted; "
            f"list the names the gateway is served under (or '*' to say so)",
            file=sys.stderr,
        )
    return 0


def _resolve_listen(addresses: Sequence[ListenAddress]) -> None:
    """Every listen host resolves (a typo in a name fails here, not at the first start)."""
    errors: list[ConfigError] = []
    for i, (host, port) in enumerate(addresses):
        try:
            socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            errors.append(ConfigError(f"server.listen[{i}]", f"cannot resolve {host!r}: {text}"))
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigErrors(errors)


def _sign_cookie(args: argparse.Namespace) -> int:
    config = _load(args.config)
    try:
        ring = cookies.KeyRing.from_env(config.auth.secret_env, os.environ)
    except ValueError as exc:
        raise ConfigError("auth.secret_env", str(exc)) from None
    value = cookies.sign(ring, args.user, time.time())
    print(f"{config.auth.cookie_name}={value}")  # ready for a Cookie header
    return 0


def _reload(args: argparse.Namespace) -> int:
    path = args.pid_file
    if path is None:
        path = _load(args.config).server.pid_file
        if path is None:
            raise ConfigError(
                "server.pid_file", f"not set in {args.config}: set it, or pass --pid-file"
            )
    try:
        pid = pidfile.read(path)
    except (OSError, ValueError) as exc:
        print(f"gateway: cannot read the pid file {path}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        print(f"gateway: no process {pid} (stale pid file {path})", file=sys.stderr)
        return EXIT_FAILURE
    except PermissionError:
        print(f"gateway: not allowed to signal process {pid} (from {path})", file=sys.stderr)
        return EXIT_FAILURE
    print(f"gateway: sent SIGHUP to pid {pid}: reloading (its log says how it went)")
    return 0


def _serve(args: argparse.Namespace) -> int:
    # Until the signal receivers are in: a SIGHUP's default action would end the process.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    log_options = {"format": args.log_format, "level": args.log_level}
    overrides = {k: v for k, v in log_options.items() if v is not None}
    load = functools.partial(
        _load, args.config, args.listen, args.workers, overrides, args.pid_file
    )
    config = load()
    log_module.configure(config.log.level, config.log.format)
    app = app_module.build(config)
    workers = supervision.resolve_workers(config.server.workers, _cpus())
    if workers > 1:
        # The workers get the count, not "auto": each one divides per-process limits by it.
        server_config = dataclasses.replace(config.server, workers=workers)
        return supervisor.run(
            dataclasses.replace(config, server=server_config), workers, config.log, load
        )
    trio.run(_run, app, load)
    return 0


async def open_listeners(addresses: Sequence[ListenAddress]) -> list[trio.SocketListener]:
    """Bind every address; one in use (or not ours) is a :class:`ListenError` naming it,
    with the way out."""
    listeners: list[trio.SocketListener] = []
    try:
        for address in addresses:
            try:
                listeners.extend(await server.open_listeners([address]))
            except OSError as exc:
                raise listen_error(address, exc) from None
    except BaseException:
        for listener in listeners:
            await listener.aclose()
        raise
    return listeners


def listen_error(address: str | ListenAddress, exc: OSError) -> ListenError:
    """The message for an address that cannot be bound (not a config error: the config may
    be right and the port taken)."""
    if exc.errno == errno.EADDRINUSE:
        return ListenError(
            f"cannot listen on {address}: address already in use (another gateway or server "
            f"is there: stop it, or serve elsewhere with --listen HOST:PORT)"
        )
    if exc.errno == errno.EACCES:
        return ListenError(
            f"cannot listen on {address}: permission denied (ports below 1024 need "
            f"privileges; pick another with --listen HOST:PORT)"
        )
    return ListenError(
        f"cannot listen on {address}: {exc.strerror or exc} (pick another with --listen)"
    )


def _cpus() -> int | None:
    """The CPUs this process may run on (a container's or taskset's share, where known)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


async def _run(app: app_module.App, load: Callable[[], Config]) -> None:
    shutdown = trio.Event()
    listeners = await open_listeners(app.config.server.listen_addresses)
    admin_listeners = await admin_server.open_listeners(app.config)  # [admin], if any
    pid_path = app.config.server.pid_file
    if pid_path is not None:
        pidfile.write(pid_path)
    send, receive = trio.open_memory_channel[Callable[[], Config]](1)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_signals, shutdown, nursery.cancel_scope, send, load)
            serving = functools.partial(
                server.serve,
                app,
                listeners,
                shutdown,
                admin_listeners=admin_listeners,
                reloads=receive,
            )
            urls = await nursery.start(_serve_then_stop, serving, nursery.cancel_scope)
            server.announce(app.config, urls)
    finally:
        if pid_path is not None:
            pidfile.remove(pid_path)


async def _serve_then_stop(
    serving: Callable[..., Awaitable[None]],
    scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[list[str]],
) -> None:
    """Serve; once served (drained), stop the signal receiver too."""
    await serving(task_status=task_status)
    scope.cancel()


async def _signals(
    shutdown: trio.Event,
    scope: trio.CancelScope,
    reloads: trio.MemorySendChannel[Callable[[], Config]] | None = None,
    load: Callable[[], Config] | None = None,
) -> None:
    """First SIGTERM/SIGINT: graceful shutdown.  Second: stop now.  SIGHUP: reload."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                if reloads is not None and load is not None and not shutdown.is_set():
                    log.info("SIGHUP: reloading the config")
                    try:
                        reloads.send_nowait(load)
                    except trio.WouldBlock:
                        pass  # one is queued already: it reads the file as it is then
                continue
            if shutdown.is_set():
                log.warning("second %s: stopping now", signal.Signals(signum).name)
                scope.cancel()
                return
            log.info("%s: draining", signal.Signals(signum).name)
            shutdown.set()

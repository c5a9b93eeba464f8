"""``gateway serve | check | sign-cookie``: the command line.

Every command loads the config the same way, so ``check`` and ``serve`` refuse a bad config
with the same message (the key path and the problem) and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence

import trio

from gateway import app as app_module
from gateway import log as log_module
from gateway import server, supervision, supervisor
from gateway.config.load import check_workers, load_file, parse_listen
from gateway.config.schema import Config
from gateway.core import cookies
from gateway.errors import ConfigError

log = logging.getLogger("gateway")

DEFAULT_CONFIG = "config.toml"
EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"gateway: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway", description="A multi-endpoint WebSocket gateway on trio."
    )
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
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    serve.set_defaults(func=_serve)

    check = sub.add_parser("check", help="validate a config (and load its plugins)")
    check.add_argument("--config", default=DEFAULT_CONFIG)
    check.add_argument("--workers", metavar="N", help="check as serve --workers N would run")
    check.set_defaults(func=_check)

    sign = sub.add_parser("sign-cookie", help="print a signed session cookie value")
    sign.add_argument("--user", required=True, help="the user id to sign")
    sign.add_argument("--config", default=DEFAULT_CONFIG)
    sign.set_defaults(func=_sign_cookie)
    return parser


def _load(path: str, listen: Sequence[str] | None = None, workers: str | None = None) -> Config:
    config = load_file(path)
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
        for i, address in enumerate(listen):
            try:
                parse_listen(address)
            except ValueError as exc:
                raise ConfigError(f"--listen[{i}]", str(exc)) from None
        config = dataclasses.replace(
            config, server=dataclasses.replace(config.server, listen=tuple(listen))
        )
    return config


def _check(args: argparse.Namespace) -> int:
    config = _load(args.config, workers=args.workers)
    app = app_module.build(config)
    mounts = ", ".join(f"{m.name}={m.path}" for m in config.plugins) or "none"
    workers = "" if config.server.workers == 1 else f"; workers: {config.server.workers}"
    print(f"{args.config}: OK ({len(app.mounts)} mounts: {mounts}{workers})")
    if config.server.hosts is None and app.policy.hosts is None:
        # Not an error (a public gateway may serve any name), but DNS rebinding is open.
        print(
            f"gateway check: warning: server.hosts is unset and server.listen has a "
            f"non-loopback address ({', '.join(config.server.listen)}): any Host is accepted; "
            f"list the names the gateway is served under (or '*' to say so)",
            file=sys.stderr,
        )
    return 0


def _sign_cookie(args: argparse.Namespace) -> int:
    config = _load(args.config)
    try:
        ring = cookies.KeyRing.from_env(config.auth.secret_env, os.environ)
        value = cookies.sign(ring, args.user, time.time())
    except ValueError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    print(value)
    return 0


def _serve(args: argparse.Namespace) -> int:
    log_module.configure(args.log_level)
    config = _load(args.config, args.listen, args.workers)
    app = app_module.build(config)
    workers = supervision.resolve_workers(config.server.workers, _cpus())
    if workers > 1:
        # The workers get the count, not "auto": each one divides per-process limits by it.
        server_config = dataclasses.replace(config.server, workers=workers)
        return supervisor.run(
            dataclasses.replace(config, server=server_config), workers, args.log_level
        )
    trio.run(_run, app)
    return 0


def _cpus() -> int | None:
    """The CPUs this process may run on (a container's or taskset's share, where known)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


async def _run(app: app_module.App) -> None:
    shutdown = trio.Event()
    try:
        listeners = await server.open_listeners(app.config.server.listen)
    except OSError as exc:
        raise ConfigError("server.listen", f"cannot listen: {exc.strerror or exc}") from None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_signals, shutdown, nursery.cancel_scope)
        await server.serve(app, listeners, shutdown)
        nursery.cancel_scope.cancel()


async def _signals(shutdown: trio.Event, scope: trio.CancelScope) -> None:
    """First SIGTERM/SIGINT: graceful shutdown.  Second: stop now."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if shutdown.is_set():
                log.warning("second %s: stopping now", signal.Signals(signum).name)
                scope.cancel()
                return
            log.info("%s: draining", signal.Signals(signum).name)
            shutdown.set()

"""``[admin]``: Prometheus metrics and the live status page, on a listener of their own.

:mod:`~gateway.admin.collector` turns the gateway's plain counters into metric families at
scrape time, :mod:`~gateway.admin.status` folds families into what the page shows,
:mod:`~gateway.admin.server` serves the listener, and :mod:`~gateway.admin.workers` lets the
supervisor of ``--workers N`` scrape every worker.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from gateway.admin.collector import registry
from gateway.admin.server import AdminServer, LocalSource, allowed_hosts, urls
from gateway.config.schema import Config

if TYPE_CHECKING:
    from gateway.app import App

log = logging.getLogger("gateway.admin")


async def serve_local(
    app: App,
    listeners: Sequence[trio.SocketListener],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve this process's metrics and status page on ``listeners`` until cancelled."""
    server = AdminServer(LocalSource(registry(app)), hosts=hosts_allowed(listeners, app.config))
    await serve_logged(server, listeners, task_status=task_status)


def hosts_allowed(
    listeners: Sequence[trio.SocketListener], config: Config
) -> tuple[str, ...] | None:
    """The admin's ``Host`` allowlist for where it is bound (see :func:`allowed_hosts`)."""
    found: tuple[str, ...] | None = ()
    for url in urls(listeners):
        hosts = allowed_hosts(url.removeprefix("http://"), config.server.hosts)
        merged = None if hosts is None or found is None else (*found, *hosts)
        found = None if merged is None else tuple(dict.fromkeys(merged))
    return found


async def serve_logged(
    server: AdminServer,
    listeners: Sequence[trio.SocketListener],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with trio.open_nursery() as nursery:
        bound: list[str] = await nursery.start(server.serve, listeners)
        for url in bound:
            log.info("admin on %s (metrics at /metrics, status page at /)", url)
        task_status.started()

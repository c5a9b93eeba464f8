"""``[admin]`` under ``--workers N``: the supervisor serves the admin listener and scrapes
every worker; each worker answers on a private Unix socket.

Why not prometheus_client's multiprocess mode: it only aggregates prometheus_client's own
metric objects (each write goes to an mmap'd file), and the gateway's metrics are a custom
collector reading plain counters at scrape time, which is what keeps the WebSocket hot path
free of metric calls.  So the supervisor scrapes the workers instead (as a Prometheus
federation would): a worker writes its exposition text on every connection to its socket,
the supervisor parses each with prometheus_client's parser and adds a ``worker`` label
(``"1"``..``"N"``) to every sample.  Per-worker series, rather than sums, keep counter resets
correct: a restarted worker's counters start at zero, and ``rate()`` sees the reset on that
worker's series only (a sum would drop, which ``rate()`` takes for a reset of the total).
``sum without (worker)`` gives the gateway's totals.

The sockets live in a directory only the gateway's user can enter (``mkdtemp``, mode 0700),
named to the workers in :data:`SCRAPE_DIR_ENV`; each worker binds its own socket as it starts
(a restart replaces it), and the supervisor removes the directory when it stops.  A worker
that does not answer within :data:`SCRAPE_TIMEOUT` is left out of that scrape and reported
as ``gateway_worker_up{worker} 0``.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import trio
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from gateway.admin import hosts_allowed, serve_logged
from gateway.admin.collector import registry
from gateway.admin.server import AdminServer
from gateway.config.schema import Config

if TYPE_CHECKING:
    from gateway.app import App

log = logging.getLogger("gateway.admin")

SCRAPE_DIR_ENV = "GATEWAY_SCRAPE_DIR"
SCRAPE_TIMEOUT = 2.0  # seconds a worker has to answer a scrape
MAX_SCRAPE = 64 * 1024 * 1024


def socket_path(directory: str, index: int) -> Path:
    return Path(directory) / f"worker-{index}.sock"


class WorkerScrapes:
    """The supervisor's :class:`~gateway.admin.server.Source`: every worker's metrics."""

    def __init__(self, workers: int, directory: str) -> None:
        self.workers = workers
        self.directory = directory

    async def families(self) -> list[Metric]:
        texts: dict[int, str | None] = {}
        async with trio.open_nursery() as nursery:
            for index in range(1, self.workers + 1):
                nursery.start_soon(self._scrape, index, texts)
        return merge(texts)

    async def _scrape(self, index: int, texts: dict[int, str | None]) -> None:
        texts[index] = None
        with trio.move_on_after(SCRAPE_TIMEOUT):
            try:
                stream = await trio.open_unix_socket(str(socket_path(self.directory, index)))
                async with stream:
                    data = bytearray()
                    while chunk := await stream.receive_some(65536):
                        data += chunk
                        if len(data) > MAX_SCRAPE:
                            return
                texts[index] = data.decode("utf-8")
            except (OSError, trio.BrokenResourceError, UnicodeDecodeError):
                pass  # not running (being restarted), or gone: up 0


def merge(texts: dict[int, str | None]) -> list[Metric]:
    """Every worker's families as one list, each sample labelled with its worker, plus
    ``gateway_workers`` and ``gateway_worker_up{worker}``."""
    merged: dict[str, Metric] = {}
    up = GaugeMetricFamily(
        "gateway_worker_up", "1 if the worker answered this scrape", labels=["worker"]
    )
    for index, text in sorted(texts.items()):
        up.add_metric([str(index)], 0 if text is None else 1)
        if text is None:
            continue
        for family in text_string_to_metric_families(text):
            target = merged.get(family.name)
            if target is None:
                target = merged[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            for sample in family.samples:
                labels = {**sample.labels, "worker": str(index)}
                target.samples.append(sample._replace(labels=labels))
    workers = GaugeMetricFamily("gateway_workers", "Worker processes configured", len(texts))
    return [workers, up, *merged.values()]


async def supervise(
    config: Config,
    workers: int,
    listeners: Sequence[trio.SocketListener],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The supervisor's admin listener (bound by :func:`~gateway.admin.server.open_listeners`),
    until cancelled.  Sets :data:`SCRAPE_DIR_ENV` for the workers started after it."""
    directory = tempfile.mkdtemp(prefix="gateway-scrape-")  # 0700: only this user
    os.environ[SCRAPE_DIR_ENV] = directory
    try:
        server = AdminServer(
            WorkerScrapes(workers, directory), hosts=hosts_allowed(listeners, config)
        )
        await serve_logged(server, listeners, task_status=task_status)
    finally:
        os.environ.pop(SCRAPE_DIR_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)


async def serve_worker(app: App, index: int) -> None:
    """A worker's side: write this process's exposition text on every connection to its
    socket, until cancelled.  Nothing to do without ``[admin]`` or outside a supervisor."""
    directory = os.environ.get(SCRAPE_DIR_ENV)
    if app.config.admin is None or not directory:
        return
    path = socket_path(directory, index)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        path.unlink(missing_ok=True)  # left by this worker's previous run
        await sock.bind(str(path))
        sock.listen(16)
    except OSError as exc:
        sock.close()
        log.error("admin: worker %d cannot serve its metrics at %s: %s", index, path, exc)  # noqa: TRY400
        return
    reg = registry(app)
    async with trio.SocketListener(sock) as listener:
        while True:
            stream = await listener.accept()
            async with stream:
                with trio.move_on_after(SCRAPE_TIMEOUT):
                    try:
                        await stream.send_all(generate_latest(reg))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass  # the supervisor gave up on this scrape

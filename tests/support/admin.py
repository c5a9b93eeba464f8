"""Helpers for the ``[admin]`` tests: a gateway with its admin listener, scraping and reading
metrics with prometheus-client's own parser (requests go through
:func:`tests.support.http_client.fetch`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import App, build
from gateway.config.load import parse
from gateway.core.address import ListenAddress
from gateway.server import open_listeners, serve
from tests.support.gateway_config import REPO, config_data
from tests.support.http_client import fetch
from tests.support.in_process import Running
from tests.support.timeouts import STOP_TIMEOUT

ADMIN = {"admin.listen": "127.0.0.1:0"}


async def scrape(admin_url: str) -> list[Metric]:
    """``GET /metrics``, parsed by prometheus-client's text parser."""
    reply = await fetch(admin_url, "/metrics")
    assert reply.status == 200, reply
    assert (reply.header("content-type") or "").startswith("text/plain; version=0.0.4")
    return list(text_string_to_metric_families(reply.body.decode("utf-8")))


def value(families: Iterable[Metric], sample: str, **labels: str) -> float:
    """The sum of the samples named ``sample`` whose labels include ``labels`` (0 if none)."""
    total = 0.0
    for family in families:
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def samples(families: Iterable[Metric], sample: str) -> list[dict[str, str]]:
    return [dict(s.labels) for f in families for s in f.samples if s.name == sample]


@dataclass
class WithAdmin:
    running: Running
    admin_url: str

    @property
    def app(self) -> App:
        return self.running.app

    async def metrics(self) -> list[Metric]:
        return await scrape(self.admin_url)


@asynccontextmanager
async def admin_gateway(
    nursery: trio.Nursery, changes: Mapping[str, object] | None = None
) -> AsyncIterator[WithAdmin]:
    """An in-process gateway (``config_data(changes)`` with ``[admin]``) and its admin
    listener, both on ports the OS picked."""
    app = build(parse(config_data({**ADMIN, **(changes or {})}), base_dir=REPO), environ={})
    listeners = await open_listeners([ListenAddress("127.0.0.1", 0)])
    admin_listeners = await open_listeners([ListenAddress("127.0.0.1", 0)])
    admin_url = f"http://127.0.0.1:{admin_listeners[0].socket.getsockname()[1]}"
    shutdown = trio.Event()
    stopped = trio.Event()

    async def run(*, task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await serve(
                app, listeners, shutdown, admin_listeners=admin_listeners, task_status=task_status
            )
        finally:
            stopped.set()

    urls: list[str] = await nursery.start(run)
    try:
        yield WithAdmin(Running(urls[0], app), admin_url)
    finally:
        shutdown.set()
        with trio.fail_after(STOP_TIMEOUT):
            await stopped.wait()

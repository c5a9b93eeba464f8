"""``[admin]`` under ``serve --workers 2``: the supervisor's ``/metrics`` carries every
worker's series, each labelled with its worker, and their counts are the sessions each
worker really serves (real processes, a real redis-server behind ``[broker]``)."""

from __future__ import annotations

import http.client
import re
from contextlib import AsyncExitStack
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.admin import value
from tests.support.gateway_process import GatewayProcess
from tests.support.redis_server import RedisServer, redis_server  # noqa: F401
from tests.support.timeouts import TIMEOUT
from tests.support.workers import (
    run,
    sessions_on,
    started,
    supervised,
    until_started,
    workers_config,
)

ADMIN_LINE = re.compile(r"admin on (http://\S+)")


def admin_url(process: GatewayProcess) -> str:
    found = [m[1] for line in process.lines if (m := ADMIN_LINE.search(line))]
    assert len(found) == 1, process.log()  # the supervisor's; workers serve none of their own
    return found[0]


def scrape(url: str) -> str:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        assert response.status == 200
        return response.read().decode("utf-8")
    finally:
        conn.close()


def test_a_scrape_shows_each_worker(tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    config = workers_config(tmp_path, redis_server, {"admin.listen": "127.0.0.1:0"})
    with supervised(config) as process:
        run(lambda: until_started(process, 2))
        worker_of = {pid: index for index, pid in started(process)}
        url = admin_url(process)

        async def scenario() -> None:
            async with AsyncExitStack() as stack:
                by_pid = await sessions_on(process, stack, set(worker_of))
                families = list(text_string_to_metric_families(scrape(url)))
                assert value(families, "gateway_workers") == 2
                for pid, sessions in by_pid.items():
                    worker = str(worker_of[pid])
                    assert value(families, "gateway_worker_up", worker=worker) == 1
                    open_now = value(
                        families, "gateway_websocket_connections", mount="pid", worker=worker
                    )
                    assert open_now == len(sessions)
                    handshakes = value(
                        families, "gateway_handshakes_total", mount="pid", worker=worker
                    )
                    assert handshakes == len(sessions)
                    # each worker's own process metrics, labelled too
                    assert value(families, "process_resident_memory_bytes", worker=worker) > 0
                total = value(families, "gateway_websocket_connections", mount="pid")
                assert total == sum(len(s) for s in by_pid.values())

        run(scenario)

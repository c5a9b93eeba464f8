"""A supervised multi-worker gateway for tests (tests/integration/test_workers.py,
test_admin_workers.py): its config, the process, which worker serves a session."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import TypeVar

from websockets.asyncio.client import ClientConnection, connect

from tests.support.gateway_config import config_data, write_config
from tests.support.gateway_process import GatewayProcess
from tests.support.redis_server import RedisServer
from tests.support.timeouts import TIMEOUT

T = TypeVar("T")

PLUGINS = "tests.integration.worker_plugins"
SCENARIO_TIMEOUT = 30.0  # seconds for one test's whole client scenario
MAX_TRIES = 60  # connections opened, at most, to find a session on a given worker
GRACE = 2.0  # config_data's server.shutdown_timeout
STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")


def workers_config(
    tmp_path: Path, redis: RedisServer, changes: Mapping[str, object] | None = None
) -> Path:
    data = config_data(
        {
            "broker.url": redis.url,
            "plugins.pid": {"path": "/pid", "use": f"{PLUGINS}:whoami"},
            **(changes or {}),
        }
    )
    return write_config(tmp_path / "config.toml", data)


@contextmanager
def supervised(config: Path, workers: int = 2) -> Iterator[GatewayProcess]:
    with GatewayProcess.serve(config, "--workers", str(workers)) as process:
        yield process


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), SCENARIO_TIMEOUT)

    return asyncio.run(bounded())


async def until(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)


def started(process: GatewayProcess) -> list[tuple[int, int]]:
    """(worker number, pid) for every "worker N started (pid P)" line so far."""
    return [(int(m[1]), int(m[2])) for line in process.lines if (m := STARTED.search(line))]


async def open_session(
    process: GatewayProcess, stack: AsyncExitStack
) -> tuple[int, ClientConnection]:
    """A ``/pid`` session (closed with ``stack``) and the pid of the worker serving it."""
    ws = await stack.enter_async_context(
        connect(process.ws_url("/pid"), proxy=None, compression=None, open_timeout=TIMEOUT)
    )
    pid = await ws.recv()
    assert isinstance(pid, str)
    return int(pid), ws


async def sessions_on(
    process: GatewayProcess, stack: AsyncExitStack, pids: set[int]
) -> dict[int, list[ClientConnection]]:
    """Open ``/pid`` sessions until every worker in ``pids`` serves at least one (the kernel
    hands each connection to whichever worker accepts first); every session, by pid."""
    by_pid: dict[int, list[ClientConnection]] = {}
    for _ in range(MAX_TRIES):
        pid, ws = await open_session(process, stack)
        by_pid.setdefault(pid, []).append(ws)
        if pids <= by_pid.keys():
            return by_pid
    raise AssertionError(f"{MAX_TRIES} sessions, none on {pids - by_pid.keys()}: {by_pid.keys()}")


async def until_started(process: GatewayProcess, count: int) -> None:
    await until(lambda: len(started(process)) >= count, f"{count} workers started")

"""Fixtures for the integration tests: real sockets on 127.0.0.1, real clients.

Two ways to run a gateway:

* in process (the ``start_gateway`` and ``gateway`` fixtures): the App is built from a config
  dict (``config.toml`` plus test tweaks, see :func:`tests.support.gateway_config.config_data`),
  served by :func:`gateway.server.serve` on a port the OS picks, inside the test's own trio run;
* as a subprocess (the session's ``gateway_process`` fixture, on
  :class:`tests.support.gateway_process.GatewayProcess`): ``python -m gateway serve --config
  FILE --listen 127.0.0.1:0``, for asyncio clients (``websockets``) that cannot run inside trio.

And the ``upstream`` fixture: the well-behaved legacy site (``tests/support/upstream.py``).

This module holds fixtures only; the helpers the tests import live in ``tests/support/``
(``in_process``, ``raw_http``, ``ws_frames``, ``gateway_config``, ``gateway_process``,
``upstream``...), so no test module imports a conftest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager

import pytest
import trio

from tests.support.gateway_config import config_data
from tests.support.gateway_process import GatewayProcess
from tests.support.in_process import GatewayFactory, Running, serve_with_shutdown
from tests.support.timeouts import STOP_TIMEOUT
from tests.support.upstream import UpstreamProcess, running_upstream


@pytest.fixture
def start_gateway(nursery: trio.Nursery) -> GatewayFactory:
    """``async with start_gateway({"server.unknown_path": "404"}) as gw:`` serves a variant.

    The server runs in pytest-trio's ``nursery`` fixture (not in a nursery of the test body,
    so a failing assertion is reported as itself, not inside an ExceptionGroup).  Leaving the
    block sets the shutdown event and waits for the drain.
    """

    @asynccontextmanager
    async def start(
        changes: Mapping[str, object] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> AsyncIterator[Running]:
        served = await serve_with_shutdown(nursery, changes, environ=environ)
        try:
            yield served.running
        finally:
            served.shutdown.set()
            with trio.fail_after(STOP_TIMEOUT):
                await served.stopped.wait()

    return start


@pytest.fixture
async def gateway(start_gateway: GatewayFactory) -> AsyncIterator[Running]:
    """The in-process gateway with :func:`config_data`'s config."""
    async with start_gateway() as running:
        yield running


@pytest.fixture(scope="session")
def gateway_process() -> Iterator[GatewayProcess]:
    """One gateway subprocess for the whole session, on :func:`config_data`'s config (written
    to a temporary folder; the test plugins load from the repository, its working directory)."""
    with GatewayProcess.serve(config_data()) as process:
        yield process


@pytest.fixture
def upstream() -> Iterator[UpstreamProcess]:
    """The standard library's legacy site (``tests/support/upstream_server.py``) in a
    subprocess."""
    with running_upstream() as up:
        yield up

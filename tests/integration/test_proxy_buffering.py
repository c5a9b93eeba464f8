"""Request bodies are read whole before the upstream is asked (nginx's
``proxy_request_buffering on``): slow uploads hold gateway connections, never the legacy
site's; a whole-body deadline answers 408; large bodies spool to an unlinked temporary file
that is gone when the request is; a route can turn buffering off for streaming uploads."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from tests.support.in_process import GatewayFactory, Running, wait_until
from tests.support.proxy_http import HTTPReader
from tests.support.raw_http import Response, request
from tests.support.raw_upstream import RawUpstream, raw_upstream
from tests.support.timeouts import TIMEOUT
from tests.support.upstream import echoed, header_values, running_upstream

SLOW_CLIENTS = 6
BODY = b"0123456789"


@asynccontextmanager
async def connection(gw: Running) -> AsyncIterator[HTTPReader]:
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(gw.host, gw.port)
    async with stream:
        yield HTTPReader(stream)


async def trickle(gw: Running, target: str, answers: list[Response], pause: float) -> None:
    """Send a 10-byte body one byte every ``pause`` seconds, then read the answer."""
    async with connection(gw) as c:
        await c.stream.send_all(request("POST", target, [("Content-Length", str(len(BODY)))]))
        for i in range(len(BODY)):
            await trio.sleep(pause)
            await c.stream.send_all(BODY[i : i + 1])
        with trio.fail_after(TIMEOUT):
            answers.append(await c.response())


async def upstream_connections_while_trickling(
    gw: Running, up: RawUpstream, target: str
) -> tuple[int, list[Response]]:
    answers: list[Response] = []
    async with trio.open_nursery() as nursery:
        for i in range(SLOW_CLIENTS):
            nursery.start_soon(trickle, gw, f"{target}/{i}", answers, 0.05)
        await trio.sleep(0.3)  # every client is mid-body now
        during = up.connections
    return during, answers


async def test_slow_bodies_hold_no_upstream_connection(
    start_gateway: GatewayFactory, nursery: trio.Nursery
) -> None:
    async with raw_upstream(nursery) as up, start_gateway({"proxy.upstream": up.url}) as gw:
        during, answers = await upstream_connections_while_trickling(gw, up, "/own")
    assert during == 0  # streamed, each slow client would hold one (a legacy worker) by now
    assert sorted(a.body for a in answers) == [f"own:{i}".encode() for i in range(SLOW_CLIENTS)]
    assert [m for m, _ in up.requests] == ["POST"] * SLOW_CLIENTS


async def test_a_route_with_buffering_off_streams(
    start_gateway: GatewayFactory, nursery: trio.Nursery
) -> None:
    """The documented trade-off: a streaming route feeds the upstream as the client sends."""
    async with raw_upstream(nursery) as up:
        route = {"prefix": "/own", "upstream": up.url, "request_buffering": False}
        changes = {"proxy.upstream": up.url, "proxy.routes": [route]}
        async with start_gateway(changes) as gw:
            during, answers = await upstream_connections_while_trickling(gw, up, "/own")
    assert during == SLOW_CLIENTS
    assert len(answers) == SLOW_CLIENTS


async def test_a_body_slower_than_body_timeout_is_408_and_never_reaches_the_upstream(
    start_gateway: GatewayFactory, nursery: trio.Nursery
) -> None:
    """Each byte comes well within ``read_timeout``; the whole body does not come within
    ``body_timeout``."""
    async with raw_upstream(nursery) as up:
        changes = {"proxy.upstream": up.url, "proxy.body_timeout": 0.4}
        async with start_gateway(changes) as gw, connection(gw) as c:
            await c.stream.send_all(request("POST", "/own/x", [("Content-Length", "100")]))
            started = trio.current_time()
            with trio.fail_after(TIMEOUT):
                async with trio.open_nursery() as senders:

                    async def drip() -> None:
                        for _ in range(100):
                            await trio.sleep(0.05)
                            try:
                                await c.stream.send_all(b"x")
                            except trio.BrokenResourceError:
                                return

                    senders.start_soon(drip)
                    response = await c.response()
                    senders.cancel_scope.cancel()
            took = trio.current_time() - started
            assert response.status == 408
            assert response.header("connection") == "close"
    assert 0.35 < took < 2.0
    assert up.connections == 0


def spool_fds(folder: Path) -> list[str]:
    """This process's open files inside ``folder`` (unlinked ones show as ``... (deleted)``)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


async def test_a_large_body_spools_to_an_unlinked_file_that_is_closed_after(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    body = os.urandom(300_000)
    with running_upstream() as up:
        changes = {
            "proxy.upstream": up.url,
            "proxy.body_buffer_size": 16 * 1024,
            "proxy.body_temp_dir": str(tmp_path),
        }
        async with start_gateway(changes) as gw, connection(gw) as c:
            head = request("PUT", "/upload", [("Content-Length", str(len(body)))])
            await c.stream.send_all(head + body[:200_000])
            await wait_until(lambda: bool(spool_fds(tmp_path)), "a spooled body")
            (spooled,) = spool_fds(tmp_path)
            assert spooled.endswith("(deleted)")  # nothing is left on disk, even after a crash
            assert (await up.stats())["requests"] == []  # the upstream waits for all of it
            await c.stream.send_all(body[200_000:])
            with trio.fail_after(TIMEOUT):
                echo = echoed(await c.response())
            await wait_until(lambda: not spool_fds(tmp_path), "the spool closed")
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert header_values(echo, "content-length") == [str(len(body))]
    assert os.listdir(tmp_path) == []


async def test_a_client_leaving_mid_body_leaves_no_spool_and_no_upstream_request(
    start_gateway: GatewayFactory, tmp_path: Path, nursery: trio.Nursery
) -> None:
    async with raw_upstream(nursery) as up:
        changes = {
            "proxy.upstream": up.url,
            "proxy.body_buffer_size": 1024,
            "proxy.body_temp_dir": str(tmp_path),
        }
        async with start_gateway(changes) as gw:
            async with connection(gw) as c:
                head = request("POST", "/own/gone", [("Content-Length", "100000")])
                await c.stream.send_all(head + b"y" * 50_000)
                await wait_until(lambda: bool(spool_fds(tmp_path)), "a spooled body")
            await wait_until(lambda: not spool_fds(tmp_path), "the spool closed")
    assert up.connections == 0

"""Response-queue poisoning: an upstream that sends more than its response owed must never
get its surplus delivered to the next user of a pooled connection.

Each test plays one upstream misbehaviour (:mod:`tests.support.raw_upstream`) through the
real gateway, then sends "victim" requests from *other* client TCP connections: each must get
exactly its own answer, never the injected one.
"""

from __future__ import annotations

import logging

import pytest
import trio

from gateway.proxy.pool import UpstreamPool
from tests.support.in_process import GatewayFactory, Running
from tests.support.proxy_http import HTTPReader
from tests.support.raw_http import Response, request
from tests.support.raw_upstream import raw_upstream
from tests.support.timeouts import TIMEOUT

SURPLUS_WARNING = "sent data beyond its response"


async def fetch(gw: Running, raw: bytes, *, head_request: bool = False) -> Response:
    """One request on a fresh client connection (so each user is a different TCP peer)."""
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(gw.host, gw.port)
        async with stream:
            await stream.send_all(raw)
            return await HTTPReader(stream).response(head_request=head_request)


async def victims(gw: Running, count: int = 3) -> None:
    """``count`` users, one after the other, each on its own connection: each gets its own."""
    for i in range(count):
        answer = await fetch(gw, request("GET", f"/own/v{i}"))
        assert answer.header("x-poison") is None, f"victim {i} got the injected response"
        assert (answer.status, answer.body) == (200, f"own:v{i}".encode())


def pool_of(gw: Running) -> UpstreamPool:
    assert gw.app.proxy is not None
    (pool,) = gw.app.proxy.pools.pools.values()
    return pool


SHAPES = {
    "Content-Length shorter than the body": ("GET", "/cl-short", b""),
    "a body on a 204": ("GET", "/204-body", b""),
    "a body on a 304": ("GET", "/304-body", b""),
    "a body on a HEAD answer": ("HEAD", "/head-body", b""),
    "CL.0: the request body answered as a second request": (
        "POST",
        "/cl0",
        b"GET /reflect?<script>alert(1)</script> HTTP/1.1\r\nHost: site\r\n\r\n",
    ),
}


@pytest.mark.parametrize(("method", "target", "body"), SHAPES.values(), ids=SHAPES.keys())
async def test_surplus_in_the_same_segment_never_reaches_the_next_user(
    start_gateway: GatewayFactory,
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
    method: str,
    target: str,
    body: bytes,
) -> None:
    caplog.set_level(logging.WARNING, "gateway.proxy")
    async with raw_upstream(nursery) as up, start_gateway({"proxy.upstream": up.url}) as gw:
        headers = [("Content-Length", str(len(body)))] if body else []
        raw = request(method, target, headers, body=body)
        attacker = await fetch(gw, raw, head_request=method == "HEAD")
        assert attacker.status in (200, 204, 304)
        assert attacker.header("x-poison") is None
        await victims(gw)
    assert pool_of(gw).surplus == 1
    assert up.connections == 2  # the poisoned connection was closed, the victims shared one
    warnings = [r for r in caplog.records if SURPLUS_WARNING in r.getMessage()]
    assert len(warnings) == 1
    assert str(up.port) in warnings[0].getMessage()


async def test_surplus_arriving_while_the_connection_is_idle_condemns_it(
    start_gateway: GatewayFactory, nursery: trio.Nursery
) -> None:
    """The CL.0 site answers the smuggled request after the first answer went back: the bytes
    land while the connection sits in the pool, and are seen when it is next taken."""
    smuggled = b"GET /reflect?evil HTTP/1.1\r\nHost: site\r\n\r\n"
    async with raw_upstream(nursery) as up, start_gateway({"proxy.upstream": up.url}) as gw:
        up.late = 0.1
        headers = [("Content-Length", str(len(smuggled)))]
        first = await fetch(gw, request("POST", "/cl0-late", headers, body=smuggled))
        assert first.body == b"ok"
        await trio.sleep(0.4)  # the late answer is in the pooled connection's socket now
        await victims(gw)
    assert pool_of(gw).surplus == 1
    assert up.connections == 2


async def test_after_a_surplus_a_connection_that_carried_a_body_is_not_reused(
    start_gateway: GatewayFactory, nursery: trio.Nursery
) -> None:
    """Rule 3: once an upstream has desynchronised, a late CL.0 answer cannot win the race
    against the next user, because a connection that carried a request body is closed."""
    smuggled = b"GET /reflect?evil HTTP/1.1\r\nHost: site\r\n\r\n"
    async with raw_upstream(nursery) as up, start_gateway({"proxy.upstream": up.url}) as gw:
        up.late = 0.5
        await fetch(gw, request("GET", "/cl-short"))  # the first surplus: the pool turns strict
        headers = [("Content-Length", str(len(smuggled)))]
        await fetch(gw, request("POST", "/cl0-late", headers, body=smuggled))
        await victims(gw)  # at once, before the late answer arrives
        await trio.sleep(0.6)
        await victims(gw)
    pool = pool_of(gw)
    assert pool.strict is True
    # /cl-short's connection condemned; /cl0-late's not pooled; the victims' reused.
    assert up.connections == 3


async def test_a_well_behaved_upstream_keeps_its_connections(
    start_gateway: GatewayFactory, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """The checks cost no reuse when nothing is wrong: one connection serves everyone,
    bodies included, and nothing is logged."""
    caplog.set_level(logging.WARNING, "gateway.proxy")
    async with raw_upstream(nursery) as up, start_gateway({"proxy.upstream": up.url}) as gw:
        for i in range(5):
            answer = await fetch(
                gw, request("POST", f"/own/p{i}", [("Content-Length", "3")], body=b"abc")
            )
            assert answer.body == f"own:p{i}".encode()
        await victims(gw)
    assert up.connections == 1
    pool = pool_of(gw)
    assert (pool.surplus, pool.reused) == (0, 7)
    assert not [r for r in caplog.records if SURPLUS_WARNING in r.getMessage()]


async def test_repeated_surplus_is_logged_once(
    start_gateway: GatewayFactory, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "gateway.proxy")
    async with raw_upstream(nursery) as up, start_gateway({"proxy.upstream": up.url}) as gw:
        for _ in range(20):
            await fetch(gw, request("GET", "/cl-short"))
        await victims(gw, 1)
    assert pool_of(gw).surplus == 20
    assert len([r for r in caplog.records if SURPLUS_WARNING in r.getMessage()]) == 1

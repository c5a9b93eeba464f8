"""Graceful shutdown with a drain delay: readiness fails first while the port still accepts."""

from __future__ import annotations

import trio

from tests.support.in_process import serve_with_shutdown
from tests.support.raw_http import new_key, raw_connection, request, upgrade_headers
from tests.support.timeouts import TIMEOUT


async def test_drain_delay_fails_readiness_then_stops_accepting(nursery: trio.Nursery) -> None:
    served = await serve_with_shutdown(nursery, {"server.drain_delay": 0.5})
    gw, shutdown, stopped = served.running, served.shutdown, served.stopped
    with trio.fail_after(TIMEOUT):
        async with raw_connection(gw) as keepalive:
            await keepalive.send(request("GET", "/readyz"))
            assert (await keepalive.read_response()).status == 200
            shutdown.set()
            await trio.sleep(0.1)
            # An open keep-alive connection: answered 503, then closed.
            await keepalive.send(request("GET", "/readyz"))
            response = await keepalive.read_response()
            assert response.status == 503
            assert response.header("connection") == "close"
            assert await keepalive.read_until_eof() == b""
        # New connections are still accepted during the delay...
        async with raw_connection(gw) as client:
            await client.send(request("GET", "/readyz"))
            assert (await client.read_response()).status == 503
        async with raw_connection(gw) as client:
            await client.send(request("GET", "/healthz"))
            assert (await client.read_response()).status == 200  # alive, just not ready
        async with raw_connection(gw) as client:
            await client.send(request("GET", "/echo", upgrade_headers(new_key())))
            response = await client.read_response()
            assert response.status == 503
            assert response.header("retry-after") is not None
        # ...and after it the port is closed.
        await stopped.wait()
    try:
        with trio.fail_after(TIMEOUT):
            stream = await trio.open_tcp_stream(gw.host, gw.port)
    except OSError:
        pass
    else:
        await stream.aclose()
        raise AssertionError("the gateway still accepts after draining")

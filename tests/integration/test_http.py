"""Plain HTTP/1.1 through the front door, over raw sockets to the in-process gateway."""

from __future__ import annotations

import pytest
import trio

from tests.support.gateway_config import STATIC_ROOT
from tests.support.in_process import GatewayFactory, Running
from tests.support.raw_http import Response, raw_connection, request
from tests.support.timeouts import TIMEOUT

INDEX = (STATIC_ROOT / "index.html").read_bytes()
SHORT_TIMEOUTS: dict[str, object] = {"http.keepalive_timeout": 0.5, "http.head_timeout": 0.5}


async def get(gw: Running, data: bytes, *, head_request: bool = False) -> Response:
    with trio.fail_after(TIMEOUT):
        async with raw_connection(gw) as client:
            await client.send(data)
            return await client.read_response(head_request=head_request)


async def test_healthz_and_readyz(gateway: Running) -> None:
    for path in ("/healthz", "/readyz"):
        response = await get(gateway, request("GET", path))
        assert (response.status, response.body) == (200, b"ok\n")
        assert response.header("cache-control") == "no-store"
        assert response.header("content-type") == "text/plain; charset=utf-8"


async def test_index_is_served_byte_identical(gateway: Running) -> None:
    response = await get(gateway, request("GET", "/"))
    assert response.status == 200
    assert response.body == INDEX
    assert response.header("content-type") == "text/html; charset=utf-8"
    assert response.header("content-length") == str(len(INDEX))
    assert response.header("x-content-type-options") == "nosniff"
    etag = response.header("etag")
    assert etag is not None
    assert etag.startswith('W/"')
    same = await get(gateway, request("GET", "/index.html"))
    assert (same.body, same.header("etag")) == (INDEX, etag)


async def test_other_static_types(gateway: Running) -> None:
    for name, content_type in (
        ("style.css", "text/css; charset=utf-8"),
        ("app.js", "text/javascript; charset=utf-8"),
    ):
        response = await get(gateway, request("GET", f"/{name}"))
        assert response.status == 200
        assert response.header("content-type") == content_type
        assert response.body == (STATIC_ROOT / name).read_bytes()


async def test_head_has_length_and_no_body(gateway: Running) -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_connection(gateway) as client:
            # HEAD then another request in one write: if the HEAD response carried a body,
            # the next bytes would not start with the second status line.
            await client.send(request("HEAD", "/") + request("GET", "/healthz"))
            head = await client.read_response(head_request=True)
            assert head.status == 200
            assert head.header("content-length") == str(len(INDEX))
            assert head.header("content-type") == "text/html; charset=utf-8"
            assert client.buffer.startswith(b"HTTP/1.1 200 ") or client.buffer == b""
            second = await client.read_response()
            assert (second.status, second.body) == (200, b"ok\n")


async def test_keep_alive_serves_several_requests_on_one_connection(gateway: Running) -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_connection(gateway) as client:
            await client.send(request("GET", "/healthz"))
            first = await client.read_response()
            assert (first.status, first.body) == (200, b"ok\n")
            assert first.header("connection") is None  # HTTP/1.1: persistent by default
            await client.send(request("GET", "/"))
            second = await client.read_response()
            assert (second.status, second.body) == (200, INDEX)
            # Pipelined: both answered, in order.
            await client.send(request("GET", "/nope") + request("GET", "/readyz"))
            assert (await client.read_response()).status == 404
            assert (await client.read_response()).body == b"ok\n"
            await client.send(request("GET", "/healthz", [("Connection", "close")]))
            last = await client.read_response()
            assert last.status == 200
            assert await client.read_until_eof() == b""


async def test_unknown_path_is_404(gateway: Running) -> None:
    response = await get(gateway, request("GET", "/no/such/page.html"))
    assert response.status == 404
    assert response.body == b"not found\n"


@pytest.mark.parametrize(
    "target",
    [
        "/../pyproject.toml",
        "/%2e%2e/pyproject.toml",
        "/%2E%2E/pyproject.toml",
        "/..%2fpyproject.toml",
        "/..%2Fconfig.toml",
        "/../../../../etc/passwd",
        "/.%2e/config.toml",
        "/%252e%252e/pyproject.toml",
        "/..\\pyproject.toml",
        "/%00index.html",
        "/.hidden",
    ],
)
async def test_path_traversal_is_404(gateway: Running, target: str) -> None:
    response = await get(gateway, request("GET", target))
    assert response.status == 404, response
    assert b"[project]" not in response.body
    assert b"[server]" not in response.body


async def test_post_to_static_is_405_with_allow(gateway: Running) -> None:
    response = await get(gateway, request("POST", "/", [("Content-Length", "3")], body=b"a=1"))
    assert response.status == 405
    assert response.header("allow") == "GET, HEAD"


async def test_conditional_get_with_etag_is_304(gateway: Running) -> None:
    first = await get(gateway, request("GET", "/"))
    etag = first.header("etag")
    assert etag is not None
    with trio.fail_after(TIMEOUT):
        async with raw_connection(gateway) as client:
            await client.send(request("GET", "/", [("If-None-Match", etag)]))
            response = await client.read_response()
            assert response.status == 304
            assert response.header("etag") == etag
            assert response.header("content-type") is None
            # No body: the next response follows immediately.
            await client.send(request("GET", "/", [("If-None-Match", '"other"')]))
            full = await client.read_response()
            assert (full.status, full.body) == (200, INDEX)


async def test_idle_keep_alive_connection_is_closed(start_gateway: GatewayFactory) -> None:
    async with start_gateway(SHORT_TIMEOUTS) as gw:
        with trio.fail_after(TIMEOUT):
            async with raw_connection(gw) as client:
                await client.send(request("GET", "/healthz"))
                assert (await client.read_response()).status == 200
                answered = trio.current_time()
                assert await client.read_until_eof() == b""  # closed without a response
                idle = trio.current_time() - answered
        assert 0.3 <= idle < 3.0, idle


async def test_incomplete_head_gets_408(start_gateway: GatewayFactory) -> None:
    async with start_gateway(SHORT_TIMEOUTS) as gw:
        with trio.fail_after(TIMEOUT):
            async with raw_connection(gw) as client:
                started = trio.current_time()
                await client.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1")
                response = await client.read_response()
                waited = trio.current_time() - started
                assert response.status == 408
                assert response.header("connection") == "close"
                assert await client.read_until_eof() == b""
        assert 0.3 <= waited < 3.0, waited


async def test_silent_connection_is_closed_without_response(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(SHORT_TIMEOUTS) as gw:
        with trio.fail_after(TIMEOUT):
            async with raw_connection(gw) as client:
                assert await client.read_until_eof() == b""


@pytest.mark.parametrize(
    "data",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
    ],
)
async def test_malformed_request_is_400(gateway: Running, data: bytes) -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_connection(gateway) as client:
            await client.send(data)
            response = await client.read_response()
            assert response.status == 400
            assert response.header("connection") == "close"
            assert await client.read_until_eof() == b""


async def test_too_large_head_is_431(gateway: Running) -> None:
    # An unfinished head past h11's 16 KiB bound (sent in one write, so the server has read
    # all of it and closes with FIN, not RST).
    data = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20_000
    with trio.fail_after(TIMEOUT):
        async with raw_connection(gateway) as client:
            await client.send(data)
            response = await client.read_response()
            assert (response.status, response.reason) == (431, "Request Header Fields Too Large")
            assert response.header("connection") == "close"

"""The front door's own answers (health, refusals, static files), written in one write with a
head built by the gateway since issue 14: keep-alive decided as h11 would, the request body
drained before the next request, the last request of a connection answered with a close."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import trio

from tests.support.in_process import GatewayFactory, Running
from tests.support.raw_http import Response, raw_connection, request
from tests.support.timeouts import TIMEOUT


async def test_http10_gets_close_and_the_connection_ends(start_gateway: GatewayFactory) -> None:
    async with start_gateway() as gw, raw_connection(gw) as client:
        with trio.fail_after(TIMEOUT):
            await client.send(request("GET", "/healthz", version="HTTP/1.0"))
            response = await client.read_response()
            assert (response.status, response.body) == (200, b"ok\n")
            assert response.header("connection") == "close"
            assert await client.read_until_eof() == b""


async def test_a_body_sent_to_our_own_endpoint_is_drained_before_the_next_request(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway() as gw, raw_connection(gw) as client:
        with trio.fail_after(TIMEOUT):
            body = b"x" * 100_000  # more than one read
            await client.send(
                request("POST", "/healthz", [("Content-Length", str(len(body)))], body=body)
                + request("GET", "/readyz")
            )
            first = await client.read_response()
            second = await client.read_response()
    assert (first.status, first.body) == (200, b"ok\n")
    assert first.header("connection") is None
    assert (second.status, second.body) == (200, b"ok\n")


async def test_the_last_request_of_a_connection_is_answered_with_close(
    start_gateway: GatewayFactory,
) -> None:
    async with (
        start_gateway({"http.max_requests_per_connection": 3}) as gw,
        raw_connection(gw) as client,
    ):
        with trio.fail_after(TIMEOUT):
            await client.send(request("GET", "/healthz") * 4)
            answers = [await client.read_response() for _ in range(3)]
            assert [a.header("connection") for a in answers] == [None, None, "close"]
            assert await client.read_until_eof() == b""  # the fourth is never answered


async def test_large_static_files_are_byte_identical_and_head_has_none(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    # Above the cache's small-file size: sent from disk (os.sendfile on plain TCP).
    data = os.urandom(3 * 1024 * 1024 + 5)
    (tmp_path / "big.bin").write_bytes(data)
    async with start_gateway({"http.static_root": str(tmp_path)}) as gw:
        got = await _fetch(
            gw, request("GET", "/big.bin") + request("HEAD", "/big.bin"), 2, head_last=True
        )
    full, head = got
    assert full.header("content-length") == str(len(data))
    assert hashlib.sha256(full.body).digest() == hashlib.sha256(data).digest()
    assert head.header("content-length") == str(len(data))
    assert head.body == b""


async def test_a_static_file_and_its_304_from_the_cache(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    (tmp_path / "app.js").write_bytes(b"console.log(1)\n")
    async with start_gateway({"http.static_root": str(tmp_path)}) as gw:
        (first,) = await _fetch(gw, request("GET", "/app.js"), 1)
        etag = first.header("etag")
        assert etag is not None
        (again,) = await _fetch(gw, request("GET", "/app.js", [("If-None-Match", etag)]), 1)
    assert (first.status, first.body) == (200, b"console.log(1)\n")
    assert (again.status, again.body) == (304, b"")
    assert again.header("content-length") is None


async def _fetch(
    gw: Running, data: bytes, count: int, *, head_last: bool = False
) -> list[Response]:
    """Send ``data`` on a new connection and read ``count`` responses (the last one to a
    HEAD when ``head_last``)."""
    async with raw_connection(gw) as client:
        with trio.fail_after(TIMEOUT):
            await client.send(data)
            return [
                await client.read_response(head_request=head_last and i == count - 1)
                for i in range(count)
            ]

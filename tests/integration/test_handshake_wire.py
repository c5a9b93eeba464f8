"""The opening handshake on the wire: raw TCP, bytes we write, bytes the gateway answers.

Most requests go to ``/spy/{name}``, a test plugin that records every call the gateway makes
into it, so each refusal also proves that no plugin code ran before it.
"""

from __future__ import annotations

import struct
import time

import pytest
import trio

from gateway.core import cookies
from tests.integration.wire_plugins import Spy
from tests.support.gateway_config import TEST_SECRET
from tests.support.in_process import GatewayFactory, Running, wait_until
from tests.support.raw_http import (
    Response,
    expected_accept,
    new_key,
    raw_connection,
    request,
    upgrade_headers,
)
from tests.support.timeouts import TIMEOUT
from tests.support.ws_frames import CLOSE, TEXT, masked_frame

SPY_PATH = "/spy/x"


def spy(gw: Running) -> Spy:
    instance = gw.app.mounts["spy"].plugin.instance
    assert isinstance(instance, Spy)
    return instance


async def exchange(gw: Running, data: bytes) -> tuple[Response, bytes]:
    """Send ``data``, read one response, then everything until the server closes."""
    with trio.fail_after(TIMEOUT):
        async with raw_connection(gw) as client:
            await client.send(data)
            response = await client.read_response()
            return response, await client.read_until_eof()


async def one_response(gw: Running, data: bytes) -> Response:
    with trio.fail_after(TIMEOUT):
        async with raw_connection(gw) as client:
            await client.send(data)
            return await client.read_response()


# --------------------------------------------------------------------------- unknown paths


async def test_unknown_path_upgrade_is_destroyed_without_a_byte(gateway: Running) -> None:
    data = request("GET", "/nobody/home?x=1", upgrade_headers(new_key()))
    with trio.fail_after(TIMEOUT):
        async with raw_connection(gateway) as client:
            await client.send(data)
            assert await client.read_until_eof() == b""
    assert spy(gateway).calls == []
    # Even a broken handshake to an unknown path is destroyed, not answered (no info leak).
    broken = request("POST", "/nope", [("Upgrade", "websocket")], version="HTTP/1.0")
    with trio.fail_after(TIMEOUT):
        async with raw_connection(gateway) as client:
            await client.send(broken)
            assert await client.read_until_eof() == b""
    await wait_until(lambda: gateway.app.connections == 0, "both connections closed")


async def test_spy_records_a_real_upgrade(gateway: Running) -> None:
    """The control for the "no plugin code ran" assertions: the spy does see a real one."""
    with trio.fail_after(TIMEOUT):
        async with raw_connection(gateway) as client:
            await client.send(request("GET", SPY_PATH, upgrade_headers(new_key())))
            assert (await client.read_response()).status == 101
            await client.send(masked_frame(TEXT, b"ping"))
            assert await client.read_frame() == (TEXT, True, b"ping")
    assert spy(gateway).calls == [f"check {SPY_PATH}", f"handle {SPY_PATH}"]


async def test_unknown_path_upgrade_404_when_configured(start_gateway: GatewayFactory) -> None:
    async with start_gateway({"server.unknown_path": "404"}) as gw:
        response, rest = await exchange(gw, request("GET", "/nobody", upgrade_headers(new_key())))
        assert response.status == 404
        assert response.header("connection") == "close"
        assert b"no WebSocket endpoint" in response.body
        assert rest == b""
        assert spy(gw).calls == []


# --------------------------------------------------------------------------- success


async def test_trailing_frame_in_the_same_segment_is_not_lost(gateway: Running) -> None:
    key = new_key()
    handshake = request("GET", "/echo", upgrade_headers(key))
    with trio.fail_after(TIMEOUT):
        async with raw_connection(gateway) as client:
            # One send_all: the frame sits right behind the head in h11's buffer.
            await client.send(handshake + masked_frame(TEXT, "early bird ✓".encode()))
            response = await client.read_response()
            assert response.status == 101
            assert response.header("sec-websocket-accept") == expected_accept(key)
            assert await client.read_frame() == (TEXT, True, "early bird ✓".encode())
            # A clean close: the server echoes our code and then closes TCP first.
            await client.send(masked_frame(CLOSE, struct.pack("!H", 1000) + b"bye"))
            opcode, fin, payload = await client.read_frame()
            assert (opcode, fin, payload[:2]) == (CLOSE, True, struct.pack("!H", 1000))
            assert await client.read_until_eof() == b""


async def test_same_origin_is_accepted_with_correct_accept_key(gateway: Running) -> None:
    key = new_key()
    authority = f"127.0.0.1:{gateway.port}"
    headers = [*upgrade_headers(key), ("Origin", f"http://{authority}")]
    with trio.fail_after(TIMEOUT):
        async with raw_connection(gateway) as client:
            await client.send(request("GET", SPY_PATH, headers, host=authority))
            response = await client.read_response()
            assert response.status == 101
            assert response.header("upgrade") == "websocket"
            assert response.header("connection") == "Upgrade"
            assert response.header("sec-websocket-accept") == expected_accept(key)
            assert response.header("sec-websocket-protocol") is None
            await client.send(masked_frame(TEXT, b"same origin"))
            assert await client.read_frame() == (TEXT, True, b"same origin")


def test_expected_accept_matches_rfc_6455_example() -> None:
    # RFC 6455 §1.3's worked example, so the test's own computation is checked too.
    assert expected_accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


# --------------------------------------------------------------------------- refusals


def _without(headers: list[tuple[str, str]], name: str) -> list[tuple[str, str]]:
    return [(n, v) for n, v in headers if n.lower() != name.lower()]


BAD_REQUESTS: dict[str, tuple[bytes, int]] = {
    "key not base64": (
        request(
            "GET",
            SPY_PATH,
            [*_without(upgrade_headers("x"), "Sec-WebSocket-Key"), ("Sec-WebSocket-Key", "!" * 24)],
        ),
        400,
    ),
    "key too short": (request("GET", SPY_PATH, upgrade_headers("c2hvcnQ=")), 400),
    # 24 characters of valid base64, but 18 bytes, not 16:
    "key of 18 bytes": (request("GET", SPY_PATH, upgrade_headers("A" * 24)), 400),
    "key missing": (
        request("GET", SPY_PATH, _without(upgrade_headers("x"), "Sec-WebSocket-Key")),
        400,
    ),
    "two keys": (
        request(
            "GET",
            SPY_PATH,
            [*upgrade_headers("dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Key", new_key())],
        ),
        400,
    ),
    "POST": (
        request("POST", SPY_PATH, [*upgrade_headers(new_key()), ("Content-Length", "0")]),
        405,
    ),
    "HTTP/1.0": (request("GET", SPY_PATH, upgrade_headers(new_key()), version="HTTP/1.0"), 400),
    "no Connection: upgrade": (
        request(
            "GET",
            SPY_PATH,
            [*_without(upgrade_headers(new_key()), "Connection"), ("Connection", "keep-alive")],
        ),
        400,
    ),
    "duplicate Origin": (
        request(
            "GET",
            SPY_PATH,
            [
                *upgrade_headers(new_key()),
                ("Origin", "http://127.0.0.1"),
                ("Origin", "http://127.0.0.1"),
            ],
        ),
        400,
    ),
    "cross-origin": (
        request("GET", SPY_PATH, [*upgrade_headers(new_key()), ("Origin", "http://evil.example")]),
        403,
    ),
    "null origin": (
        request("GET", SPY_PATH, [*upgrade_headers(new_key()), ("Origin", "null")]),
        403,
    ),
    "lookalike origin": (
        request(
            "GET", SPY_PATH, [*upgrade_headers(new_key()), ("Origin", "http://127.0.0.1.evil")]
        ),
        403,
    ),
    "handshake with a body": (
        request(
            "GET", SPY_PATH, [*upgrade_headers(new_key()), ("Content-Length", "2")], body=b"hi"
        ),
        400,
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
async def test_bad_handshake_is_refused_before_plugin_code(gateway: Running, case: str) -> None:
    data, status = BAD_REQUESTS[case]
    response = await one_response(gateway, data)
    assert response.status == status, response
    assert response.header("sec-websocket-accept") is None
    assert response.header("content-type") == "text/plain; charset=utf-8"
    assert int(response.header("content-length") or "-1") == len(response.body)
    assert spy(gateway).calls == []


async def test_post_upgrade_says_allow_get(gateway: Running) -> None:
    data = request("POST", SPY_PATH, [*upgrade_headers(new_key()), ("Content-Length", "0")])
    response = await one_response(gateway, data)
    assert response.status == 405
    assert response.header("allow") == "GET"


async def test_version_8_gets_426_naming_version_13(gateway: Running) -> None:
    response = await one_response(
        gateway, request("GET", SPY_PATH, upgrade_headers(new_key(), version="8"))
    )
    assert (response.status, response.reason) == (426, "Upgrade Required")
    assert response.header("sec-websocket-version") == "13"
    assert spy(gateway).calls == []


async def test_http10_upgrade_is_400_and_closed(gateway: Running) -> None:
    data = request("GET", SPY_PATH, upgrade_headers(new_key()), version="HTTP/1.0")
    response, rest = await exchange(gateway, data)
    assert response.status == 400
    assert rest == b""


async def test_scheme_downgrade_origin_is_403(gateway: Running) -> None:
    authority = f"127.0.0.1:{gateway.port}"
    headers = [*upgrade_headers(new_key()), ("Origin", f"https://{authority}")]
    response = await one_response(gateway, request("GET", SPY_PATH, headers, host=authority))
    assert response.status == 403
    assert spy(gateway).calls == []


async def test_plain_get_to_websocket_path_is_426(gateway: Running) -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_connection(gateway) as client:
            await client.send(request("GET", "/echo"))
            response = await client.read_response()
            assert response.status == 426
            assert response.header("upgrade") == "websocket"
            # Not a fatal error: the connection stays usable.
            await client.send(request("GET", "/healthz"))
            assert (await client.read_response()).body == b"ok\n"


@pytest.mark.parametrize("target", ["/", SPY_PATH])
@pytest.mark.parametrize("upgrade", [False, True])
async def test_content_length_with_transfer_encoding_is_400_and_closed(
    gateway: Running, target: str, upgrade: bool
) -> None:
    headers = [("Content-Length", "5"), ("Transfer-Encoding", "chunked")]
    if upgrade:
        headers = [*upgrade_headers(new_key()), *headers]
    smuggled = request("GET", "/healthz")
    data = request("POST", target, headers, body=b"0\r\n\r\n" + smuggled)
    response, rest = await exchange(gateway, data)
    assert response.status == 400
    assert response.header("connection") == "close"
    assert rest == b"", "the smuggled request must not be answered"
    assert spy(gateway).calls == []


# --------------------------------------------------------------------------- auth


AUTH_CHANGES: dict[str, object] = {
    "plugins.private": {"path": "/private", "use": "plugins.echo:echo", "auth": "required"}
}


async def test_auth_required_401_without_cookie_101_with_one(
    start_gateway: GatewayFactory,
) -> None:
    environ = {"GATEWAY_SECRET": TEST_SECRET}
    ring = cookies.KeyRing.parse(TEST_SECRET)
    good = cookies.sign(ring, "alice", time.time())
    forged = cookies.sign(
        cookies.KeyRing.parse("another-secret-0123456789abcdef"), "alice", time.time()
    )
    async with start_gateway(AUTH_CHANGES, environ=environ) as gw:
        response = await one_response(gw, request("GET", "/private", upgrade_headers(new_key())))
        assert (response.status, response.reason) == (401, "Unauthorized")

        for bad in (forged, good + "x", "v1.k0.YWxpY2U.1.AAAA"):
            headers = [*upgrade_headers(new_key()), ("Cookie", f"gateway_session={bad}")]
            response = await one_response(gw, request("GET", "/private", headers))
            assert response.status == 401, bad

        key = new_key()
        headers = [*upgrade_headers(key), ("Cookie", f"theme=dark; gateway_session={good}")]
        with trio.fail_after(TIMEOUT):
            async with raw_connection(gw) as client:
                await client.send(request("GET", "/private", headers))
                response = await client.read_response()
                assert response.status == 101
                assert response.header("sec-websocket-accept") == expected_accept(key)
                await client.send(masked_frame(TEXT, b"authenticated"))
                assert await client.read_frame() == (TEXT, True, b"authenticated")

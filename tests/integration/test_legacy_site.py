"""The legacy example site under a real uvicorn: pages, form, login, whoami, download, its
WebSocket; and its gateway config (examples/legacy/config.toml) is valid."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio_websocket

from gateway.app import build
from gateway.config import load
from tests.support.http_client import fetch
from tests.support.legacy_site import LegacyServer, login, run_legacy_site, ws_client

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "legacy"
FORM = ("Content-Type", "application/x-www-form-urlencoded")


@pytest.fixture(scope="module")
def legacy() -> Iterator[LegacyServer]:
    with run_legacy_site() as server:
        yield server


async def test_home_and_form_pages(legacy: LegacyServer) -> None:
    home = await fetch(legacy.url, "/")
    assert home.status == 200
    assert home.header("content-type") == "text/html; charset=utf-8"
    assert b"not logged in" in home.body
    posted = await fetch(
        legacy.url, "/form", [FORM], method="POST", body=b"value=%3Cb%3Ehi%3C%2Fb%3E"
    )
    assert posted.status == 200
    assert b'<output id="posted">&lt;b&gt;hi&lt;/b&gt;</output>' in posted.body
    assert (await fetch(legacy.url, "/nope")).status == 404
    assert (await fetch(legacy.url, "/form", method="DELETE")).status == 405


async def test_login_whoami_logout(legacy: LegacyServer) -> None:
    anonymous = await fetch(legacy.url, "/api/whoami")
    assert anonymous.status == 401
    assert json.loads(anonymous.body) == {"user": None}
    cookie = await login(legacy.port, "ada")
    me = await fetch(legacy.url, "/api/whoami", [("Cookie", cookie)])
    assert (me.status, me.header("x-user"), json.loads(me.body)) == (200, "ada", {"user": "ada"})
    home = await fetch(legacy.url, "/", [("Cookie", cookie)])
    assert b"logged in as <b>ada</b>" in home.body
    forged = await fetch(legacy.url, "/api/whoami", [("Cookie", "legacy_session=forged")])
    assert forged.status == 401
    out = await fetch(legacy.url, "/logout", [("Cookie", cookie)], method="POST")
    assert out.status == 303
    assert "Max-Age=0" in (out.header("set-cookie") or "")
    assert (await fetch(legacy.url, "/api/whoami", [("Cookie", cookie)])).status == 401


async def test_login_refuses_a_bad_user_name(legacy: LegacyServer) -> None:
    reply = await fetch(legacy.url, "/login", [FORM], method="POST", body=b"user=%0D%0Aevil")
    assert reply.status == 400
    assert reply.header("set-cookie") is None


async def test_download_streams_n_mib_with_content_length(legacy: LegacyServer) -> None:
    reply = await fetch(legacy.url, "/download/big?mb=3")
    assert reply.status == 200
    assert reply.header("content-length") == str(3 * 1024 * 1024)
    assert len(reply.body) == 3 * 1024 * 1024
    assert reply.body[:4] == b"\x00\x01\x02\x03"
    assert (await fetch(legacy.url, "/download/big?mb=-1")).status == 400


async def test_websocket_echo_reports_its_handshake_and_closes_on_request(
    legacy: LegacyServer,
) -> None:
    with trio.fail_after(10):
        async with ws_client(
            legacy.port,
            subprotocols=["other", "legacy.v1"],
            headers=[(b"Cookie", b"legacy_session=x"), (b"Origin", b"http://a.test")],
        ) as ws:
            assert ws.subprotocol == "legacy.v1"
            hello = json.loads(await ws.get_message())
            assert hello["cookie"] == "legacy_session=x"
            assert hello["origin"] == "http://a.test"
            assert hello["subprotocol"] == "legacy.v1"
            await ws.send_message("text")
            assert await ws.get_message() == "text"
            await ws.send_message(b"\x00\xff")
            assert await ws.get_message() == b"\x00\xff"
            await ws.send_message("close 4001 bye")
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await ws.get_message()
            reason = info.value.reason
            assert reason is not None
            assert (reason.code, reason.reason) == (4001, "bye")


def test_the_example_config_is_valid() -> None:
    data = tomllib.loads((EXAMPLE / "config.toml").read_text(encoding="utf-8"))
    if "proxy" not in load._TABLES:
        data.pop("proxy")  # the [proxy] table lands with the HTTP reverse proxy
    config = load.parse(data, source=str(EXAMPLE / "config.toml"), base_dir=EXAMPLE)
    mounts = {m.name: m for m in config.plugins}
    assert mounts["live-echo"].websocket.auth == "upstream"
    assert mounts["live-echo"].websocket.auth_url == "http://127.0.0.1:9000/api/whoami"
    assert mounts["legacy-ws"].options["url"] == "ws://127.0.0.1:9000/ws/echo"
    build(config, environ={})  # plugins load; no cookie secret is needed for upstream auth

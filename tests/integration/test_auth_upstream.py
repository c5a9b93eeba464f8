"""``auth = "upstream"`` against the legacy site's real /api/whoami (uvicorn): log in there,
open a gateway mount with that cookie."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio_websocket

from gateway.api import Session, WebSocketConnection
from gateway.testing import serve
from tests.support.http_client import fetch
from tests.support.legacy_site import LegacyServer, login, run_legacy_site
from tests.support.ports import free_port

WHOAMI = "tests.integration.test_auth_upstream:whoami"


async def whoami(ws: WebSocketConnection, session: Session) -> None:
    """Say who the gateway thinks this is."""
    await ws.send_message(repr(session.principal))


@pytest.fixture(scope="module")
def legacy() -> Iterator[LegacyServer]:
    with run_legacy_site() as server:
        yield server


def upstream_auth(legacy: LegacyServer, **more: Any) -> dict[str, Any]:
    return {"auth": "upstream", "auth_url": f"{legacy.url}/api/whoami", **more}


async def test_a_logged_in_user_is_the_principal(legacy: LegacyServer) -> None:
    cookie = await login(legacy.port, "ada")
    async with (
        serve(WHOAMI, "/live", websocket=upstream_auth(legacy)) as gw,
        gw.connect("/live", headers={"Cookie": cookie}) as ws,
    ):
        assert await ws.get_message() == "'ada'"


async def test_no_or_a_forged_session_is_401(legacy: LegacyServer) -> None:
    async with serve(WHOAMI, "/live", websocket=upstream_auth(legacy)) as gw:
        for headers in ({}, {"Cookie": "legacy_session=forged"}):
            with pytest.raises(trio_websocket.ConnectionRejected) as info:
                async with gw.connect("/live", headers=headers):
                    pass
            assert info.value.status_code == 401


async def test_logout_takes_effect_at_once_without_a_cache(legacy: LegacyServer) -> None:
    cookie = await login(legacy.port, "bob")
    async with serve(WHOAMI, "/live", websocket=upstream_auth(legacy)) as gw:
        async with gw.connect("/live", headers={"Cookie": cookie}) as ws:
            assert await ws.get_message() == "'bob'"
        await fetch(legacy.url, "/logout", [("Cookie", cookie)], method="POST")
        with pytest.raises(trio_websocket.ConnectionRejected) as info:
            async with gw.connect("/live", headers={"Cookie": cookie}):
                pass
        assert info.value.status_code == 401


async def test_with_a_cache_a_logout_waits_for_the_ttl(legacy: LegacyServer) -> None:
    cookie = await login(legacy.port, "cy")
    settings = upstream_auth(legacy, auth_cache_ttl=60.0)
    async with serve(WHOAMI, "/live", websocket=settings) as gw:
        async with gw.connect("/live", headers={"Cookie": cookie}) as ws:
            assert await ws.get_message() == "'cy'"
        await fetch(legacy.url, "/logout", [("Cookie", cookie)], method="POST")
        async with gw.connect("/live", headers={"Cookie": cookie}) as ws:
            assert await ws.get_message() == "'cy'"  # the cached answer, documented


async def test_an_auth_service_that_is_down_is_503(legacy: LegacyServer) -> None:
    settings = {"auth": "upstream", "auth_url": f"http://127.0.0.1:{free_port()}/api/whoami"}
    async with serve(WHOAMI, "/live", websocket=settings) as gw:
        with pytest.raises(trio_websocket.ConnectionRejected) as info:
            async with gw.connect("/live", headers={"Cookie": "legacy_session=x"}):
                pass
        assert info.value.status_code == 503


async def test_an_auth_url_that_is_not_an_auth_endpoint_is_503(legacy: LegacyServer) -> None:
    settings = {"auth": "upstream", "auth_url": f"{legacy.url}/no/such/page"}  # 404
    async with serve(WHOAMI, "/live", websocket=settings) as gw:
        with pytest.raises(trio_websocket.ConnectionRejected) as info:
            async with gw.connect("/live"):
                pass
        assert info.value.status_code == 503

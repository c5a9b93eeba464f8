"""plugins.relay:Relay through gateway.testing, to the legacy site's real /ws/echo (uvicorn)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected

from gateway.api import Accept, Address, UpgradeRequest
from gateway.errors import ConfigError
from gateway.testing import serve
from tests.support.in_process import GatewayFactory, wait_until, ws_client
from tests.support.legacy_site import LegacyServer, run_legacy_site
from tests.support.ports import free_port
from tests.support.timeouts import TIMEOUT
from tests.support.ws_upstream import scripted_upstream

RELAY = "plugins.relay:Relay"


@pytest.fixture(scope="module")
def legacy() -> Iterator[LegacyServer]:
    with run_legacy_site() as server:
        yield server


async def test_messages_are_relayed_both_ways_keeping_their_type(legacy: LegacyServer) -> None:
    async with (
        serve(RELAY, "/relay", options={"url": legacy.ws_url}) as gw,
        gw.connect("/relay") as ws,
    ):
        hello = await ws.receive_json()
        assert hello["hello"] == "legacy"
        assert hello["forwarded_for"] == "127.0.0.1"
        await ws.send_message("text stays text")
        assert await ws.get_message() == "text stays text"
        await ws.send_message(b"\x00binary\xff")
        assert await ws.get_message() == b"\x00binary\xff"
        big = "x" * 200_000
        await ws.send_message(big)
        assert await ws.get_message() == big


async def test_upstream_close_code_reaches_the_client(legacy: LegacyServer) -> None:
    async with (
        serve(RELAY, "/relay", options={"url": legacy.ws_url}) as gw,
        gw.connect("/relay") as ws,
    ):
        await ws.get_message()  # hello
        await ws.send_message("close 4001 upstream says bye")
        closed = await ws.wait_closed()
        assert (closed.code, closed.reason) == (4001, "upstream says bye")


async def test_client_close_code_reaches_the_upstream(legacy: LegacyServer) -> None:
    before = len(legacy.site.ws_closes)
    async with serve(RELAY, "/relay", options={"url": legacy.ws_url}) as gw:
        async with gw.connect("/relay") as ws:
            await ws.get_message()  # hello
            await ws.aclose(4002, "client says bye")
        await wait_until(lambda: len(legacy.site.ws_closes) > before, "the upstream saw a close")
    assert legacy.site.ws_closes[-1] == 4002


@pytest.mark.parametrize("forward", [False, True])
async def test_cookie_and_origin_are_forwarded_only_when_asked(
    legacy: LegacyServer, forward: bool
) -> None:
    options = {"url": legacy.ws_url, "forward_cookies": forward, "forward_origin": forward}
    headers = {"Cookie": "legacy_session=abc; theme=dark", "Origin": "http://gateway.test"}
    async with (
        serve(RELAY, "/relay", options=options) as gw,
        gw.connect("/relay", headers=headers) as ws,
    ):
        hello = await ws.receive_json()
    if forward:
        assert hello["cookie"] == "legacy_session=abc; theme=dark"
        assert hello["origin"] == "http://gateway.test"
    else:
        assert hello["cookie"] is None
        assert hello["origin"] is None


async def test_the_subprotocol_is_the_same_on_both_legs(legacy: LegacyServer) -> None:
    settings = {"subprotocols": ["legacy.v1"]}
    async with serve(RELAY, "/relay", options={"url": legacy.ws_url}, websocket=settings) as gw:
        async with gw.connect("/relay", subprotocols=("other", "legacy.v1")) as ws:
            assert ws.subprotocol == "legacy.v1"
            assert (await ws.receive_json())["subprotocol"] == "legacy.v1"
        async with gw.connect("/relay") as ws:  # offered none: none on both legs
            assert ws.subprotocol is None
            assert (await ws.receive_json())["subprotocol"] is None


async def test_the_upstream_chooses_the_subprotocol_before_the_101(legacy: LegacyServer) -> None:
    # No subprotocols key on the mount: the client's whole offer goes upstream, and the 101
    # carries what the upstream chose.
    async with (
        serve(RELAY, "/relay", options={"url": legacy.ws_url}) as gw,
        gw.connect("/relay", subprotocols=("x.v9", "legacy.v1")) as ws,
    ):
        assert ws.subprotocol == "legacy.v1"
        hello = await ws.receive_json()
        assert hello["subprotocol"] == "legacy.v1"
        assert hello["forwarded_for"] == "127.0.0.1"
        text = "one upstream connection, negotiated and then relayed"
        await ws.send_message(text)
        assert await ws.get_message() == text


async def test_an_upstream_that_accepts_none_of_the_offer_gives_the_client_none(
    legacy: LegacyServer,
) -> None:
    settings = {"subprotocols": ["chat.v2"]}
    async with (
        serve(RELAY, "/relay", options={"url": legacy.ws_url}, websocket=settings) as gw,
        gw.connect("/relay", subprotocols=("chat.v2",)) as ws,
    ):
        # The gateway alone would have answered chat.v2; the upstream speaks none of it, so
        # neither leg has a subprotocol (both legs always agree) and the session works.
        assert ws.subprotocol is None
        assert (await ws.receive_json())["subprotocol"] is None
        await ws.send_message("still relayed")
        assert await ws.get_message() == "still relayed"


@pytest.mark.parametrize("where", ["unreachable", "refused"])
async def test_an_upstream_failing_the_negotiation_refuses_the_handshake_502(
    legacy: LegacyServer, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = {
        "unreachable": f"ws://127.0.0.1:{free_port()}/ws/echo",
        "refused": f"ws://127.0.0.1:{legacy.port}/ws/nope",
    }[where]
    caplog.set_level(logging.WARNING)
    async with serve(RELAY, "/relay", options={"url": url}) as gw:
        with pytest.raises(ConnectionRejected) as rejected:
            async with gw.connect("/relay", subprotocols=("legacy.v1",)):
                pass
    assert rejected.value.status_code == 502  # before the 101: an HTTP answer, not a close code
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert url in warnings[0].getMessage()


async def test_a_negotiated_upstream_nobody_claims_is_closed_going_away(
    legacy: LegacyServer,
) -> None:
    # check() opened the upstream, but the handshake never became a session (here: the check
    # is called alone, as when the client leaves before the 101): closed after
    # handshake_timeout with 1001.
    settings = {"handshake_timeout": 0.3}
    async with serve(RELAY, "/relay", options={"url": legacy.ws_url}, websocket=settings) as gw:
        relay = gw.plugin()
        before = len(legacy.site.ws_closes)
        request = UpgradeRequest(
            id="0123456789ab",
            mount=gw.mount(),
            path="/relay",
            params={},
            query="",
            headers=(("host", "gateway.test"),),
            origin=None,
            remote=Address("127.0.0.1", 40000),
            subprotocols=("legacy.v1",),
        )
        verdict = await relay.check(request)
        assert verdict == Accept(subprotocol="legacy.v1")
        assert "0123456789ab" in relay._claims
        await wait_until(lambda: len(legacy.site.ws_closes) > before, "the upstream was closed")
        assert legacy.site.ws_closes[-1] == 1001
        assert relay._claims == {}


@pytest.mark.parametrize("where", ["unreachable", "refused"])
async def test_a_failing_upstream_closes_the_client_1011(legacy: LegacyServer, where: str) -> None:
    url = {
        "unreachable": f"ws://127.0.0.1:{free_port()}/ws/echo",
        "refused": f"ws://127.0.0.1:{legacy.port}/ws/nope",  # the site refuses the handshake
    }[where]
    async with serve(RELAY, "/relay", options={"url": url}) as gw, gw.connect("/relay") as ws:
        closed = await ws.wait_closed()
    assert (closed.code, closed.reason) == (1011, "bad gateway")


async def test_a_silent_upstream_closes_the_client_1011_after_connect_timeout() -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, _silent, 0)
        port = listeners[0].socket.getsockname()[1]
        options: dict[str, Any] = {"url": f"ws://127.0.0.1:{port}/", "connect_timeout": 0.2}
        async with serve(RELAY, "/relay", options=options) as gw, gw.connect("/relay") as ws:
            closed = await ws.wait_closed()
        assert (closed.code, closed.reason) == (1011, "bad gateway")
        nursery.cancel_scope.cancel()


async def _silent(stream: trio.SocketStream) -> None:
    await trio.sleep_forever()


@pytest.mark.parametrize("url", ["http://127.0.0.1/ws", "ws://", "ws://host:99999/"])
async def test_the_url_option_is_checked_with_its_key_path(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        async with serve(RELAY, "/relay", options={"url": url}):
            pass
    assert info.value.path == "plugins.test.options.url"


async def test_the_url_option_is_required() -> None:
    with pytest.raises(ConfigError) as info:
        async with serve(RELAY, "/relay"):
            pass
    assert info.value.path == "plugins.test.options.url"


# -- upstream faults (issue 9, item 7): never blamed on the client ----------------------------

FAULTS = [
    "opcode",
    "utf8",
    "masked",
    "oversized",
    "close-1002",
    "bad-accept",
    "no-upgrade",
    "not-http",
]


def relay_mount(url: str, **websocket: object) -> dict[str, object]:
    """``start_gateway`` changes adding a relay mount on ``/up`` to ``url``."""
    table: dict[str, object] = {"path": "/up", "use": RELAY, "options": {"url": url}}
    table.update(websocket)
    return {"plugins.up": table}


def gateway_records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("gateway") and r.levelno >= level]


@pytest.mark.parametrize("mode", FAULTS)
async def test_an_upstream_fault_closes_the_client_bad_gateway_with_one_warning(
    start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    caplog.set_level(logging.INFO)
    async with (
        scripted_upstream(mode, big=2000) as upstream,
        start_gateway(relay_mount(upstream.url, max_message_size=1000)) as gw,
    ):
        async with ws_client(gw, "/up") as ws:
            with trio.fail_after(TIMEOUT), pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
        await wait_until(lambda: len(gw.app.mounts["up"].mount) == 0, "the session ended")
    closed = info.value.reason
    assert closed is not None
    assert (closed.code, closed.reason) == (1011, "bad gateway")
    assert not gateway_records(caplog, logging.ERROR), "an upstream fault is not our crash"
    warnings = gateway_records(caplog, logging.WARNING)
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    line = warnings[0].getMessage()
    assert upstream.url in line
    assert "\n" not in line and warnings[0].exc_info is None  # one line, no traceback


async def test_upstream_fault_warnings_are_rate_limited(
    start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    codes: list[int | None] = []
    async with (
        scripted_upstream("opcode") as upstream,
        start_gateway(relay_mount(upstream.url)) as gw,
    ):
        for _ in range(5):
            async with ws_client(gw, "/up") as ws:
                with trio.fail_after(TIMEOUT), pytest.raises(ConnectionClosed) as info:
                    await ws.get_message()
            codes.append(info.value.reason.code if info.value.reason else None)
        connections = upstream.connections
    assert codes == [1011] * 5
    assert connections == 5
    warnings = [r.getMessage() for r in gateway_records(caplog, logging.WARNING)]
    assert len(warnings) == 1, warnings

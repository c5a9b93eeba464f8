"""The handler contract and the admission steps, end to end through ``gateway.testing``.

How a handler ends maps to the close code the client sees (:mod:`gateway.api`); the
handshake runs Origin, authentication and the plugin's veto before any handler code; a
mount's client set and broadcast see exactly its open connections.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionRejected

from gateway.errors import ConfigError
from gateway.testing import serve
from tests.fixture_plugins import Gatekeeper, Recorder
from tests.support.in_memory_clients import refused, wait_until

if TYPE_CHECKING:
    # Not imported at run time: pytest would try to collect the class (it lacks __test__).
    from gateway.testing import TestClient

FIX = "tests.fixture_plugins"


async def info(ws: TestClient) -> dict[str, Any]:
    """The JSON object :func:`tests.fixture_plugins.session_info` sends first."""
    data = await ws.receive_json()
    assert isinstance(data, dict)
    return data


# -- how a handler ends ------------------------------------------------------------------------


async def test_returning_closes_with_1000() -> None:
    async with serve(f"{FIX}:returns") as gw, gw.connect("/test") as ws:
        closed = await ws.wait_closed()
        assert closed.code == 1000
        assert not closed.reason


async def test_close_session_sets_code_and_reason() -> None:
    async with serve(f"{FIX}:close_4001") as gw, gw.connect("/test") as ws:
        closed = await ws.wait_closed()
        assert (closed.code, closed.reason) == (4001, "nope")


async def test_close_session_inside_a_nursery_still_sets_the_code(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    async with serve(f"{FIX}:close_in_nursery") as gw, gw.connect("/test") as ws:
        closed = await ws.wait_closed()
        assert (closed.code, closed.reason) == (4001, "nope")
    # An expected ending, not a failure: nothing is logged as an error.
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_handler_exception_closes_with_1011_logs_session_id_and_spares_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    async with (
        serve(f"{FIX}:flaky") as gw,
        gw.connect("/test") as victim,
        gw.connect("/test") as bystander,
    ):
        victim_id = await victim.get_message()
        bystander_id = await bystander.get_message()
        assert isinstance(victim_id, str)
        assert isinstance(bystander_id, str)
        assert re.fullmatch(r"[0-9a-f]{12}", victim_id)
        assert victim_id != bystander_id

        await victim.send_message("boom")
        closed = await victim.wait_closed()
        assert (closed.code, closed.reason) == (1011, "internal error")

        # The other session on the same mount is untouched.
        await bystander.send_message("still there?")
        assert await bystander.get_message() == "still there?"
        assert len(gw.mount().clients) == 1

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    record = errors[0]
    assert record.name == "gateway.session"
    assert record.getMessage() == "handler failed; closing with 1011"
    # the session's fields (the text format writes them as a "[test <id>]" prefix)
    assert (getattr(record, "mount", None), getattr(record, "session", None)) == (
        "test",
        victim_id,
    )
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ValueError)
    assert str(record.exc_info[1]) == "boom"
    assert "ValueError: boom" in caplog.text
    assert bystander_id not in record.getMessage()


async def test_peer_closing_ends_the_handler_normally() -> None:
    async with serve(f"{FIX}:Recorder") as gw:
        recorder = gw.plugin()
        assert isinstance(recorder, Recorder)
        async with gw.connect("/test") as ws:
            await ws.send_message("x")
            assert await ws.get_message() == "x"
            await ws.aclose(1000, "bye")
        with trio.fail_after(5):
            await recorder.ended.wait()
        assert len(recorder.endings) == 1
        reason = recorder.endings[0]
        assert reason is not None
        assert (reason.code, reason.reason) == (1000, "bye")
        await wait_until(lambda: len(gw.mount().clients) == 0)


# -- the plugin's veto -------------------------------------------------------------------------


async def test_check_reject_refuses_before_any_handler_runs() -> None:
    async with serve(f"{FIX}:Gatekeeper", options={"reject_status": 403}) as gw:
        gate = gw.plugin()
        assert isinstance(gate, Gatekeeper)
        rejection = await refused(gw, "/test?who=me")
        assert rejection.status_code == 403
        assert rejection.body == b"go away\n"
        assert len(gate.checked) == 1
        assert gate.checked[0].query == "who=me"
        assert gate.handled == 0
        assert len(gw.mount().clients) == 0


@pytest.mark.parametrize(
    ("plugin", "websocket", "options", "status"),
    [
        ("session_info", {"auth": "required"}, {}, 401),  # authentication's refusal
        ("Gatekeeper", {}, {"reject_status": 403}, 403),  # the plugin's
    ],
)
async def test_a_refused_handshake_says_the_connection_closes(
    plugin: str, websocket: dict[str, str], options: dict[str, int], status: int
) -> None:
    """The seam ends the connection after any refusal, so the answer says so (RFC 9112
    §9.6), even when the Reject itself would allow another request."""
    async with serve(f"{FIX}:{plugin}", websocket=websocket, options=options) as gw:
        rejection = await refused(gw, "/test")
        assert rejection.status_code == status
        assert (b"connection", b"close") in rejection.headers


async def test_connect_raises_connection_rejected_itself() -> None:
    async with serve(f"{FIX}:Gatekeeper", options={"reject_status": 403}) as gw:
        with pytest.raises(ConnectionRejected) as caught:
            async with gw.connect("/test"):
                pass
        assert caught.value.status_code == 403


async def test_check_reject_with_another_status() -> None:
    async with serve(f"{FIX}:Gatekeeper", options={"reject_status": 429}) as gw:
        rejection = await refused(gw, "/test")
        assert rejection.status_code == 429
        assert gw.plugin().handled == 0


async def test_check_accept_adds_headers_to_the_101() -> None:
    options = {"set_cookie": "a=b"}
    async with serve(f"{FIX}:Gatekeeper", options=options) as gw, gw.connect("/test") as ws:
        assert await ws.get_message() == "welcome"
        # trio-websocket's client keeps the 101's non-handshake headers.
        assert (b"set-cookie", b"a=b") in ws.ws.handshake_headers
        assert gw.plugin().handled == 1


@pytest.mark.parametrize("value", ["a=b\r\nX-Smuggled: 1", "caf\u00e9\u2603=1"])
async def test_check_accept_with_an_unsendable_header_is_500_and_logged(
    value: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A header that could split the 101 (CR LF) or cannot be encoded is a plugin bug: the
    handshake is refused with 500, the error logged, no handler runs, no place is kept."""
    async with serve(f"{FIX}:Gatekeeper", options={"set_cookie": value}) as gw:
        rejection = await refused(gw, "/test")
        assert rejection.status_code == 500
        assert rejection.body is not None and b"X-Smuggled" not in rejection.body
        assert gw.plugin().handled == 0
        mount = gw.mount()
        assert (len(mount.clients), mount.reserved, mount.handshakes[500]) == (0, 0, 1)
    assert any("unsendable header" in r.getMessage() for r in caplog.records)


async def test_check_none_adds_no_headers() -> None:
    async with serve(f"{FIX}:Gatekeeper") as gw, gw.connect("/test") as ws:
        assert await ws.get_message() == "welcome"
        names = {name for name, _ in ws.ws.handshake_headers}
        assert b"set-cookie" not in names


# -- authentication ----------------------------------------------------------------------------


async def test_auth_required_without_cookie_is_401() -> None:
    async with serve(f"{FIX}:session_info", websocket={"auth": "required"}) as gw:
        rejection = await refused(gw, "/test")
        assert rejection.status_code == 401
        assert len(gw.mount().clients) == 0


async def test_auth_required_with_cookie_gives_the_principal() -> None:
    async with (
        serve(f"{FIX}:session_info", websocket={"auth": "required"}) as gw,
        gw.connect("/test", user="alice") as ws,
    ):
        assert (await info(ws))["principal"] == {"user": "alice"}


async def test_auth_required_with_a_forged_cookie_is_401() -> None:
    async with serve(f"{FIX}:session_info", websocket={"auth": "required"}) as gw:
        cookie = "gateway_session=alice.forged"
        rejection = await refused(gw, "/test", headers={"Cookie": cookie})
        assert rejection.status_code == 401


async def test_auth_optional_without_cookie_has_no_principal() -> None:
    async with serve(f"{FIX}:session_info", websocket={"auth": "optional"}) as gw:
        async with gw.connect("/test") as ws:
            assert (await info(ws))["principal"] is None
        async with gw.connect("/test", user="bob") as ws:
            assert (await info(ws))["principal"] == {"user": "bob"}


async def test_auth_none_ignores_cookies() -> None:
    cookie = {"Cookie": "gateway_session=anything"}
    async with serve(f"{FIX}:session_info") as gw, gw.connect("/test", headers=cookie) as ws:
        assert (await info(ws))["principal"] is None


TOKEN_AUTH = {"auth": "required", "authenticator": f"{FIX}:token_auth"}
ASYNC_TOKEN_AUTH = {"auth": "required", "authenticator": f"{FIX}:async_token_auth"}


async def test_custom_authenticator_accepts_a_good_token() -> None:
    async with (
        serve(f"{FIX}:session_info", websocket=TOKEN_AUTH) as gw,
        gw.connect("/test?token=good") as ws,
    ):
        assert (await info(ws))["principal"] == "token-user"


@pytest.mark.parametrize("target", ["/test?token=bad", "/test", "/test?token="])
async def test_custom_authenticator_refuses_a_bad_token(target: str) -> None:
    async with serve(f"{FIX}:session_info", websocket=TOKEN_AUTH) as gw:
        rejection = await refused(gw, target)
        assert rejection.status_code == 401


async def test_custom_authenticator_replaces_the_cookie() -> None:
    async with serve(f"{FIX}:session_info", websocket=TOKEN_AUTH) as gw:
        # With a custom authenticator there is no cookie keyring: a cookie is not a token.
        cookie = {"Cookie": "gateway_session=alice"}
        rejection = await refused(gw, "/test", headers=cookie)
        assert rejection.status_code == 401


async def test_authenticator_returning_reject_answers_with_it() -> None:
    async with serve(f"{FIX}:session_info", websocket=TOKEN_AUTH) as gw:
        rejection = await refused(gw, "/test?token=banned")
        assert rejection.status_code == 403
        assert rejection.body == b"banned\n"


async def test_async_authenticator() -> None:
    async with serve(f"{FIX}:session_info", websocket=ASYNC_TOKEN_AUTH) as gw:
        async with gw.connect("/test?token=good") as ws:
            assert (await info(ws))["principal"] == "async-token-user"
        rejection = await refused(gw, "/test?token=bad")
        assert rejection.status_code == 401


async def test_authentication_runs_before_check() -> None:
    websocket = {"auth": "required"}
    async with serve(f"{FIX}:Gatekeeper", websocket=websocket) as gw:
        gate = gw.plugin()
        rejection = await refused(gw, "/test")
        assert rejection.status_code == 401
        assert gate.checked == []  # refused before the veto was asked
        async with gw.connect("/test", user="carol") as ws:
            assert await ws.get_message() == "welcome"
        assert [r.principal.user for r in gate.checked] == ["carol"]


# -- what the session knows --------------------------------------------------------------------


async def test_route_params_and_query_reach_the_session() -> None:
    async with (
        serve(f"{FIX}:session_info", "/items/{kind}/{item}", name="items") as gw,
        gw.connect("/items/books/caf%C3%A9?x=1&y=two&y=three&empty=") as ws,
    ):
        data = await info(ws)
        assert data["mount"] == "items"
        assert data["path"] == "/items/books/caf%C3%A9"
        assert data["params"] == {"kind": "books", "item": "café"}
        assert data["query"] == "x=1&y=two&y=three&empty="
        assert data["query_params"] == {"x": ["1"], "y": ["two", "three"], "empty": [""]}
        assert re.fullmatch(r"[0-9a-f]{12}", data["id"])
        assert re.fullmatch(r"127\.0\.0\.1:\d+", data["remote"])
        assert data["remote_host"] == "127.0.0.1"
        assert data["remote"] == f"127.0.0.1:{data['remote_port']}"
        assert data["origin"] is None
        assert data["subprotocol"] is None


async def test_the_session_has_the_handshake_headers_as_received() -> None:
    odd = {"X-Odd": "a: b:c, 'quoted'", "X-Empty": ""}  # a colon, an empty value: kept as sent
    async with serve(f"{FIX}:session_info") as gw, gw.connect("/test", headers=odd) as ws:
        data = await info(ws)
    headers = [tuple(pair) for pair in data["headers"]]
    assert ("host", "gateway.test") in headers
    assert ("x-odd", "a: b:c, 'quoted'") in headers
    assert ("x-empty", "") in headers
    assert [n for n, _ in headers].index("host") == 0  # in the order they came
    assert data["raw_headers_as_ws"]  # Session.raw_headers and ws.handshake_headers agree


async def test_each_session_has_its_own_id_and_remote() -> None:
    async with serve(f"{FIX}:session_info") as gw:
        async with gw.connect("/test") as a, gw.connect("/test") as b:
            first, second = await info(a), await info(b)
        assert first["id"] != second["id"]
        assert first["remote"] != second["remote"]


SUBPROTOCOLS = {"subprotocols": ["v2", "v1"]}


async def test_subprotocol_server_preference_wins() -> None:
    async with (
        serve(f"{FIX}:session_info", websocket=SUBPROTOCOLS) as gw,
        gw.connect("/test", subprotocols=("v1", "v2")) as ws,
    ):
        assert ws.subprotocol == "v2"
        data = await info(ws)
        assert data["subprotocol"] == "v2"
        assert data["ws_subprotocol"] == "v2"


async def test_subprotocol_single_overlap() -> None:
    async with (
        serve(f"{FIX}:session_info", websocket=SUBPROTOCOLS) as gw,
        gw.connect("/test", subprotocols=("x", "v1")) as ws,
    ):
        assert ws.subprotocol == "v1"
        assert (await info(ws))["subprotocol"] == "v1"


async def test_subprotocol_no_overlap_gives_none() -> None:
    async with (
        serve(f"{FIX}:session_info", websocket=SUBPROTOCOLS) as gw,
        gw.connect("/test", subprotocols=("x",)) as ws,
    ):
        assert ws.subprotocol is None
        assert (await info(ws))["subprotocol"] is None


# -- an async check() ---------------------------------------------------------------------------


async def test_an_async_check_is_awaited_and_sees_the_sessions_id() -> None:
    async with serve(f"{FIX}:AsyncGatekeeper", websocket=SUBPROTOCOLS) as gw:
        async with gw.connect("/test", subprotocols=("v1",)) as ws:
            data = await ws.receive_json()
        (request,) = gw.plugin().checked
        assert request.id == data["id"]  # the same id before and after the 101
        assert request.subprotocols == ("v1",)
        assert request.subprotocol == "v1"  # the gateway's choice, which the 101 then carried
        assert data["subprotocol"] == "v1"
    async with serve(f"{FIX}:AsyncGatekeeper", options={"verdict": "reject"}) as gw:
        rejection = await refused(gw, "/test")
        assert (rejection.status_code, rejection.body) == (403, b"not after all\n")


@pytest.mark.parametrize(
    ("verdict", "offered", "expected"),
    [
        ("choose:v1", ("v2", "v1"), "v1"),  # the check's choice, not the mount's preference
        ("choose:", ("v2", "v1"), None),  # explicitly none
    ],
)
async def test_a_check_may_choose_the_subprotocol(
    verdict: str, offered: tuple[str, ...], expected: str | None
) -> None:
    options = {"verdict": verdict}
    async with (
        serve(f"{FIX}:AsyncGatekeeper", options=options, websocket=SUBPROTOCOLS) as gw,
        gw.connect("/test", subprotocols=offered) as ws,
    ):
        assert ws.subprotocol == expected
        assert (await ws.receive_json())["subprotocol"] == expected


@pytest.mark.parametrize(
    ("verdict", "logged"),
    [
        ("raise", "check() raised RuntimeError: the check broke; answered 500"),
        ("bogus", "check() returned str, not Reject, Accept or None; answered 500"),
        ("choose:v9", "check() chose subprotocol 'v9', which the client did not offer"),
    ],
)
async def test_a_failing_check_answers_500_and_is_logged(
    verdict: str, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    async with serve(f"{FIX}:AsyncGatekeeper", options={"verdict": verdict}) as gw:
        rejection = await refused(gw, "/test")
        assert rejection.status_code == 500
        assert len(gw.mount().clients) == 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert logged in errors[0].getMessage()
    assert getattr(errors[0], "mount", None) == "test"


# -- declared path parameters ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plugin", "path", "param"),
    [(f"{FIX}:NeedsRoom", "/rooms/{name}", "room"), (f"{FIX}:needs_topic", "/news", "topic")],
)
async def test_a_mount_without_a_declared_path_param_is_a_config_error(
    plugin: str, path: str, param: str
) -> None:
    with pytest.raises(ConfigError) as info:
        async with serve(plugin, path):
            pass
    assert info.value.path == "plugins.test.path"
    assert info.value.problem.startswith(f"{path!r} has no {{{param}}} segment, which {plugin}")


async def test_a_mount_with_its_declared_path_params_serves() -> None:
    async with serve(f"{FIX}:NeedsRoom", "/rooms/{room}") as gw, gw.connect("/rooms/a") as ws:
        assert await ws.get_message() == "a"
    async with serve(f"{FIX}:needs_topic", "/news/{topic}") as gw, gw.connect("/news/b") as ws:
        assert await ws.get_message() == "b"


# -- Origin ------------------------------------------------------------------------------------


async def test_same_origin_by_default() -> None:
    async with serve(f"{FIX}:session_info") as gw:
        async with gw.connect("/test", headers={"Origin": "http://gateway.test"}) as ws:
            assert (await info(ws))["origin"] == "http://gateway.test"
        for bad in ("http://evil.test", "https://gateway.test", "null"):
            rejection = await refused(gw, "/test", headers={"Origin": bad})
            assert rejection.status_code == 403, bad


async def test_origin_allowlist_is_exact() -> None:
    websocket = {"origins": ["https://app.example"]}
    async with serve(f"{FIX}:session_info", websocket=websocket) as gw:
        async with gw.connect("/test", headers={"Origin": "https://app.example"}) as ws:
            assert (await info(ws))["origin"] == "https://app.example"
        for bad in ("https://app.example.evil", "http://app.example", "http://gateway.test"):
            rejection = await refused(gw, "/test", headers={"Origin": bad})
            assert rejection.status_code == 403, bad
        # No Origin at all: a non-browser client, allowed unless require_origin.
        async with gw.connect("/test") as ws:
            assert (await info(ws))["origin"] is None


async def test_require_origin_refuses_a_missing_origin() -> None:
    async with serve(f"{FIX}:session_info", websocket={"require_origin": True}) as gw:
        rejection = await refused(gw, "/test")
        assert rejection.status_code == 403
        async with gw.connect("/test", headers={"Origin": "http://gateway.test"}) as ws:
            assert (await info(ws))["origin"] == "http://gateway.test"


async def test_origin_is_checked_before_the_plugin_sees_the_request() -> None:
    async with serve(f"{FIX}:Gatekeeper") as gw:
        rejection = await refused(gw, "/test", headers={"Origin": "http://evil.test"})
        assert rejection.status_code == 403
        assert gw.plugin().checked == []


# -- the mount: client set and broadcast -------------------------------------------------------


async def test_mount_clients_counts_open_connections() -> None:
    async with serve(f"{FIX}:Recorder") as gw:
        mount = gw.mount()
        assert len(mount.clients) == 0
        async with gw.connect("/test") as a:
            await a.send_message("a")
            assert await a.get_message() == "a"  # a's handler runs: it is registered
            assert len(mount.clients) == 1
            async with gw.connect("/test") as b:
                await b.send_message("b")
                assert await b.get_message() == "b"
                assert len(mount.clients) == 2
                assert len(mount) == 2
            await wait_until(lambda: len(mount.clients) == 1)
            (left,) = mount.clients
            assert left.closed is None  # the one still open is a's
        await wait_until(lambda: len(mount.clients) == 0)


async def test_mount_broadcast_reaches_every_client_and_counts_them() -> None:
    async with (
        serve(f"{FIX}:Recorder") as gw,
        gw.connect("/test?n=1") as one,
        gw.connect("/test?n=2") as two,
        gw.connect("/test?n=3") as three,
    ):
        clients = (one, two, three)
        for i, ws in enumerate(clients):
            await ws.send_message(f"ready {i}")
            assert await ws.get_message() == f"ready {i}"
        mount = gw.mount()
        assert mount.broadcast("to all") == 3
        assert mount.broadcast(b"\x00bytes") == 3
        for ws in clients:
            assert await ws.get_message() == "to all"
            assert await ws.get_message() == b"\x00bytes"

        # exclude= skips one connection (picked by its request target).
        first = next(c for c in mount.clients if c.path == "/test?n=1")
        assert mount.broadcast("not to one", exclude=first) == 2
        assert mount.broadcast("to all again") == 3
        assert await one.get_message() == "to all again"
        for ws in (two, three):
            assert await ws.get_message() == "not to one"
            assert await ws.get_message() == "to all again"


async def test_broadcast_only_reaches_its_own_mount() -> None:
    other = {"plugins": {"other": {"path": "/other", "use": f"{FIX}:Recorder"}}}
    async with (
        serve(f"{FIX}:Recorder", config=other) as gw,
        gw.connect("/test") as mine,
        gw.connect("/other") as theirs,
    ):
        for ws in (mine, theirs):
            await ws.send_message("hi")
            assert await ws.get_message() == "hi"
        assert gw.mount("test").broadcast("mount test only") == 1
        assert gw.mount("other").broadcast("mount other only") == 1
        assert await mine.get_message() == "mount test only"
        assert await theirs.get_message() == "mount other only"


async def test_connections_unregister_after_the_handler_fails() -> None:
    async with serve(f"{FIX}:flaky") as gw:
        async with gw.connect("/test") as ws:
            await ws.get_message()
            assert len(gw.mount().clients) == 1
            await ws.send_message("boom")
            assert (await ws.wait_closed()).code == 1011
        await wait_until(lambda: len(gw.mount().clients) == 0)


async def test_handshake_headers_reach_the_check() -> None:
    async with serve(f"{FIX}:Gatekeeper") as gw:
        async with gw.connect("/test", headers={"X-Trace": "abc"}) as ws:
            assert await ws.get_message() == "welcome"
        request = gw.plugin().checked[0]
        assert request.header("X-Trace") == "abc"
        assert request.header("host") == "gateway.test"
        assert request.mount is gw.mount()  # the Mount, as session.mount
        assert request.path == "/test"


async def test_shutdown_closes_open_sessions_with_1001() -> None:
    async with serve(f"{FIX}:Recorder") as gw, gw.connect("/test") as ws:
        await ws.send_message("x")
        assert await ws.get_message() == "x"
        gw.app.start_draining()
        closed = await ws.wait_closed()
        assert (closed.code, closed.reason) == (1001, "server shutting down")
        rejection = await refused(gw, "/test")
        assert rejection.status_code == 503

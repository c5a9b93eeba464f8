"""``plugins.chat``: rooms are groups of one mount; messages fan out to the room only."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any
from urllib.parse import quote

import pytest
import trio
import trio.testing
import trio_websocket
from trio_websocket import ConnectionClosed, Endpoint

from gateway.errors import ConfigError
from gateway.testing import TestGateway, serve
from gateway.upgrade import serve_connection
from tests.support.in_memory_clients import refused, wait_until

CHAT = "plugins.chat:Chat"
PATH = "/chat/{room}"
QUIET = {"announce": False}
GUEST = re.compile(r"guest-[0-9a-f]{4}")


def members(gw: TestGateway, room: str) -> int:
    """How many connections the mount's group ``room`` has (0 if the group does not exist)."""
    group = gw.mount().groups.get(room)
    return 0 if group is None else len(group)


def message(room: str, user: str, text: str) -> dict[str, Any]:
    return {"type": "message", "room": room, "user": user, "text": text}


def notice(kind: str, room: str, user: str, count: int) -> dict[str, Any]:
    fields: dict[str, Any] = {"type": kind, "room": room, "user": user, "members": count}
    if kind == "join":
        fields["max_message_chars"] = 50  # the default: a page sets its input's maxlength
    return fields


# -- fan-out -----------------------------------------------------------------------------------


async def test_a_message_reaches_everyone_in_the_room_and_no_other_room() -> None:
    async with (
        serve(CHAT, PATH, options=QUIET) as gw,
        gw.connect("/chat/red") as alice,
        gw.connect("/chat/red") as bob,
        gw.connect("/chat/blue") as carol,
    ):
        await wait_until(lambda: (members(gw, "red"), members(gw, "blue")) == (2, 1))
        await alice.send_message("hello red")
        got_alice = await alice.receive_json()
        got_bob = await bob.receive_json()
        assert got_alice == got_bob  # the sender gets its own message too
        assert got_alice["type"] == "message"
        assert got_alice["room"] == "red"
        assert got_alice["text"] == "hello red"
        assert GUEST.fullmatch(got_alice["user"])

        # Had "hello red" gone to carol, it would have been queued before this reply.
        await carol.send_message("hello blue")
        blue = await carol.receive_json()
        assert (blue["room"], blue["text"]) == ("blue", "hello blue")

        # ... and had "hello blue" gone to red, it would come before this one.
        await bob.send_message("red again")
        for ws in (alice, bob):
            again = await ws.receive_json()
            assert (again["room"], again["text"]) == ("red", "red again")


async def test_messages_arrive_in_order_for_every_member() -> None:
    texts = [f"line {i}" for i in range(40)]
    async with (
        serve(CHAT, PATH, options=QUIET) as gw,
        gw.connect("/chat/r") as a,
        gw.connect("/chat/r") as b,
        gw.connect("/chat/r") as c,
    ):
        await wait_until(lambda: members(gw, "r") == 3)
        for i, text in enumerate(texts):
            await (a, b, c)[i % 3].send_message(text)
        for ws in (a, b, c):
            assert [(await ws.receive_json())["text"] for _ in texts] == texts


async def test_the_authenticated_user_name_is_shown() -> None:
    websocket = {"auth": "required"}
    async with (
        serve(CHAT, PATH, options=QUIET, websocket=websocket) as gw,
        gw.connect("/chat/lobby", user="alice") as alice,
        gw.connect("/chat/lobby", user="bob") as bob,
    ):
        await wait_until(lambda: members(gw, "lobby") == 2)
        await alice.send_message("hi, I'm alice")
        expected = message("lobby", "alice", "hi, I'm alice")
        assert await alice.receive_json() == expected
        assert await bob.receive_json() == expected
        await bob.send_message("hi alice")
        assert await alice.receive_json() == message("lobby", "bob", "hi alice")


async def test_auth_required_refuses_guests() -> None:
    async with serve(CHAT, PATH, websocket={"auth": "required"}) as gw:
        assert (await refused(gw, "/chat/lobby")).status_code == 401
        assert gw.mount().groups == {}


# -- text limits -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "shown"),
    [
        ("0123456789abcdef", "0123456789"),
        ("ñandú😀üß日本語テキスト", "ñandú😀üß日本"),  # characters, not bytes or code units
        ("😀" * 12, "😀" * 10),
        ("exactly10!", "exactly10!"),
        ("short", "short"),
        ("", ""),
    ],
)
async def test_text_is_cut_at_max_message_chars(sent: str, shown: str) -> None:
    assert len(shown) <= 10
    options = {"max_message_chars": 10, "announce": False}
    async with (
        serve(CHAT, PATH, options=options) as gw,
        gw.connect("/chat/r") as sender,
        gw.connect("/chat/r") as other,
    ):
        await wait_until(lambda: members(gw, "r") == 2)
        await sender.send_message(sent)
        for ws in (sender, other):
            got = await ws.receive_json()
            assert got["text"] == shown
        if shown != sent:  # the sender alone is told, after its message
            dropped = len(sent) - len(shown)
            cut = {"type": "cut", "max_message_chars": 10, "dropped": dropped}
            assert await sender.receive_json() == cut
        await other.send_message("next")  # nothing else came before it
        for ws in (sender, other):
            assert (await ws.receive_json())["text"] == "next"


async def test_binary_messages_get_an_error_reply_to_the_sender_only() -> None:
    async with (
        serve(CHAT, PATH, options=QUIET) as gw,
        gw.connect("/chat/r") as sender,
        gw.connect("/chat/r") as other,
    ):
        await wait_until(lambda: members(gw, "r") == 2)
        await sender.send_message(b"\x00\x01")
        assert await sender.receive_json() == {"type": "error", "text": "text only"}
        # The session goes on, and the other member saw nothing before the next message.
        await sender.send_message("text is fine")
        for ws in (sender, other):
            assert (await ws.receive_json())["text"] == "text is fine"


# -- join / leave notices ----------------------------------------------------------------------


async def test_join_and_leave_notices_carry_member_counts() -> None:
    websocket = {"auth": "required"}
    async with (
        serve(CHAT, PATH, websocket=websocket) as gw,
        gw.connect("/chat/lobby", user="alice") as alice,
    ):
        assert await alice.receive_json() == notice("join", "lobby", "alice", 1)
        async with gw.connect("/chat/lobby", user="bob") as bob:
            assert await bob.receive_json() == notice("join", "lobby", "bob", 2)
            assert await alice.receive_json() == notice("join", "lobby", "bob", 2)
            async with gw.connect("/chat/lobby", user="carol") as carol:
                expected = notice("join", "lobby", "carol", 3)
                for ws in (alice, bob, carol):
                    assert await ws.receive_json() == expected
            assert await alice.receive_json() == notice("leave", "lobby", "carol", 2)
            assert await bob.receive_json() == notice("leave", "lobby", "carol", 2)
        assert await alice.receive_json() == notice("leave", "lobby", "bob", 1)
        # Notices stay in their room.
        async with gw.connect("/chat/elsewhere", user="dave") as dave:
            assert await dave.receive_json() == notice("join", "elsewhere", "dave", 1)
            await alice.send_message("anyone?")
            assert await alice.receive_json() == message("lobby", "alice", "anyone?")


async def test_guest_names_are_consistent_between_notices_and_messages() -> None:
    async with serve(CHAT, PATH) as gw, gw.connect("/chat/r") as guest:
        joined = await guest.receive_json()
        assert joined["type"] == "join"
        assert GUEST.fullmatch(joined["user"])
        await guest.send_message("hi")
        assert await guest.receive_json() == message("r", joined["user"], "hi")


async def test_announce_false_sends_no_notices() -> None:
    async with serve(CHAT, PATH, options=QUIET) as gw, gw.connect("/chat/r") as first:
        async with gw.connect("/chat/r") as second:
            await wait_until(lambda: members(gw, "r") == 2)
            await second.send_message("first words")
            # No join notice for either member came before the message.
            assert (await first.receive_json())["text"] == "first words"
            assert (await second.receive_json())["text"] == "first words"
        await wait_until(lambda: members(gw, "r") == 1)
        await first.send_message("alone now")
        # No leave notice came before this.
        assert (await first.receive_json())["text"] == "alone now"


# -- admission: room size and room name --------------------------------------------------------


async def test_a_full_room_refuses_with_503() -> None:
    options = {"max_members": 2, "announce": False}
    async with (
        serve(CHAT, PATH, options=options) as gw,
        gw.connect("/chat/small"),
        gw.connect("/chat/small") as second,
    ):
        await wait_until(lambda: members(gw, "small") == 2)
        rejection = await refused(gw, "/chat/small")
        assert rejection.status_code == 503
        assert (b"retry-after", b"5") in rejection.headers
        assert members(gw, "small") == 2
        # Another room is not affected.
        async with gw.connect("/chat/other") as other:
            await other.send_message("room for me")
            assert (await other.receive_json())["text"] == "room for me"
        await second.aclose()
        await wait_until(lambda: members(gw, "small") == 1)
        # A place came free.
        async with gw.connect("/chat/small") as third:
            await wait_until(lambda: members(gw, "small") == 2)
            await third.send_message("got in")
            assert (await third.receive_json())["text"] == "got in"


async def test_a_room_name_longer_than_max_room_chars_is_400() -> None:
    options = {"max_room_chars": 8}
    async with serve(CHAT, PATH, options=options) as gw:
        assert (await refused(gw, "/chat/abcdefghi")).status_code == 400
        assert "abcdefghi" not in gw.mount().groups
        async with gw.connect("/chat/abcdefgh") as ws:
            assert (await ws.receive_json())["room"] == "abcdefgh"
        # The limit counts characters of the decoded name: 8 "é" are 16 UTF-8 bytes.
        async with gw.connect("/chat/" + quote("é" * 8)) as ws:
            assert (await ws.receive_json())["room"] == "é" * 8
        assert (await refused(gw, "/chat/" + quote("é" * 9))).status_code == 400


# -- rooms are groups of the mount -------------------------------------------------------------


async def test_rooms_are_groups_that_disappear_when_empty() -> None:
    async with serve(CHAT, PATH, options=QUIET) as gw:
        mount = gw.mount()
        assert mount.groups == {}
        async with gw.connect("/chat/red") as red:
            await wait_until(lambda: "red" in mount.groups)
            async with gw.connect("/chat/blue"), gw.connect("/chat/blue"):
                await wait_until(lambda: members(gw, "blue") == 2)
                assert set(mount.groups) == {"red", "blue"}
                assert members(gw, "red") == 1
                # The group's member is the mount's client: the same connection object.
                (member,) = mount.groups["red"].members
                assert member in mount.clients
                # A broadcast to a group reaches exactly its members.
                assert mount.groups["blue"].broadcast("to blue") == 2
                assert mount.groups["red"].broadcast("to red") == 1
                assert await red.get_message() == "to red"
            await wait_until(lambda: "blue" not in mount.groups)
            assert set(mount.groups) == {"red"}
        await wait_until(lambda: mount.groups == {})
        await wait_until(lambda: len(mount.clients) == 0)  # (the session ends just after)


# -- a slow consumer ---------------------------------------------------------------------------


@asynccontextmanager
async def stalling_client(
    gw: TestGateway, path: str, port: int
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A trio-websocket client whose transport has *no buffer at all*.

    ``gw.connect`` uses ``trio.testing.memory_stream_pair``, whose buffers are unbounded: a
    server write there never blocks, so a client that stops reading never pushes back and a
    slow consumer cannot be shown with it.  Here the server side of the connection is
    served exactly as ``gw.connect`` does it, but over ``lockstep_stream_pair``: every
    ``send_all`` waits until the client has read the bytes.  With ``message_queue_size=1``
    the client's reader takes at most one unread message (plus one 4 KiB read) and then stops
    reading until the test calls ``get_message``, like a peer whose TCP window is full.
    """
    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    connection = partial(
        serve_connection,
        gw.app,
        server_stream,
        remote=Endpoint("127.0.0.1", port, False),
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection)
        with trio.fail_after(10):
            ws = await trio_websocket.wrap_client_stream(
                nursery,
                client_stream,  # type: ignore[arg-type]  # any trio Stream works
                "gateway.test",
                path,
                message_queue_size=1,
            )
        try:
            yield ws
        finally:
            with trio.move_on_after(5) as scope:
                scope.shield = True
                await ws.aclose()
            nursery.cancel_scope.cancel()


def server_side(gw: TestGateway) -> Any:
    """The gateway's connection object for the only client connected so far.  (Not found by
    ``remote``: over a memory stream there is no socket, so a connection has no endpoints.)"""
    (conn,) = gw.mount().clients
    return conn


SLOW_PORT = 50000
BIG_TEXTS = [f"{i:03d} " + "x" * 400 for i in range(60)]  # ~450-byte frames, ~27 KB in all


async def chat_in_lockstep(gw: TestGateway, slow_conn: Any) -> list[int]:
    """Two fast members exchange :data:`BIG_TEXTS`; each must arrive, in order, at both.

    Returns the slow member's queued-byte count after each message (its backlog)."""
    backlog: list[int] = []
    async with gw.connect("/chat/lobby") as sender, gw.connect("/chat/lobby") as reader:
        await wait_until(lambda: members(gw, "lobby") == 3)
        for text in BIG_TEXTS:
            await sender.send_message(text)
            for ws in (sender, reader):
                got = await ws.receive_json()
                assert (got["type"], got["text"]) == ("message", text)
            backlog.append(slow_conn.outbound_bytes)
    return backlog


async def drain(ws: trio_websocket.WebSocketConnection) -> tuple[list[str], int, str | None]:
    """Read every message the stalled client still gets, then how it was closed."""
    texts: list[str] = []
    with trio.fail_after(10):
        while True:
            try:
                raw = await ws.get_message()
            except ConnectionClosed as exc:
                reason = exc.reason
                break
            assert isinstance(raw, str)
            texts.append(parse(raw)["text"])
    assert reason is not None
    return texts, reason.code, reason.reason


def parse(raw: str) -> dict[str, Any]:
    data = json.loads(raw)
    assert isinstance(data, dict)
    return data


async def test_a_slow_consumer_is_closed_with_1013_and_the_room_goes_on(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # autojump_clock: virtual time only moves when every task is idle, so the 1 s grace the
    # gateway gives a stuck write cannot run out while the test is busy (no timing accident).
    caplog.set_level(logging.INFO, logger="gateway")
    options = {"announce": False, "max_message_chars": 1000}
    websocket = {"outbound_queue_bytes": 2048}
    async with (
        serve(CHAT, PATH, options=options, websocket=websocket) as gw,
        stalling_client(gw, "/chat/lobby", SLOW_PORT) as slow,
    ):
        await wait_until(lambda: members(gw, "lobby") == 1)
        slow_conn = server_side(gw)

        await chat_in_lockstep(gw, slow_conn)  # every message reached both fast members

        # The stalled member was closed by its own connection.
        assert slow_conn.closed is not None
        assert (slow_conn.closed.code, slow_conn.closed.reason) == (1013, "slow consumer")
        overflow = [r for r in caplog.records if r.getMessage().startswith("closing slow")]
        assert len(overflow) == 1
        queued = int(re.findall(r"\d+", overflow[0].getMessage())[0])
        assert queued > 2048

        # Reading at last (within the 1 s grace), it gets an in-order prefix of the room's
        # messages, then Close 1013; its reply ends the session and it leaves the room.
        texts, code, reason = await drain(slow)
        assert (code, reason) == (1013, "slow consumer")
        await wait_until(lambda: members(gw, "lobby") == 0)
        # It can hold about three (one queued, one in hand, one in the write that is stuck);
        # the ~five queued behind them were dropped at the overflow, the rest never queued.
        assert 1 <= len(texts) <= 8
        assert texts == BIG_TEXTS[: len(texts)]


async def test_a_stalled_member_under_the_limit_delays_nobody_and_misses_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    # The control for the test above: the same stalled client, the default 1 MiB queue.
    options = {"announce": False, "max_message_chars": 1000}
    async with (
        serve(CHAT, PATH, options=options) as gw,
        stalling_client(gw, "/chat/lobby", SLOW_PORT) as slow,
    ):
        await wait_until(lambda: members(gw, "lobby") == 1)
        slow_conn = server_side(gw)

        backlog = await chat_in_lockstep(gw, slow_conn)

        # Its writes really were stuck: a backlog far over 2048 bytes built up, and the fast
        # members got every message meanwhile.
        assert max(backlog) > 2048 * 4
        assert slow_conn.closed is None
        assert members(gw, "lobby") == 1

        texts: list[str] = []
        with trio.fail_after(10):
            for _ in BIG_TEXTS:
                raw = await slow.get_message()
                assert isinstance(raw, str)
                texts.append(parse(raw)["text"])
        assert texts == BIG_TEXTS
        await wait_until(lambda: slow_conn.outbound_bytes == 0)


HANDSHAKE = (
    b"GET /chat/ghost HTTP/1.1\r\n"
    b"Host: gateway.test\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)


async def test_a_handshake_that_never_completes_leaves_no_group(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with serve(CHAT, PATH) as gw:
        client, server = trio.testing.lockstep_stream_pair()
        connection = partial(
            serve_connection, gw.app, server, remote=Endpoint("127.0.0.1", 50001, False)
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection)
            await client.send_all(HANDSHAKE)  # ... and never read the 101
            await trio.sleep(30)  # past handshake_timeout (10 s): the gateway gave up
            nursery.cancel_scope.cancel()
        assert len(gw.mount().clients) == 0
        assert gw.mount().groups == {}


# -- path parameters -----------------------------------------------------------------------------


async def test_a_json_chat_mount_without_room_is_a_config_error_naming_both() -> None:
    with pytest.raises(ConfigError) as info:
        async with serve(CHAT, "/chat"):
            pass
    assert info.value.path == "plugins.test.path"
    assert "'/chat' has no {room} segment" in info.value.problem
    assert "plugins.chat:Chat" in info.value.problem


async def test_the_text_format_needs_no_room() -> None:
    async with (
        serve(CHAT, "/classic", options={"format": "text"}) as gw,
        gw.connect("/classic") as a,
        gw.connect("/classic") as b,
    ):
        await wait_until(lambda: members(gw, "") == 2)
        await a.send_message("one room")
        assert await b.get_message() == "one room"

"""``plugins.chat`` with ``format = "text"``: the classic relay the javascript.info client expects.

The tutorial's Node server broadcasts ``message.slice(0, 50)`` to every client, itself included,
and nothing else.  Here: messages as received (text as text, binary as binary), cut to
``max_message_chars`` code points (text) or bytes (binary), no notices, no error replies.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.load import load_file
from gateway.errors import ConfigError
from gateway.testing import TestClient, TestGateway, serve
from tests.support.in_memory_clients import refused, wait_until

CHAT = "plugins.chat:Chat"
ONE_ROOM = "/classic/chat"  # the config.toml mount: no {room}, so one room for the mount
TEXT = {"format": "text"}  # announce stays at its default (true): text mode sends no notices
REPO = Path(__file__).resolve().parents[2]


def members(gw: TestGateway, room: str = "") -> int:
    group = gw.mount().groups.get(room)
    return 0 if group is None else len(group)


async def receive_exactly(ws: TestClient, expected: str | bytes) -> None:
    """The next message is ``expected``, of the same type (a str is not bytes, nor JSON)."""
    got = await ws.get_message()
    assert type(got) is type(expected)
    assert got == expected


# -- relay -------------------------------------------------------------------------------------


async def test_messages_reach_everyone_exactly_as_sent_with_no_notices() -> None:
    async with serve(CHAT, ONE_ROOM, options=TEXT) as gw, gw.connect(ONE_ROOM) as alice:
        async with gw.connect(ONE_ROOM) as bob:
            await wait_until(lambda: members(gw) == 2)
            # Had bob's arrival been announced, the notice would come before these.
            for text in ("hello bob", '{"type": "message", "text": "not parsed"}', "<b>x</b>"):
                await alice.send_message(text)
                for ws in (alice, bob):  # the sender gets its own message, as in the tutorial
                    await receive_exactly(ws, text)
            await bob.send_message("hi alice")
            for ws in (alice, bob):
                await receive_exactly(ws, "hi alice")
        await wait_until(lambda: members(gw) == 1)
        # ... and had bob's leaving been announced, before this.
        await alice.send_message("alone now")
        await receive_exactly(alice, "alone now")


async def test_messages_arrive_in_order_for_every_member() -> None:
    texts = [f"line {i}" for i in range(30)]
    async with (
        serve(CHAT, ONE_ROOM, options=TEXT) as gw,
        gw.connect(ONE_ROOM) as a,
        gw.connect(ONE_ROOM) as b,
        gw.connect(ONE_ROOM) as c,
    ):
        await wait_until(lambda: members(gw) == 3)
        for i, text in enumerate(texts):
            await (a, b, c)[i % 3].send_message(text)
        for ws in (a, b, c):
            assert [await ws.get_message() for _ in texts] == texts


# -- the cut -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "shown"),
    [
        ("x" * 60, "x" * 50),  # the tutorial's case
        ("y" * 50, "y" * 50),
        ("short", "short"),
        ("", ""),  # relayed too, as the tutorial's server does
        # Code points, never bytes: 2-, 3- and 4-byte UTF-8 sequences stay whole.
        ("é" * 60, "é" * 50),
        ("日本語" * 20, ("日本語" * 20)[:50]),
        # An emoji is one code point (two UTF-16 code units in JavaScript): 50 of them are
        # kept, and the pair is never split (JavaScript's slice would keep 25 and could cut one).
        ("😀" * 60, "😀" * 50),
        ("a" + "😀" * 60, "a" + "😀" * 49),
    ],
)
async def test_text_is_cut_to_max_message_chars_code_points(sent: str, shown: str) -> None:
    async with (
        serve(CHAT, ONE_ROOM, options={**TEXT, "max_message_chars": 50}) as gw,
        gw.connect(ONE_ROOM) as sender,
        gw.connect(ONE_ROOM) as other,
    ):
        await wait_until(lambda: members(gw) == 2)
        await sender.send_message(sent)
        for ws in (sender, other):
            await receive_exactly(ws, shown)  # a str: the frame was valid UTF-8


@pytest.mark.parametrize(
    ("sent", "shown"),
    [
        (bytes(range(60)), bytes(range(50))),  # bytes, as Node's Buffer.slice(0, 50)
        (b"\xff\xfe\x00", b"\xff\xfe\x00"),  # not UTF-8, and still relayed as is
        ("é".encode() * 30, "é".encode() * 25),  # binary has no characters: cut by byte
        (b"", b""),
    ],
)
async def test_binary_stays_binary_cut_to_max_message_chars_bytes(
    sent: bytes, shown: bytes
) -> None:
    async with (
        serve(CHAT, ONE_ROOM, options=TEXT) as gw,
        gw.connect(ONE_ROOM) as sender,
        gw.connect(ONE_ROOM) as other,
    ):
        await wait_until(lambda: members(gw) == 2)
        await sender.send_message(sent)
        for ws in (sender, other):
            await receive_exactly(ws, shown)  # no "text only" error, no JSON
        await other.send_message("text after binary")
        for ws in (sender, other):
            await receive_exactly(ws, "text after binary")


# -- rooms and admission -----------------------------------------------------------------------


async def test_a_room_parameter_still_makes_separate_rooms() -> None:
    async with (
        serve(CHAT, "/classic/{room}", options=TEXT) as gw,
        gw.connect("/classic/red") as red,
        gw.connect("/classic/blue") as blue,
    ):
        await wait_until(lambda: (members(gw, "red"), members(gw, "blue")) == (1, 1))
        await blue.send_message("for blue")
        await receive_exactly(blue, "for blue")
        await red.send_message("for red")
        await receive_exactly(red, "for red")  # "for blue" would have come first


async def test_a_full_room_refuses_with_503() -> None:
    async with (
        serve(CHAT, ONE_ROOM, options={**TEXT, "max_members": 1}) as gw,
        gw.connect(ONE_ROOM) as first,
    ):
        await wait_until(lambda: members(gw) == 1)
        assert (await refused(gw, ONE_ROOM)).status_code == 503
        await first.send_message("still here")
        await receive_exactly(first, "still here")


async def test_an_unknown_format_names_its_key_path() -> None:
    with pytest.raises(ConfigError) as info:
        async with serve(CHAT, ONE_ROOM, options={"format": "xml"}):
            pass  # pragma: no cover - never reached
    assert "plugins.test.options.format" in str(info.value)
    assert "'json', 'text'" in str(info.value)


# -- config.toml -------------------------------------------------------------------------------


async def test_the_default_configs_classic_mounts() -> None:
    config = load_file(REPO / "config.toml")
    mounts = {m.name: m for m in config.plugins}
    chat, clock = mounts["classic_chat"], mounts["classic_time"]
    assert (chat.path, chat.use) == ("/classic/chat", CHAT)
    assert (clock.path, clock.use, clock.options) == (
        "/classic/time",
        "plugins.clock:Clock",
        {"interval": 5.0},  # the tutorial's 5 seconds
    )
    # Served with config.toml's own options: plain text, 60 characters cut to 50.
    async with (
        serve(CHAT, chat.path, options=chat.options) as gw,
        gw.connect(chat.path) as a,
        gw.connect(chat.path) as b,
    ):
        await wait_until(lambda: members(gw) == 2)
        await a.send_message("z" * 60)
        for ws in (a, b):
            await receive_exactly(ws, "z" * 50)

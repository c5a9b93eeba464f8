"""The broadcast plugin: every message reaches every client of the mount, sender included."""

from __future__ import annotations

from gateway.testing import serve


async def test_every_client_gets_every_message_in_order() -> None:
    async with (
        serve("plugins.broadcast:broadcast", "/broadcast") as gw,
        gw.connect("/broadcast") as a,
        gw.connect("/broadcast") as b,
    ):
        for i in range(20):
            await (a if i % 2 else b).send_message(f"m{i}")
        expected = [f"m{i}" for i in range(20)]
        assert [await a.get_message() for _ in range(20)] == expected
        assert [await b.get_message() for _ in range(20)] == expected


async def test_binary_messages_stay_binary() -> None:
    async with serve("plugins.broadcast:broadcast", "/b") as gw, gw.connect("/b") as a:
        await a.send_message(b"\x00\x01")
        assert await a.get_message() == b"\x00\x01"

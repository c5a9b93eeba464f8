"""``plugins.echo``: every message comes back unchanged, with its type."""

from __future__ import annotations

import trio

from gateway.testing import serve

ECHO = "plugins.echo:echo"
MiB = 1024 * 1024


async def test_text_and_binary_round_trip_with_their_types() -> None:
    async with serve(ECHO, "/echo") as gw, gw.connect("/echo") as ws:
        await ws.send_message("hello")
        reply = await ws.get_message()
        assert reply == "hello"
        assert isinstance(reply, str)

        await ws.send_message(b"\x00\x01\xfe\xff")
        reply = await ws.get_message()
        assert reply == b"\x00\x01\xfe\xff"
        assert isinstance(reply, bytes)

        # Text that looks like bytes stays text, and vice versa.
        await ws.send_message("\x00\x01")
        await ws.send_message(b"hello")
        assert await ws.get_message() == "\x00\x01"
        assert await ws.get_message() == b"hello"


async def test_non_ascii_text() -> None:
    text = "héllo wörld \u2013 日本語 😀"
    async with serve(ECHO, "/echo") as gw, gw.connect("/echo") as ws:
        await ws.send_message(text)
        assert await ws.get_message() == text


async def test_empty_messages() -> None:
    async with serve(ECHO, "/echo") as gw, gw.connect("/echo") as ws:
        await ws.send_message("")
        await ws.send_message(b"")
        first = await ws.get_message()
        second = await ws.get_message()
        assert (first, type(first)) == ("", str)
        assert (second, type(second)) == (b"", bytes)


async def test_a_message_of_exactly_max_message_size_passes() -> None:
    payload = bytes(range(256)) * (MiB // 256)
    assert len(payload) == MiB  # the default max_message_size
    async with serve(ECHO, "/echo") as gw, gw.connect("/echo") as ws:
        await ws.send_message(payload)
        reply = await ws.get_message()
        assert reply == payload
        text = "x" * MiB
        await ws.send_message(text)
        assert await ws.get_message() == text
        # The connection is still usable afterwards.
        await ws.send_message("after")
        assert await ws.get_message() == "after"


async def test_one_byte_over_max_message_size_closes_with_1009() -> None:
    async with serve(ECHO, "/echo") as gw, gw.connect("/echo") as ws:
        await ws.send_message(b"\x00" * (MiB + 1))
        closed = await ws.wait_closed()
        assert closed.code == 1009


async def test_max_message_size_is_a_per_mount_setting() -> None:
    websocket = {"max_message_size": 100}
    async with serve(ECHO, "/echo", websocket=websocket) as gw:
        async with gw.connect("/echo") as ws:
            await ws.send_message("é" * 50)  # 50 characters, 100 UTF-8 bytes: fits
            assert await ws.get_message() == "é" * 50
        async with gw.connect("/echo") as ws:
            await ws.send_message("é" * 50 + "x")  # 101 bytes
            assert (await ws.wait_closed()).code == 1009


async def test_many_messages_come_back_in_order() -> None:
    count = 500
    received: list[str | bytes] = []
    async with serve(ECHO, "/echo") as gw, gw.connect("/echo") as ws:

        async def send_all() -> None:
            for i in range(count):
                await ws.send_message(f"message {i}" if i % 2 else f"message {i}".encode())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_all)
            for _ in range(count):
                received.append(await ws.get_message())
    assert received == [f"message {i}" if i % 2 else f"message {i}".encode() for i in range(count)]


async def test_clients_do_not_see_each_others_echoes() -> None:
    async with serve(ECHO, "/echo") as gw, gw.connect("/echo") as a, gw.connect("/echo") as b:
        await a.send_message("from a")
        await b.send_message("from b")
        assert await a.get_message() == "from a"
        assert await b.get_message() == "from b"
        await b.send_message("b again")
        assert await b.get_message() == "b again"
        await a.send_message("a again")
        assert await a.get_message() == "a again"

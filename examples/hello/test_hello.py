"""The third-party "hello" plugin, tested with gateway.testing (no sockets, no real time)."""

from __future__ import annotations

import trio

from gateway.testing import serve


async def test_greets_by_name_then_closes_after_the_wait(autojump_clock: trio.abc.Clock) -> None:
    async with (
        serve("examples.hello.hello:Hello", "/hello") as gw,
        gw.connect("/hello?name=Ada") as ws,
    ):
        start = trio.current_time()
        assert await ws.get_message() == "Hello, Ada!"
        closed = await ws.wait_closed()
        assert (closed.code, closed.reason) == (1000, "that's all, folks")
        assert trio.current_time() - start >= 5.0


async def test_wait_and_farewell_are_options(autojump_clock: trio.abc.Clock) -> None:
    options = {"wait": 0.5, "farewell": "bye"}
    async with (
        serve("examples.hello.hello:Hello", "/hi", options=options) as gw,
        gw.connect("/hi") as ws,
    ):
        start = trio.current_time()
        assert await ws.get_message() == "Hello, stranger!"
        closed = await ws.wait_closed()
        assert closed.reason == "bye"
        assert 0.5 <= trio.current_time() - start < 5.0

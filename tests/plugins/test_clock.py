"""``plugins.clock``: a hello, then a time message every interval; acks what it receives.

Run under pytest-trio's ``autojump_clock``: virtual time jumps straight to the next tick, so
the spacing of the ticks is measured exactly with :func:`trio.current_time` and no real time
passes.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest
import trio

from gateway.testing import serve

CLOCK = "plugins.clock:Clock"


def check_time_message(message: object) -> None:
    assert isinstance(message, dict)
    assert set(message) == {"type", "now", "epoch"}
    assert message["type"] == "time"
    now = datetime.fromisoformat(message["now"])
    assert now.utcoffset() == timedelta(0)  # ISO 8601 in UTC, with the offset
    assert now.timestamp() == pytest.approx(message["epoch"], abs=1e-3)
    # The payload is wall-clock time even when trio's clock is virtual.
    assert abs(message["epoch"] - time.time()) < 60


async def test_hello_comes_first_with_the_defaults(autojump_clock: trio.abc.Clock) -> None:
    async with serve(CLOCK, "/clock") as gw, gw.connect("/clock") as ws:
        hello = await ws.receive_json()
        assert hello == {"type": "hello", "text": "Hello! This is the clock.", "interval": 1.0}


async def test_greeting_and_interval_are_options(autojump_clock: trio.abc.Clock) -> None:
    options = {"interval": 2.5, "greeting": "tick tock"}
    async with serve(CLOCK, "/clock", options=options) as gw, gw.connect("/clock") as ws:
        assert await ws.receive_json() == {"type": "hello", "text": "tick tock", "interval": 2.5}


@pytest.mark.parametrize("interval", [1.0, 2.5, 0.25])
async def test_time_messages_every_interval(
    autojump_clock: trio.abc.Clock, interval: float
) -> None:
    options = {"interval": interval}
    async with serve(CLOCK, "/clock", options=options) as gw, gw.connect("/clock") as ws:
        assert (await ws.receive_json())["type"] == "hello"
        start = trio.current_time()
        arrivals: list[float] = []
        for _ in range(5):
            check_time_message(await ws.receive_json())
            arrivals.append(trio.current_time() - start)
    # Tick k arrives k intervals after the hello: none early, none skipped, no drift.
    assert arrivals == pytest.approx([interval * k for k in range(1, 6)], abs=1e-6)


async def test_acks_echo_the_text(autojump_clock: trio.abc.Clock) -> None:
    options = {"interval": 5.0}  # below the client's 10 s receive timeout
    async with serve(CLOCK, "/clock", options=options) as gw, gw.connect("/clock") as ws:
        assert (await ws.receive_json())["type"] == "hello"
        start = trio.current_time()
        await ws.send_message("what time is it?")
        assert await ws.receive_json() == {"type": "ack", "received": "what time is it?"}
        await ws.send_message(b"\x00\x01\x02")
        assert await ws.receive_json() == {"type": "ack", "received": "<3 bytes>"}
        await ws.send_message("")
        assert await ws.receive_json() == {"type": "ack", "received": ""}
        assert trio.current_time() - start < 5.0  # acks did not wait for a tick
        # The ticks go on alongside the acks.
        check_time_message(await ws.receive_json())
        assert trio.current_time() - start == pytest.approx(5.0, abs=1e-6)
        await ws.send_message("after the tick")
        assert await ws.receive_json() == {"type": "ack", "received": "after the tick"}


async def test_each_client_has_its_own_ticker(autojump_clock: trio.abc.Clock) -> None:
    options = {"interval": 3.0}
    async with serve(CLOCK, "/clock", options=options) as gw, gw.connect("/clock") as first:
        assert (await first.receive_json())["type"] == "hello"
        start = trio.current_time()
        await trio.sleep(1.0)
        async with gw.connect("/clock") as second:
            assert (await second.receive_json())["type"] == "hello"
            check_time_message(await first.receive_json())
            assert trio.current_time() - start == pytest.approx(3.0, abs=1e-6)
            check_time_message(await second.receive_json())
            assert trio.current_time() - start == pytest.approx(4.0, abs=1e-6)

"""``plugins.multi``: one plugin class mounted twice; each mount is its own endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from gateway.testing import TestGateway, serve
from tests.support.in_memory_clients import wait_until

MULTI = "plugins.multi:Multi"
BAR = {"path": "/bar", "use": MULTI, "options": {"label": "Bar server", "greet": False}}


@asynccontextmanager
async def foo_and_bar() -> AsyncIterator[TestGateway]:
    """One gateway, two mounts of the same class: foo greets, bar does not."""
    async with serve(
        MULTI, "/foo", name="foo", options={"label": "Foo server"}, config={"plugins": {"bar": BAR}}
    ) as gw:
        yield gw


def reply(mount: str, label: str, clients: int, message: str) -> dict[str, Any]:
    return {"type": "reply", "mount": mount, "label": label, "clients": clients, "message": message}


async def test_the_two_mounts_are_distinct_instances() -> None:
    async with foo_and_bar() as gw:
        foo, bar = gw.mount("foo"), gw.mount("bar")
        assert foo is not bar
        foo_plugin, bar_plugin = gw.plugin("foo"), gw.plugin("bar")
        assert foo_plugin is not bar_plugin
        assert foo_plugin.options.label == "Foo server"
        assert bar_plugin.options.label == "Bar server"
        assert (foo_plugin.options.greet, bar_plugin.options.greet) == (True, False)


async def test_replies_carry_the_mount_and_label() -> None:
    async with foo_and_bar() as gw, gw.connect("/foo") as foo, gw.connect("/bar") as bar:
        welcome = await foo.receive_json()
        assert welcome["type"] == "welcome"
        assert (welcome["mount"], welcome["label"], welcome["clients"]) == ("foo", "Foo server", 1)
        assert isinstance(welcome["session"], str)
        assert len(welcome["session"]) == 12

        await foo.send_message("hi foo")
        assert await foo.receive_json() == reply("foo", "Foo server", 1, "hi foo")
        await bar.send_message("hi bar")
        # greet=false: bar's first message is the reply, no welcome before it.
        assert await bar.receive_json() == reply("bar", "Bar server", 1, "hi bar")


async def test_binary_messages_are_described_not_echoed() -> None:
    async with foo_and_bar() as gw, gw.connect("/bar") as bar:
        await bar.send_message(b"12345")
        assert await bar.receive_json() == reply("bar", "Bar server", 1, "<5 bytes>")


async def test_client_counts_are_per_mount() -> None:
    async with (
        foo_and_bar() as gw,
        gw.connect("/foo") as foo1,
        gw.connect("/foo") as foo2,
        gw.connect("/bar") as bar1,
    ):
        # A welcome is sent once the session is registered, so both foo clients are counted.
        assert (await foo1.receive_json())["type"] == "welcome"
        assert (await foo2.receive_json())["clients"] == 2

        for ws in (foo1, foo2):
            await ws.send_message("count?")
            assert await ws.receive_json() == reply("foo", "Foo server", 2, "count?")
        await bar1.send_message("count?")
        assert await bar1.receive_json() == reply("bar", "Bar server", 1, "count?")
        assert (len(gw.mount("foo")), len(gw.mount("bar"))) == (2, 1)


async def test_the_count_drops_after_a_client_leaves() -> None:
    async with foo_and_bar() as gw, gw.connect("/foo") as stays:
        assert (await stays.receive_json())["clients"] == 1
        async with gw.connect("/foo") as leaves:
            assert (await leaves.receive_json())["clients"] == 2
            await stays.send_message("two?")
            assert (await stays.receive_json())["clients"] == 2
        # The client's close returns on the server's Close reply; the server unregisters after.
        await wait_until(lambda: len(gw.mount("foo")) == 1)
        await stays.send_message("one?")
        assert await stays.receive_json() == reply("foo", "Foo server", 1, "one?")


async def test_a_mount_with_no_label_uses_its_name() -> None:
    async with serve(MULTI, "/plain", name="plain") as gw, gw.connect("/plain") as ws:
        welcome = await ws.receive_json()
        assert (welcome["type"], welcome["mount"], welcome["label"]) == (
            "welcome",
            "plain",
            "plain",
        )


async def test_two_gateways_from_config_toml_values() -> None:
    # The same tables config.toml uses for [plugins.foo] and [plugins.bar], one serve() each.
    async with (
        serve(MULTI, "/foo", name="foo", options={"label": "Foo server"}) as gw_foo,
        serve(MULTI, "/bar", name="bar", options={"label": "Bar server", "greet": False}) as gw_bar,
        gw_foo.connect("/foo") as foo,
        gw_bar.connect("/bar") as bar,
    ):
        assert (await foo.receive_json())["label"] == "Foo server"
        await bar.send_message("x")
        assert await bar.receive_json() == reply("bar", "Bar server", 1, "x")

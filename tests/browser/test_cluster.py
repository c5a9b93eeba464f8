"""The chat page in two tabs, each connected to a different gateway process; the processes
share the room through one real redis-server (``[broker]``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import BrowserContext, expect

from tests.support.gateway_config import REPO
from tests.support.gateway_process import GatewayProcess
from tests.support.pages import open_chat, say, unique
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    folder = tmp_path_factory.mktemp("cluster")
    with RedisServer(folder / "redis") as redis:
        config = folder / "cluster.toml"
        config.write_text(
            "[http]\n"
            f"static_root = {json.dumps(str(REPO / 'examples' / 'public'))}\n"
            "[broker]\n"
            f'url = "{redis.url}"\n'
            f'prefix = "browser-{uuid.uuid4().hex[:8]}"\n'
            "[plugins.chat]\n"
            'path = "/chat/{room}"\n'
            'use = "plugins.chat:Chat"\n',
            encoding="utf-8",
        )
        a, b = GatewayProcess.serve(config), GatewayProcess.serve(config)
        try:
            yield a.wait_ready(), b.wait_ready()
        finally:
            a.stop()
            b.stop()


def test_chat_room_across_two_nodes(context: BrowserContext, nodes: tuple[str, str]) -> None:
    node_a, node_b = nodes
    room = unique("cluster")
    a = open_chat(context, node_a, room)
    expect(a.locator("#members")).to_have_text("1")
    b = open_chat(context, node_b, room)
    expect(b.locator("#members")).to_have_text("2")  # counted across both processes
    expect(a.locator("#members")).to_have_text("2")  # b's join crossed over to a

    hello = f"hello from node A {uuid.uuid4().hex[:6]}"
    say(a, hello)
    reply = f"reply from node B {uuid.uuid4().hex[:6]}"
    expect(b.locator("#messages li.msg").filter(has_text=hello)).to_have_count(1)
    say(b, reply)
    for tab in (a, b):  # once each: the sender's own process never delivers twice
        expect(tab.locator("#messages li.msg").filter(has_text=reply)).to_have_count(1)
        expect(tab.locator("#messages li.msg").filter(has_text=hello)).to_have_count(1)

    b.close()
    expect(a.locator("#messages li.notice").filter(has_text="left")).to_have_count(1)
    expect(a.locator("#members")).to_have_text("1")

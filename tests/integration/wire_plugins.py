"""Test-only plugins for the integration tests, mounted by the tests' own configs as
``tests.integration.wire_plugins:NAME`` (importable in-process and, with ``cwd`` at the repo
root, from a gateway subprocess)."""

from __future__ import annotations

import trio

from gateway.api import NoOptions, Plugin, Reject, Session, UpgradeRequest, WebSocketConnection
from gateway.mount import Mount

BOOM = "boom"


async def boom_echo(ws: WebSocketConnection, session: Session) -> None:
    """Echo, except that the message ``"boom"`` makes the handler crash (-> close 1011)."""
    while True:
        message = await ws.get_message()
        if message == BOOM:
            raise RuntimeError("boom requested by the test")
        await ws.send_message(message)


class Spy(Plugin[NoOptions]):
    """Echo that records every call the gateway makes into it, so a test can prove that no
    plugin code ran for a request (e.g. an upgrade destroyed at the front door)."""

    options_type = NoOptions

    def __init__(self, options: NoOptions, mount: Mount) -> None:
        super().__init__(options, mount)
        self.calls: list[str] = []

    def check(self, request: UpgradeRequest) -> Reject | None:
        self.calls.append(f"check {request.path}")
        return None

    async def handle(self, ws: WebSocketConnection, session: Session) -> None:
        self.calls.append(f"handle {session.path}")
        while True:
            await ws.send_message(await ws.get_message())


async def deaf(ws: WebSocketConnection, session: Session) -> None:
    """Never reads: sends ``"tick"`` every 0.1 s (the engine must still answer pings and the
    client's Close, from a reader task of its own)."""
    while True:
        await ws.send_message("tick")
        await trio.sleep(0.1)

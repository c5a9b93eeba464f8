"""Test-only plugins for the limit tests (``tests/integration/test_limits.py``), mounted by the
tests' own configs as ``tests.integration.limit_plugins:NAME``."""

from __future__ import annotations

import trio

from gateway.api import NoOptions, Plugin, Session, WebSocketConnection
from gateway.mount import Mount


class Tap(Plugin[NoOptions]):
    """A handler that reads nothing until the test opens the tap (``opened.set()``).

    Until then the connection's inbound queue fills and the gateway must stop reading from the
    socket.  Afterwards it counts the bytes of every binary message and answers any text
    message with that count, so a test can check that nothing was lost while it waited.
    """

    options_type = NoOptions

    def __init__(self, options: NoOptions, mount: Mount) -> None:
        super().__init__(options, mount)
        self.opened = trio.Event()
        self.parked = 0  # sessions waiting for the tap

    async def handle(self, ws: WebSocketConnection, session: Session) -> None:
        self.parked += 1
        try:
            await self.opened.wait()
        finally:
            self.parked -= 1
        total = 0
        while True:
            message = await ws.get_message()
            if isinstance(message, bytes):
                total += len(message)
            else:
                await ws.send_message(str(total))

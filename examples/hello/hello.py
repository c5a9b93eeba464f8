"""The classic "hello" server as a third-party plugin: greets, waits, closes with 1000.

It lives outside the ``gateway`` package and is mounted purely by config
(``use = "examples.hello.hello:Hello"``); ``test_hello.py`` beside it tests it with
``gateway.testing``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from gateway.api import CloseSession, Plugin, Session, WebSocketConnection


@dataclass(frozen=True)
class HelloOptions:
    wait: float = field(default=5.0, metadata={"min": 0})
    farewell: str = "that's all, folks"


class Hello(Plugin[HelloOptions]):
    options_type = HelloOptions

    async def handle(self, ws: WebSocketConnection, session: Session) -> None:
        who = session.query_params.get("name", ["stranger"])[0]
        await ws.send_message(f"Hello, {who}!")
        await trio.sleep(self.options.wait)
        raise CloseSession(1000, self.options.farewell)

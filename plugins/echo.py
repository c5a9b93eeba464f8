"""``/echo``: sends every message back, text as text and binary as binary."""

from __future__ import annotations

from gateway.api import Session, WebSocketConnection


async def echo(ws: WebSocketConnection, session: Session) -> None:
    while True:
        await ws.send_message(await ws.get_message())
